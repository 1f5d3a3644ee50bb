"""Evaluation metrics, accumulated as sums and counts so they are exact over any number of
processes: each process adds its own real samples (padding duplicates excluded), and the
sums are added across processes before dividing.

- ``ab_l1``: mean |ab error| per value, in ab units (the report's metric);
- ``psnr``: mean per-image PSNR (dB) of the RGB made of the true L and the predicted ab,
  against the original;
- ``colorfulness_pred`` / ``colorfulness_true`` and their ``colorfulness_ratio``: mean
  colourfulness (Hasler and Suesstrunk 2003) of predicted and original images;
- ``ab_auc``: area under the curve of the share of pixels whose ab error (Euclidean, in ab
  units) is at most t, for t from 0 to 150, normalised to [0, 1] (Zhang et al. 2016);
- ``accuracy``: top-1 class accuracy (NaN for a network without a class head);
- ``per_class``, when the class names are given: ``ab_l1``, ``colorfulness_ratio`` and ``images``
  of each class's images, by class name.
"""
from typing import Callable, Dict, Optional, Sequence

import torch

from colorize.core.color import join_lab, lab_to_rgb

_SUMS = ("ab_abs", "ab_values", "psnr", "colorfulness_pred", "colorfulness_true", "correct", "images")
_PER_CLASS = [_SUMS.index(name) for name in ("ab_abs", "ab_values", "colorfulness_pred", "colorfulness_true",
                                             "images")]
AUC_THRESHOLDS = 151  # t = 0, 1, ..., 150 ab units


def pixels_within(ab_pred: torch.Tensor, ab_true: torch.Tensor) -> torch.Tensor:
    """(N, AUC_THRESHOLDS): per image, the pixels whose ab error is at most t, for each t."""
    error = (ab_pred - ab_true).norm(dim=1).flatten(1)
    bucket = error.ceil().clamp(max=AUC_THRESHOLDS).long()  # error <= t exactly when ceil(error) <= t
    counts = torch.zeros(len(error), AUC_THRESHOLDS + 1, dtype=torch.float64, device=error.device)
    counts.scatter_add_(1, bucket, torch.ones_like(bucket, dtype=torch.float64))
    return counts.cumsum(1)[:, :AUC_THRESHOLDS]


def colorfulness(rgb: torch.Tensor) -> torch.Tensor:
    """Hasler-Suesstrunk colourfulness of each image of an RGB batch in [0, 1] (0-255 scale)."""
    r, g, b = (rgb.flatten(2) * 255).unbind(1)
    rg, yb = r - g, 0.5 * (r + g) - b
    spread = torch.sqrt(rg.var(dim=1, unbiased=False) + yb.var(dim=1, unbiased=False))
    offset = torch.sqrt(rg.mean(dim=1) ** 2 + yb.mean(dim=1) ** 2)
    return spread + 0.3 * offset


def psnr(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of RGB batches in [0, 1] (capped at 100 dB for identical images)."""
    mse = (pred - true).pow(2).flatten(1).mean(dim=1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def _ratio(pred: float, true: float) -> float:
    return pred / true if true else 0.0


class MetricSums:
    """Running float64 sums of one process (and of each of ``classes``, if given), computed in
    float32 and higher whatever autocast is active; ``compute`` reduces them and divides."""

    def __init__(self, device: torch.device, classes: Optional[Sequence[str]] = None):
        self.classes = list(classes or [])
        self.sums = torch.zeros(len(_SUMS) + AUC_THRESHOLDS, dtype=torch.float64, device=device)
        self.class_sums = torch.zeros(len(self.classes), len(_PER_CLASS), dtype=torch.float64, device=device)

    def update(self, l: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor,
               logits: Optional[torch.Tensor], labels: torch.Tensor, valid: Optional[torch.Tensor] = None) -> None:
        """Add a batch; samples where ``valid`` is False (padding) count for nothing. Nothing
        here waits for the device."""
        weight = torch.ones_like(labels, dtype=torch.float64) if valid is None else valid.double()
        with torch.autocast(l.device.type, enabled=False):
            per_image = self._per_image(l.float(), ab_pred.float(), ab_true.float(), logits, labels, weight)
        self.sums += per_image @ weight
        if self.classes:
            self.class_sums.index_add_(0, labels, (per_image[_PER_CLASS] * weight).T)

    @staticmethod
    def _per_image(l, ab_pred, ab_true, logits, labels, weight) -> torch.Tensor:
        """(len(_SUMS) + AUC_THRESHOLDS, N): each figure of each image."""
        rgb_pred, rgb_true = lab_to_rgb(join_lab(l, ab_pred)), lab_to_rgb(join_lab(l, ab_true))
        per_image = torch.stack((
            (ab_pred - ab_true).abs().flatten(1).sum(dim=1, dtype=torch.float64),
            torch.full_like(weight, ab_true[0].numel()),
            psnr(rgb_pred, rgb_true).double(),
            colorfulness(rgb_pred).double(),
            colorfulness(rgb_true).double(),
            (logits.argmax(dim=1) == labels).double() if logits is not None else torch.full_like(weight, torch.nan),
            torch.ones_like(weight),
        ))
        return torch.cat((per_image, pixels_within(ab_pred, ab_true).T))

    def compute(self, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t) -> Dict[str, float]:
        """The metrics over every process; ``reduce`` sums a tensor across processes."""
        sums = reduce(self.sums.clone())
        total = dict(zip(_SUMS, sums[: len(_SUMS)].tolist()))
        images = max(total["images"], 1)
        pixels = max(total["ab_values"] / 2, 1)
        pred, true = total["colorfulness_pred"] / images, total["colorfulness_true"] / images
        metrics = {
            "ab_l1": total["ab_abs"] / max(total["ab_values"], 1),
            "psnr": total["psnr"] / images,
            "colorfulness_pred": pred,
            "colorfulness_true": true,
            "colorfulness_ratio": _ratio(pred, true),
            "ab_auc": (sums[len(_SUMS):] / pixels).mean().item(),
            "accuracy": total["correct"] / images,
            "images": int(total["images"]),
        }
        if self.classes:
            metrics["per_class"] = {name: {"ab_l1": ab_abs / max(values, 1), "colorfulness_ratio": _ratio(pred, true),
                                           "images": int(count)}
                                    for name, (ab_abs, values, pred, true, count)
                                    in zip(self.classes, reduce(self.class_sums.clone()).tolist())}
        return metrics
