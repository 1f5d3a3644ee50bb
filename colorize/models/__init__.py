"""Colourization networks, registered by name in :data:`MODELS` (``model.name``): the
built-in ones are registered here; register your own with ``@MODELS.register(name, Settings)``."""
from colorize.models.base import Colorizer
from colorize.models.factory import MODELS, create_model
from colorize.models.fusion import FusionColorizer, FusionSettings
from colorize.models.prediction import Prediction
from colorize.models.residual import ResidualFusionColorizer, ResidualFusionSettings
from colorize.models.unet import UNetFusionColorizer

MODELS.register("fusion", FusionSettings)(FusionColorizer)
MODELS.register("residual_fusion", ResidualFusionSettings)(ResidualFusionColorizer)
MODELS.register("unet_fusion", FusionSettings)(UNetFusionColorizer)

__all__ = ["MODELS", "Colorizer", "Prediction", "create_model"]
