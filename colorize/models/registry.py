"""The model registry: models by name, and the arguments that rebuild one."""
from typing import Callable, Dict

from torch import nn

from colorize.config import ConfigError, ModelConfig

_REGISTRY: Dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Class decorator: make a model buildable as ``model.name=<name>``."""

    def add(cls):
        _REGISTRY[name] = cls
        return cls

    return add


def model_kwargs(config: ModelConfig, num_classes: int, resolution: int) -> dict:
    """Everything needed to rebuild the model; saved beside its weights."""
    return dict(num_classes=num_classes, resolution=resolution, width=config.width,
                global_hidden=config.global_hidden, global_dim=config.global_dim)


def create_model(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise ConfigError(f"model.name={name!r} is not a known model; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)
