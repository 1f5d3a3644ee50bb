"""``colorize bench prepare``: images/s and peak memory of ``colorize prepare`` on a generated
folder of JPEG photos.

Each resolution is prepared by its own ``python -m colorize prepare`` process; its memory is
the proportional set size (PSS: shared pages divided among the processes that share them) of
that process and all its children, sampled every 50 ms.
"""
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Dict, Sequence

import numpy as np
import psutil
from tqdm import tqdm

from colorize.bench.machine import machine_description
from colorize.io import cache_dir

_CLASSES = 10
_SAMPLE_SECONDS = 0.05


def _photo(args) -> None:
    """A smooth random colour field with grain, saved as a JPEG: decodes like a photo."""
    from PIL import Image

    path, size, seed = args
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    grain = rng.normal(0, 6, (size, size, 1)).astype(np.float32)
    Image.fromarray(np.clip(smooth + grain, 0, 255).astype(np.uint8)).save(path, quality=90)


def generate_photos(count: int, size: int = 256, folder: Path = None) -> Path:
    """``count`` JPEG photos of ``size`` x ``size`` pixels in ``_CLASSES`` class folders; a
    folder generated before with the same figures is reused."""
    folder = Path(folder or cache_dir() / f"bench-photos-{count}x{size}")
    done = folder / ".complete"
    if done.is_file():
        return folder
    for label in range(_CLASSES):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"class{i % _CLASSES}" / f"{i:07d}.jpg", size, i) for i in range(count)]
    with Pool(os.cpu_count()) as pool:
        for _ in tqdm(pool.imap_unordered(_photo, jobs, chunksize=64), total=count,
                      desc=f"generating {folder}", unit=" images"):
            pass
    done.write_text(f"{count} images of {size}x{size}\n")
    return folder


def _tree_pss(process: psutil.Process) -> int:
    """PSS bytes of ``process`` and its descendants (those that exit meanwhile are left out)."""
    total = 0
    for member in [process] + process.children(recursive=True):
        try:
            total += member.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return total


def measure_prepare(folder: Path, resolution: int, count: int) -> Dict:
    """Wall time, images/s and peak memory of one ``colorize prepare`` of ``folder``."""
    with tempfile.TemporaryDirectory(prefix="colorize-bench-") as out:
        command = [sys.executable, "-m", "colorize", "prepare", "--data", str(folder), "--out", out,
                   "--resolution", str(resolution)]
        log = Path(out) / "log"
        with open(log, "w") as output:
            start = time.perf_counter()
            child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
            process, peak = psutil.Process(child.pid), 0
            while child.poll() is None:
                try:
                    peak = max(peak, _tree_pss(process))
                except psutil.NoSuchProcess:
                    pass
                time.sleep(_SAMPLE_SECONDS)
            seconds = time.perf_counter() - start
        if child.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()[-3000:]}")
    return {"resolution": resolution, "images": count, "seconds": seconds,
            "images_per_s": count / seconds, "peak_memory_mb": peak / 2**20}


def prepare_benchmark(count: int = 20_000, size: int = 256, resolutions: Sequence[int] = (32, 64),
                      folder: Path = None) -> Dict:
    """``colorize prepare`` of ``count`` generated ``size``-pixel JPEGs at each resolution."""
    folder = generate_photos(count, size, folder)
    runs = []
    for resolution in resolutions:
        print(f"preparing {count:,} images at {resolution} pixels...", file=sys.stderr, flush=True)
        runs.append(measure_prepare(folder, resolution, count))
    return {"source": f"{count:,} JPEG photos of {size}x{size} in {folder}", "runs": runs,
            "machine": machine_description()}


def format_prepare_table(result: Dict) -> str:
    lines = [f"{'resolution':<12}{'images':>10}{'seconds':>10}{'images/s':>10}{'peak memory':>14}"]
    for run in result["runs"]:
        lines.append(f"{run['resolution']:<12}{run['images']:>10,}{run['seconds']:>10.1f}"
                     f"{run['images_per_s']:>10,.0f}{run['peak_memory_mb']:>11,.0f} MB")
    lines.append(f"{result['source']}; the whole colorize prepare command, process tree PSS")
    lines.append(result["machine"])
    return "\n".join(lines)
