"""The colour output every network ends in, chosen by ``model.head``: a and b regressed
directly (``ab``), or scores over the ab bins (``bins``: Zhang, Isola and Efros 2016) decoded
into ab by an annealed mean at ``model.temperature``, which can also be changed at use time
(:func:`set_temperature`). The head reads the temperature from the network's settings, its one
owner."""
from dataclasses import dataclass, replace
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from colorize.core.ab_bins import annealed_mean
from colorize.core.color import ab_from_network
from colorize.errors import ColorizeError, ConfigError, check_positive
from colorize.models.conv import Conv2d
from colorize.models.prediction import Prediction

HEADS = ("ab", "bins")
BIN_CENTRES = "head.decoder.centres"  # where a network's bin centres are in its state dict


@dataclass
class HeadSettings:
    head: str = "ab"  # ab: regress a and b | bins: scores over the ab bins, decoded by annealed mean
    temperature: float = 0.38  # bins: 1 decodes the mean colour, towards 0 the most likely one
    flip_average: bool = False  # in eval mode, average the predictions for the image and its mirror image
    shift_average: bool = False  # in eval mode, also average those for the image moved by one pixel each way

    def __post_init__(self):
        if self.head not in HEADS:
            raise ConfigError(f"model.head must be one of {', '.join(HEADS)}, got {self.head!r}")
        check_positive("model.temperature", self.temperature)


def colour_layer(settings: HeadSettings, width: int, groups: int, bins: Optional[torch.Tensor]) -> nn.Module:
    """The last layer, from ``width`` channels at half resolution: 2 ab channels at full
    resolution (in ``groups`` groups), or one score per bin at half resolution, as Zhang et al.
    score bins below the image's resolution (a score per pixel would cost several times the
    rest of the network)."""
    if settings.head == "ab":
        return nn.ConvTranspose2d(width, 2, 4, 2, 1, groups=groups)
    if bins is None:
        raise ConfigError("model.head=bins needs the ab bins of the prepared data (its ab prior)")
    return nn.Sequential(Conv2d(width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         Conv2d(width, len(bins), 1))


class BinDecoder(nn.Module):
    """Bin scores at half resolution -> ab by annealed mean, upsampled to full resolution; the
    bin centres are saved with the model."""

    def __init__(self, centres: torch.Tensor, settings: HeadSettings):
        super().__init__()
        self.register_buffer("centres", centres.float().clone())
        self.settings = settings

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return F.interpolate(annealed_mean(scores, self.centres, self.settings.temperature), scale_factor=2,
                             mode="bilinear", align_corners=False)


class ColourHead(nn.Module):
    """Turns the last layer's output and the class scores into a :class:`Prediction`."""

    def __init__(self, settings: HeadSettings, bins: Optional[torch.Tensor]):
        super().__init__()
        self.settings = settings
        self.decoder = BinDecoder(bins, settings) if settings.head == "bins" else None

    def forward(self, output: torch.Tensor, logits: Optional[torch.Tensor]) -> Prediction:
        if self.decoder is None:
            return Prediction(ab_from_network(output), logits)
        # training scores the bins; decoding them (as costly as scoring) is left to evaluation and use
        return Prediction(None if self.training else self.decoder(output), logits, output)


def has_bin_head(model: nn.Module) -> bool:
    head = getattr(model, "head", None)
    return isinstance(head, ColourHead) and head.decoder is not None


def set_temperature(model: nn.Module, temperature: float) -> None:
    """Decode ``model``'s bin scores at ``temperature`` from now on: its settings' temperature."""
    if not has_bin_head(model):
        raise ColorizeError(f"--temperature applies to networks with a bin head (model.head=bins); "
                            f"this {type(model).__name__} predicts ab directly")
    settings = model.head.settings
    settings.temperature = replace(settings, temperature=temperature).temperature  # replace checks it


def set_shift_average(model: nn.Module, shift_average: bool) -> None:
    """Average ``model``'s predictions in eval mode over one-pixel shifts of the image, or not,
    from now on: its settings' ``shift_average``."""
    if not isinstance(getattr(model, "head", None), ColourHead):
        raise ColorizeError(f"--shift-average applies to colorize's networks; this {type(model).__name__} "
                            f"has no colour head whose settings hold the averages")
    model.head.settings.shift_average = shift_average
