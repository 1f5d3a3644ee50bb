"""``colorize list``: what is registered, with each component's settings and defaults, and for
models their parameters and GFLOP per training image."""
from dataclasses import fields
from typing import Optional

from colorize.config import COMPONENTS, REGISTRIES, load_config
from colorize.errors import ConfigError
from colorize.models import MODELS, create_model
from colorize.models.base import gflop_per_image, parameter_count


def _settings(settings_type) -> str:
    values = settings_type()
    return ", ".join(f"{f.name}={getattr(values, f.name)}" for f in fields(settings_type)) or "no settings"


def _model_figures(name: str, resolution: int, num_classes: int) -> str:
    try:
        model = create_model(name, None, num_classes, resolution)
    except ConfigError:
        return f"  [does not take {resolution}x{resolution} images]"
    return (f"  [{parameter_count(model):,} parameters, "
            f"{gflop_per_image(model, resolution):.3f} GFLOP/image at {resolution}x{resolution}]")


def describe_components(resolution: int = 32, config_path: Optional[str] = None, num_classes: int = 10) -> str:
    """One block per kind of component; ``config_path``'s ``imports:`` are registered first."""
    if config_path is not None:
        load_config(config_path)  # imports the modules its imports: name, which register components
    lines = []
    for section, registry in REGISTRIES.items():
        lines.append(f"{section}.name: the {registry.kind}, default {COMPONENTS[section]}")
        for name in registry.names():
            entry = registry.entry(name)
            figures = ""
            if registry is MODELS:
                figures = _model_figures(name, resolution, num_classes)
            lines.append(f"  {name:<16} {_settings(entry.settings)}{figures}")
    return "\n".join(lines)
