"""The registry of networks (``model.name``), building them by name, and the resolutions they can take."""
from typing import Optional

import torch

from colorize.errors import ConfigError
from colorize.registry import Registry

MODELS = Registry("model", "model")


def resolution_multiple(name: str) -> int:
    """The number that every image resolution of model ``name`` must be a multiple of."""
    return MODELS.entry(name).factory.resolution_multiple


MAX_RESOLUTION = 2048  # the largest image side a network takes: 4 MPixel per image


def _fits(name: str, resolution: int) -> bool:
    return resolution > 0 and resolution % resolution_multiple(name) == 0


def _needs(name: str, resolution: int) -> str:
    """What ``name`` needs, with the usable resolutions nearest to ``resolution``."""
    multiple = resolution_multiple(name)
    below = resolution // multiple * multiple
    nearest = " or ".join(str(r) for r in (below, below + multiple) if r > 0)
    return f"{name} needs a multiple of {multiple} (nearest: {nearest})"


def check_resolution(resolution: int) -> None:
    """Raise ConfigError when no registered model can take images of ``resolution``."""
    if resolution > MAX_RESOLUTION:
        raise ConfigError(f"--resolution {resolution} is beyond {MAX_RESOLUTION}, the largest image side "
                          "colorize's networks take")
    if not any(_fits(name, resolution) for name in MODELS.names()):
        needs = "; ".join(_needs(name, resolution) for name in MODELS.names())
        raise ConfigError(f"--resolution {resolution} suits no model: {needs}")


def create_model(name: str, settings=None, num_classes: int = 10, resolution: int = 32,
                 bins: Optional[torch.Tensor] = None) -> torch.nn.Module:
    """Model ``name`` with ``settings`` (default: its settings' defaults); ``bins``, the ab bin
    centres (Q, 2), for a network with a bin head. The network keeps its ``name``, ``settings``
    and ``resolution`` as attributes (saving it writes them)."""
    entry = MODELS.entry(name)
    if resolution > MAX_RESOLUTION:
        raise ConfigError(f"model {name!r} cannot take {resolution}x{resolution} images: the largest it takes "
                          f"is {MAX_RESOLUTION}x{MAX_RESOLUTION}")
    if not _fits(name, resolution):
        raise ConfigError(f"model {name!r} cannot take {resolution}x{resolution} images: "
                          f"{_needs(name, resolution)}; run colorize prepare again with one of "
                          f"those as --resolution")
    extra = {} if bins is None else {"bins": bins}  # networks without a bin head need not take it
    settings = settings if settings is not None else entry.settings()
    model = entry.factory(settings, num_classes=num_classes, resolution=resolution, **extra)
    model.name, model.settings, model.resolution = name, settings, resolution
    return model
