"""Models, registered by name and built from ``ModelConfig``."""
from colorize.models import fusion  # noqa: F401  (registers its models)
from colorize.models.registry import create_model, model_kwargs, register

__all__ = ["create_model", "model_kwargs", "register"]
