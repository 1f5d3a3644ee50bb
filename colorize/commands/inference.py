"""``colorize colorize``: colourize image files of any size and mode with a trained model.

The network sees the image's L channel resized to its own resolution; the predicted ab is
upsampled to the original size and joined with the original full-resolution L, so detail is
kept (colours outside the sRGB gamut lose chroma rather than L). Outputs are PNGs with the
input's name and size. A file that cannot be read is reported by name and skipped; the rest
are still processed. In a directory or a glob's matches, files whose suffix is not an image's
(notes, sidecar files) are passed over and counted. An output that would replace one of the
inputs is refused.
"""
import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

from colorize.core.color import join_lab, lab_to_rgb_keeping_l, rgb_to_lab
from colorize.core.images import IMAGE_SUFFIXES, UnreadableImage, is_image_name, read_rgb, rgb_to_uint8
from colorize.errors import ColorizeError
from colorize.io import atomic_path
from colorize.models.saved import load_model
from colorize.run_dir import model_folder


@dataclass
class Report:
    written: List[Path] = field(default_factory=list)
    failed: List[str] = field(default_factory=list)  # one line per file: its name and why
    passed_over: List[Path] = field(default_factory=list)  # found in a directory or glob, not images


@dataclass
class Inputs:
    files: List[Path] = field(default_factory=list)
    passed_over: List[Path] = field(default_factory=list)  # found in a directory or glob, not images
    errors: List[str] = field(default_factory=list)  # one line per input that gives no image file


def expand_inputs(inputs: Iterable[str]) -> Inputs:
    """Files named directly, and the image files inside named directories and among glob
    matches, in order; the other files found there; one error line per input that gives no
    image file."""
    found = Inputs()
    for item in inputs:
        path = Path(item)
        if path.is_file():
            found.files.append(path)
            continue
        if path.is_dir():
            candidates = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        else:
            candidates = sorted(Path(m) for m in glob.glob(item) if os.path.isfile(m))
            if not candidates:
                found.errors.append(f"{item}: no such file, directory or matching glob")
                continue
        images = [p for p in candidates if is_image_name(p)]
        found.files += images
        found.passed_over += [p for p in candidates if not is_image_name(p)]
        if not images:
            found.errors.append(f"{item}: {'a directory' if path.is_dir() else 'a glob'} with no image files "
                                f"(suffixes {' '.join(IMAGE_SUFFIXES)})")
    found.files = list(dict.fromkeys(found.files))
    named = set(found.files)
    found.passed_over = [path for path in dict.fromkeys(found.passed_over) if path not in named]
    return found


def _network_input(l: torch.Tensor, resolution: int) -> torch.Tensor:
    """Full-resolution L (1, 1, H, W) -> (1, 1, R, R), antialiased."""
    return F.interpolate(l, size=(resolution, resolution), mode="bilinear", antialias=True,
                         align_corners=False)


@torch.no_grad()
def colorize_batch(model, images: List[Image.Image], device: torch.device) -> List[Image.Image]:
    """Colourize RGB images of any sizes; each keeps its own size and L channel."""
    full_l = []
    for image in images:
        rgb = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]
        full_l.append(rgb_to_lab(rgb.to(device))[:, :1])
    small = torch.cat([_network_input(l, model.resolution) for l in full_l])
    ab_small = model(small).ab
    outputs = []
    for l, ab in zip(full_l, ab_small.float()):
        ab_full = F.interpolate(ab[None], size=l.shape[-2:], mode="bilinear", align_corners=False)
        outputs.append(Image.fromarray(rgb_to_uint8(lab_to_rgb_keeping_l(join_lab(l, ab_full)))[0]))
    return outputs


def _output_paths(files: List[Path], out_dir: Path, report: Report) -> Dict[Path, Path]:
    """Each input's output ``out_dir/<name>.png``. An input whose output another input's takes
    is reported and skipped; an output that is itself an input is refused."""
    inputs = {path.resolve(): path for path in files}
    targets, taken = {}, set()
    for path in files:
        target = Path(out_dir) / f"{path.stem}.png"
        if target.resolve() in inputs:
            raise ColorizeError(f"{inputs[target.resolve()]}: --out {out_dir} would overwrite this "
                                f"input; choose another --out")
        if target in taken:
            report.failed.append(f"{path}: skipped, its output {target} would overwrite another input's")
        else:
            targets[path] = target
            taken.add(target)
    return targets


def colorize_files(model_path: Path, inputs: Iterable[str], out_dir: Path, batch_size: int = 16,
                   device: Optional[torch.device] = None, temperature: Optional[float] = None,
                   trust_code: bool = False, shift_average: Optional[bool] = None) -> Report:
    """Colourize every readable image among ``inputs`` into ``out_dir`` as ``<name>.png`` with
    the model saved at ``model_path`` (a run directory, whose best model is used, or an export),
    decoding bin scores at ``temperature`` and averaging over one-pixel shifts if
    ``shift_average`` (defaults: the model's); ``trust_code``: see
    :func:`colorize.models.saved.load_model`."""
    found = expand_inputs(inputs)
    report = Report(failed=found.errors, passed_over=found.passed_over)
    targets = _output_paths(found.files, out_dir, report)
    if not targets and not report.failed:
        raise ColorizeError("no input images given")
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(model_folder(model_path), device, temperature, trust_code, shift_average)
    pending = list(targets)
    with tqdm(total=len(pending), desc="colourizing", unit=" images") as progress:
        for start in range(0, len(pending), batch_size):
            chunk, images = [], []
            for path in pending[start:start + batch_size]:
                try:
                    images.append(read_rgb(path))
                    chunk.append(path)
                except UnreadableImage as error:
                    report.failed.append(str(error))
            for path, image in zip(chunk, colorize_batch(model, images, device) if chunk else []):
                with atomic_path(targets[path]) as temporary:
                    image.save(temporary, format="PNG")
                report.written.append(targets[path])
            progress.update(len(pending[start:start + batch_size]))
    return report
