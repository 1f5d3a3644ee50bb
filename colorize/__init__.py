"""colorize: train automatic image colourization networks (L in, ab and class out)."""

__version__ = "0.1.0"
