"""colorize: train automatic image colourization networks (L in, ab and class out)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "load_model":  # colorize.load_model(FOLDER), imported on first use
        from colorize.models.saved import load_model

        return load_model
    raise AttributeError(f"module 'colorize' has no attribute {name!r}")
