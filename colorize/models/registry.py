"""The model registry: models by name, and the arguments that rebuild one."""
from typing import Callable, Dict

from torch import nn

from colorize.config import ConfigError, ModelConfig

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Class decorator: make a model buildable as ``model.name=<name>``. A model that takes only
    resolutions divisible by some number says so in its class attribute ``resolution_multiple``."""

    def add(cls):
        _REGISTRY[name] = cls
        return cls

    return add


def model_kwargs(config: ModelConfig, num_classes: int, resolution: int) -> dict:
    """Everything needed to rebuild the model; saved beside its weights."""
    return dict(num_classes=num_classes, resolution=resolution, width=config.width,
                global_hidden=config.global_hidden, global_dim=config.global_dim)


def resolution_multiple(name: str) -> int:
    """The number that every image resolution of model ``name`` must be a multiple of."""
    return getattr(_REGISTRY[name], "resolution_multiple", 1)


def _fits(name: str, resolution: int) -> bool:
    return resolution % resolution_multiple(name) == 0


def _needs(name: str, resolution: int) -> str:
    """What ``name`` needs, with the usable resolutions nearest to ``resolution``."""
    multiple = resolution_multiple(name)
    below = resolution // multiple * multiple
    nearest = " or ".join(str(r) for r in (below, below + multiple) if r > 0)
    return f"{name} needs a multiple of {multiple} (nearest: {nearest})"


def check_resolution(resolution: int) -> None:
    """Raise ConfigError when no registered model can take images of ``resolution``."""
    if not any(_fits(name, resolution) for name in _REGISTRY):
        needs = "; ".join(_needs(name, resolution) for name in sorted(_REGISTRY))
        raise ConfigError(f"--resolution {resolution} suits no model: {needs}")


def create_model(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise ConfigError(f"model.name={name!r} is not a known model; known: {', '.join(sorted(_REGISTRY))}")
    resolution = kwargs.get("resolution")
    if resolution is not None and not _fits(name, resolution):
        raise ConfigError(f"model {name!r} cannot take {resolution}x{resolution} images: "
                          f"{_needs(name, resolution)}; run colorize prepare again with one of "
                          f"those as --resolution")
    return _REGISTRY[name](**kwargs)
