"""Drawing: colour grids (a fixed set of validation images colourized by the model, shown as
sets of three rows, grey input, prediction and ground truth, each column captioned by class
and per-image error), and the rows of the table of the test images colourized worst and best,
each drawn as a triptych."""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from colorize.core import images
from colorize.core.color import join_lab, lab_to_rgb
from colorize.data.loaders import SplitLoader
from colorize.io import atomic_path

SCALE = 2  # each pixel drawn as SCALE x SCALE
PAD = 2
LABEL_WIDTH = 44
CAPTION_HEIGHT = 26
COLUMNS = 10
ROWS = ("grey", "pred", "true")


@dataclass
class Samples:
    """A few images of a split, kept in memory."""

    l: torch.Tensor  # (K, 1, R, R)
    ab: torch.Tensor  # (K, 2, R, R)
    label: torch.Tensor  # (K,)
    index: torch.Tensor  # (K,) positions in the split


def pick_per_class(loader: SplitLoader, num_classes: int, per_class: int) -> Samples:
    """The first ``per_class`` images of every class in ``loader`` (an evaluation loader, so
    always the same ones)."""
    kept = {name: [] for name in ("l", "ab", "label", "index")}
    counts = [0] * num_classes
    for batch in loader:
        for i, (label, valid) in enumerate(zip(batch.label.tolist(), batch.valid.tolist())):
            if valid and counts[label] < per_class:
                counts[label] += 1
                for name in kept:
                    kept[name].append(getattr(batch, name)[i].clone())
        if min(counts) >= per_class:
            break
    order = np.argsort([int(label) for label in kept["label"]], kind="stable")
    return Samples(**{name: torch.stack([values[i] for i in order]) for name, values in kept.items()})


