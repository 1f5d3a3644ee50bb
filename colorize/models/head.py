"""The colour output every network ends in, chosen by ``model.head``: a and b regressed
directly (``ab``), or scores over the ab bins (``bins``: Zhang, Isola and Efros 2016) decoded
into ab by an annealed mean at ``model.temperature``, which can also be changed at use time."""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from colorize.ab_bins import annealed_mean
from colorize.color import ab_from_network
from colorize.errors import ColorizeError, ConfigError, check_positive
from colorize.models.base import Prediction

HEADS = ("ab", "bins")
BIN_CENTRES = "head.decoder.centres"  # where a network's bin centres are in its state dict


@dataclass
class HeadSettings:
    head: str = "ab"  # ab: regress a and b | bins: scores over the ab bins, decoded by annealed mean
    temperature: float = 0.38  # bins: 1 decodes the mean colour, towards 0 the most likely one

    def __post_init__(self):
        if self.head not in HEADS:
            raise ConfigError(f"model.head must be one of {', '.join(HEADS)}, got {self.head!r}")
        check_positive("model.temperature", self.temperature)


def colour_layer(settings: HeadSettings, width: int, groups: int, bins: Optional[torch.Tensor]) -> nn.Module:
    """The last layer: ``width`` channels at half resolution -> the head's output at full
    resolution (2 ab channels in ``groups`` groups, or one score per bin)."""
    if settings.head == "ab":
        return nn.ConvTranspose2d(width, 2, 4, 2, 1, groups=groups)
    if bins is None:
        raise ConfigError("model.head=bins needs the ab bins of the prepared data (its ab prior)")
    return nn.Sequential(nn.ConvTranspose2d(width, width, 4, 2, 1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.Conv2d(width, len(bins), 1))


class BinDecoder(nn.Module):
    """Bin scores -> ab by annealed mean; the bin centres are saved with the model."""

    def __init__(self, centres: torch.Tensor, temperature: float):
        super().__init__()
        self.register_buffer("centres", centres.float().clone())
        self.temperature = temperature

    def forward(self, scores: torch.Tensor) -> torch.Tensor:
        return annealed_mean(scores, self.centres, self.temperature)


class ColourHead(nn.Module):
    """Turns the last layer's output and the class scores into a :class:`Prediction`."""

    def __init__(self, settings: HeadSettings, bins: Optional[torch.Tensor]):
        super().__init__()
        self.decoder = BinDecoder(bins, settings.temperature) if settings.head == "bins" else None

    def forward(self, output: torch.Tensor, logits: Optional[torch.Tensor]) -> Prediction:
        if self.decoder is None:
            return Prediction(ab_from_network(output), logits)
        return Prediction(self.decoder(output), logits, output)


def has_bin_head(model: nn.Module) -> bool:
    head = getattr(model, "head", None)
    return isinstance(head, ColourHead) and head.decoder is not None


def set_temperature(model: nn.Module, temperature: float) -> None:
    """Decode ``model``'s bin scores at ``temperature`` from now on."""
    check_positive("--temperature", temperature)
    if not has_bin_head(model):
        raise ColorizeError(f"--temperature applies to networks with a bin head (model.head=bins); "
                            f"this {type(model).__name__} predicts ab directly")
    model.head.decoder.temperature = temperature
