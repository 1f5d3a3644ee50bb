"""Colourization networks, registered by name. Every module of this package is imported here,
so a network added as one new file registers itself."""
import importlib
import pkgutil

from colorize.models.base import Colorizer, Prediction
from colorize.models.registry import create_model

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["Colorizer", "Prediction", "create_model"]