def image_errors(ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
    """Mean |ab error| of each image, in ab units."""
    return (ab_pred.float() - ab_true.float()).abs().flatten(1).mean(dim=1)


def lab_to_uint8(l: torch.Tensor, ab: torch.Tensor) -> np.ndarray:
    """L and ab batches -> (N, R, R, 3) uint8 RGB."""
    return images.rgb_to_uint8(lab_to_rgb(join_lab(l.float(), ab.float())))


@torch.no_grad()
def predict(model: nn.Module, l: torch.Tensor, autocast) -> tuple:
    """(ab, predicted class) of ``model`` for a batch of L, in eval mode."""
    was_training = model.training
    model.eval()
    with autocast():
        prediction = model(l)
    model.train(was_training)
    logits = prediction.logits
    predicted = logits.argmax(dim=1) if logits is not None else torch.full((len(l),), -1, device=l.device)
    return prediction.ab.float(), predicted


def _label_width(names: Sequence[str]) -> int:
    return max(LABEL_WIDTH, 6 * max(len(name) for name in names) + 4)


def grid_size(count: int, resolution: int, columns: int = COLUMNS, rows: Sequence[str] = ROWS) -> tuple:
    """(width, height) in pixels of the grid of ``count`` samples with ``rows`` per sample."""
    tile = resolution * SCALE + PAD
    sets = -(-count // columns)
    return _label_width(rows) + min(count, columns) * tile, sets * (len(rows) * tile + CAPTION_HEIGHT)


def render_grid(l: torch.Tensor, rows: Dict[str, torch.Tensor], captions: Sequence[str],
                columns: int = COLUMNS) -> Image.Image:
    """Sets of ``columns`` samples; each set is one row of tiles per entry of ``rows`` (a name
    and the ab to join with ``l``) and a caption strip."""
    pictures = [lab_to_uint8(l, ab) for ab in rows.values()]
    resolution, label_width = l.shape[-1], _label_width(list(rows))
    tile = resolution * SCALE + PAD
    canvas = Image.new("RGB", grid_size(len(l), resolution, columns, list(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    set_height = len(rows) * tile + CAPTION_HEIGHT
    for i in range(len(l)):
        top, left = (i // columns) * set_height, label_width + (i % columns) * tile
        for r, tiles in enumerate(pictures):
            picture = Image.fromarray(tiles[i]).resize((tile - PAD,) * 2, Image.Resampling.NEAREST)
            canvas.paste(picture, (left, top + r * tile))
        draw.text((left, top + len(rows) * tile), captions[i], fill="black", font=font, spacing=1)
    for s in range(-(-len(l) // columns)):
        for r, name in enumerate(rows):
            draw.text((2, s * set_height + r * tile + tile // 2 - 6), name, fill="black", font=font)
    return canvas


def epoch_grid(model: nn.Module, samples: Samples, classes: List[str], autocast) -> Image.Image:
    ab, _ = predict(model, samples.l, autocast)
    errors = image_errors(ab, samples.ab).tolist()
    captions = [f"{classes[label]}\n{error:.1f}" for label, error in zip(samples.label.tolist(), errors)]
    return render_grid(samples.l, dict(zip(ROWS, (torch.zeros_like(ab), ab, samples.ab))), captions)


def comparison_grid(models: Dict[str, nn.Module], samples: Samples, classes: List[str], autocast) -> Image.Image:
    """The same samples as grey input, each named model's prediction, and the truth."""
    predictions = {name: predict(model, samples.l, autocast)[0] for name, model in models.items()}
    rows = {"grey": torch.zeros_like(samples.ab), **predictions, "true": samples.ab}
    return render_grid(samples.l, rows, [classes[label] for label in samples.label.tolist()])


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as temporary:
        image.save(temporary, format="PNG")


class Extremes:
    """The ``count`` images with the largest and the smallest error seen so far."""

    def __init__(self, count: int):
        self.count = count
        self.worst = self.best = None

    def _merge(self, kept, batch, largest: bool):
        merged = batch if kept is None else {k: torch.cat((kept[k], batch[k])) for k in batch}
        order = merged["error"].topk(min(self.count, len(merged["error"])), largest=largest).indices
        return {k: v[order] for k, v in merged.items()}

    def add(self, l, ab_true, ab_pred, label, predicted) -> None:
        batch = {"l": l.float(), "ab": ab_true.float(), "ab_pred": ab_pred.float(), "label": label,
                 "predicted": predicted, "error": image_errors(ab_pred, ab_true)}
        self.worst = self._merge(self.worst, batch, largest=True)
        self.best = self._merge(self.best, batch, largest=False)


@torch.no_grad()
def test_extremes(model: nn.Module, loader: SplitLoader, autocast, count: int = 8) -> Extremes:
    """One pass over ``loader``, keeping the worst and best colourized images."""
    extremes = Extremes(count)
    for batch in loader:
        ab, predicted = predict(model, batch.l, autocast)
        valid = batch.valid
        extremes.add(batch.l[valid], batch.ab[valid], ab[valid], batch.label[valid], predicted[valid])
    return extremes


TABLE_COLUMNS = ["image (grey | pred | true)", "class", "predicted", "error", "rank"]


def triptych(l, ab_pred, ab_true, scale: int = 4) -> Image.Image:
    """One sample as grey input, prediction and truth side by side."""
    tiles = [lab_to_uint8(l[None], ab[None])[0] for ab in (ab_pred * 0, ab_pred, ab_true)]
    strip = Image.fromarray(np.concatenate(tiles, axis=1))
    return strip.resize((strip.width * scale, strip.height * scale), Image.Resampling.NEAREST)


def extremes_table(extremes: Extremes, classes: List[str]) -> list:
    """Rows of :data:`TABLE_COLUMNS`: the worst images, then the best."""
    rows = []
    for rank, kept in (("worst", extremes.worst), ("best", extremes.best)):
        for i in range(len(kept["error"])):
            predicted = int(kept["predicted"][i])
            rows.append([triptych(kept["l"][i], kept["ab_pred"][i], kept["ab"][i]),
                         classes[int(kept["label"][i])], classes[predicted] if predicted >= 0 else "-",
                         float(kept["error"][i]), rank])
    return rows
