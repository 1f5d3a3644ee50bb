"""Recipes: every setting of a run, as dataclasses, loaded from YAML plus dotted command-line
overrides.

``load_config("configs/reference.yaml", ["optim.lr=3e-4"])`` returns a :class:`Config`.
``base: NAME`` in a file builds on a recipe that colorize ships (``configs/NAME.yaml``): its
settings first, then the file's.
The sections ``model``, ``loss``, ``optim`` and ``schedule`` name a registered component and
hold that component's own settings (:data:`REGISTRIES`); ``imports`` lists modules that
register components of your own. Unknown keys, wrong types and out-of-range values raise
:class:`ConfigError` naming the key.
Values keep what was typed: YAML 1.1 would read ``no``, ``on`` or ``01`` as a boolean or a
number, but here a value becomes a boolean or a number only where the setting is one.
"""
import difflib
import importlib
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from colorize.errors import ConfigError
from colorize.io import atomic_write_text
from colorize.losses import LOSSES
from colorize.models import MODELS
from colorize.optim import OPTIMIZERS, SCHEDULES
from colorize.run_dir import CONFIG, check_run_dir
from colorize.settings import DataConfig, RunConfig, TrackingConfig, TrainConfig

# The sections that name a registered component: their registries, and the name each defaults to.
REGISTRIES = {"model": MODELS, "loss": LOSSES, "optim": OPTIMIZERS, "schedule": SCHEDULES}

COMPONENTS: Dict[str, str] = {"model": "fusion", "loss": "huber_class", "optim": "adam", "schedule": "constant"}


@dataclass
class Component:
    """A section that names a registered component (``model: {name: fusion, width: 32}``):
    the name, and that component's own settings dataclass."""

    name: str
    settings: Any

    def __getattr__(self, key: str):
        """The settings read on the section itself: ``config.optim.lr``."""
        if key == "settings":  # not yet set (copying, unpickling)
            raise AttributeError(key)
        return getattr(self.settings, key)


def _example(section: str) -> str:
    """The section with its first setting at its default, to show what a section looks like."""
    if section in COMPONENTS:
        return f"{section}: {{name: {COMPONENTS[section]}}}"
    defaults = getattr(_FixedSections(), section)
    first = fields(defaults)[0].name
    return f"{section}: {{{first}: {getattr(defaults, first)}}}"


def _default_component(section: str) -> Component:
    registry = REGISTRIES[section]
    name = COMPONENTS[section]
    return Component(name, registry.entry(name).settings())


@dataclass
class _FixedSections:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


@dataclass
class Config(_FixedSections):
    model: Component = field(default_factory=lambda: _default_component("model"))
    loss: Component = field(default_factory=lambda: _default_component("loss"))
    optim: Component = field(default_factory=lambda: _default_component("optim"))
    schedule: Component = field(default_factory=lambda: _default_component("schedule"))
    imports: List[str] = field(default_factory=list)  # modules that register components of your own


def _known_keys(schema, prefix: str = "") -> List[str]:
    keys = []
    for f in fields(schema):
        if is_dataclass(f.type):
            keys += _known_keys(f.type, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _explain(error: OmegaConfBaseException, origin: str, schema=_FixedSections, prefix: str = "") -> ConfigError:
    key = prefix + (error.full_key or "?")
    if isinstance(error, ConfigKeyError):
        names = [f"{prefix}name"] if prefix else [f"{section}.name" for section in COMPONENTS]
        known = _known_keys(schema, prefix) + names
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"; did you mean {close[0]}?" if close else "; see configs/reference.yaml"
        return ConfigError(f"unknown setting {key!r} in {origin}{hint}")
    reason = str(error).splitlines()[0]
    return ConfigError(f"bad value for {key!r} in {origin}: {reason}")


class _TextLoader(yaml.SafeLoader):
    """YAML whose plain scalars stay text, except ``null`` / ``~``: the schema types the rest."""


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


# In one YAML text: far more than settings need, far less than an alias bomb expands to or
# than the libraries that read the settings can nest
MOST_VALUES, MOST_DEPTH = 10_000, 20


def _parse_yaml(text: str, origin: str, what_to_do: str = ""):
    """The settings in the YAML ``text`` read from ``origin``; ``what_to_do`` follows the
    first line of a syntax error."""
    try:
        tree = yaml.load(text, Loader=_TextLoader)
    except yaml.YAMLError as error:
        message = f"{str(error).splitlines()[0]}; {what_to_do}" if what_to_do else str(error)
        raise ConfigError(f"{origin} is not valid YAML: {message}") from None
    except RecursionError:
        raise _too_deep(origin) from None
    _check_size(tree, origin)
    return tree


def _too_deep(origin: str) -> ConfigError:
    return ConfigError(f"{origin} nests lists or mappings more than {MOST_DEPTH} deep, or holds a YAML alias "
                       "(*name) inside its own anchor; settings nest a few levels")


def _check_size(tree, origin: str) -> None:
    """ConfigError if ``tree``, its YAML aliases expanded, holds more than :data:`MOST_VALUES`
    values (an alias inside itself never ends, and aliases of aliases multiply) or nests more
    than :data:`MOST_DEPTH` deep."""
    pending, count = [(tree, 0)], 0
    while pending:
        node, depth = pending.pop()
        count += 1
        if count > MOST_VALUES:
            raise ConfigError(f"{origin} holds more than {MOST_VALUES:,} values once its YAML aliases (*name) are "
                              "expanded; write the settings out")
        if depth > MOST_DEPTH:
            raise _too_deep(origin)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        pending.extend((child, depth + 1) for child in children)


# An override's value that YAML reads as something other than its text: a list or mapping,
# a quoted string, or null (also written ~ or left empty)
_YAML_VALUE = re.compile(r"\s*([\[{'\"]|(~|null|Null|NULL)?\s*$)")


def _override_value(key: str, text: str, origin: str):
    """The value of override ``key=text``: the text as typed (``#`` and ``: `` included), or
    what YAML reads where it is YAML's syntax for a list, mapping, quoted string or null."""
    if not _YAML_VALUE.match(text):
        return text.strip()
    return _parse_yaml(text, origin, f"for this text itself, quote it: {key}='\"{text}\"'")


def _overrides_tree(overrides: Sequence[str]) -> dict:
    """``["train.epochs=5", ...]`` -> ``{"train": {"epochs": "5"}, ...}``, values as typed."""
    tree: dict = {}
    for item in overrides:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise ConfigError(f"override {item!r} must look like key=value, e.g. train.epochs=5")
        *parents, name = key.split(".")
        node = tree
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override of {parent}")
        node[name] = _override_value(key, value, f"the value of override {item!r}")
    return tree


def _import_all(modules, origin: str, trust_code: bool) -> List[str]:
    """Import the ``imports:`` modules, whose components register themselves on import, if
    ``trust_code``."""
    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        raise ConfigError(f"imports in {origin} must be a list of module names, e.g. [my_project.networks]")
    if modules and not trust_code:
        raise ConfigError(f"{origin} imports {', '.join(modules)}, which would run their code: pass --trust-code "
                          "(trust_code=True in Python) if you trust them")
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"imports: cannot import {module!r} ({error}); is it on PYTHONPATH?") from None
    return modules


def _component(section: str, values: dict, origin: str) -> Component:
    """The component a section names, its settings checked against its settings dataclass."""
    values = dict(values)
    name = values.pop("name", COMPONENTS[section])
    settings = REGISTRIES[section].entry(name).settings
    try:
        merged = OmegaConf.merge(OmegaConf.structured(settings), values)
        _check_finite(OmegaConf.to_container(merged), f"{section}.")
        return Component(name, OmegaConf.to_object(merged))
    except OmegaConfBaseException as error:
        raise _explain(error, f"{origin} ({section}.name={name})", settings, f"{section}.") from None


def _check_finite(values: dict, prefix: str = "") -> None:
    """ConfigError for a setting that is NaN or infinite: no setting has a use for either."""
    for key, value in values.items():
        if isinstance(value, dict):
            _check_finite(value, f"{prefix}{key}.")
        elif isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{prefix}{key} must be a finite number, got {value}")


RECIPES = Path(__file__).resolve().parent / "configs"  # the recipes colorize ships


def _shipped() -> List[str]:
    return sorted(recipe.stem for recipe in RECIPES.glob("*.yaml"))


def _file_stages(path) -> List[Tuple[dict, str]]:
    """The sections of the config file at ``path`` (or of the recipe colorize ships by that
    name, where there is no such file), after those of the recipe its ``base:`` names."""
    if not os.path.isfile(path) and str(path) in _shipped():
        path = recipe_path(str(path))
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} does not exist; give a YAML file or the name of a recipe "
                          f"colorize ships: {', '.join(_shipped())}")
    content = _parse_yaml(Path(path).read_text(), f"config file {path}") or {}
    if not isinstance(content, dict):
        raise ConfigError(f"config file {path} must hold sections such as train: and data:")
    base = content.pop("base", None)
    if base is None:
        return [(content, str(path))]
    if base not in _shipped():
        raise ConfigError(f"base: {base!r} in config file {path} is not a recipe colorize ships; "
                          f"choose one of {', '.join(_shipped())}")
    return _file_stages(recipe_path(base)) + [(content, str(path))]


def _stages(path: Optional[str], overrides: Sequence[str]) -> List[Tuple[dict, str]]:
    """The config file's sections (its base recipe's first), then the overrides', each with where
    it came from."""
    stages = [] if path is None else _file_stages(path)
    stages.append((_overrides_tree(overrides), "the command line"))
    return stages


def recipe_path(name: str) -> Path:
    """The recipe ``name`` that colorize ships (``configs/NAME.yaml``, inside the package)."""
    return RECIPES / f"{name}.yaml"


def load_config(path: Optional[str] = None, overrides: Sequence[str] = (), trust_code: bool = True) -> Config:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides. The modules its
    ``imports:`` name are imported only with ``trust_code`` (a recipe of your own is trusted;
    see :func:`load_run_config` for another's)."""
    fixed = OmegaConf.structured(_FixedSections)
    components: Dict[str, dict] = {section: {} for section in COMPONENTS}  # the values given so far
    built: Dict[str, Component] = {}
    imports: List[str] = []
    for values, origin in _stages(path, overrides):
        values = dict(values)
        if "imports" in values:
            imports = _import_all(values.pop("imports"), origin, trust_code)
        for section in (*COMPONENTS, *(f.name for f in fields(_FixedSections))):
            if not isinstance(values.get(section) or {}, dict):
                raise ConfigError(f"{section} in {origin} must be a section of settings, such as {_example(section)}")
        for section in COMPONENTS:
            section_values = values.pop(section, None) or {}
            earlier = components[section]
            name = section_values.get("name", earlier.get("name", COMPONENTS[section]))
            if name != earlier.get("name", COMPONENTS[section]):  # another component: keep what it shares
                shared = {f.name for f in fields(REGISTRIES[section].entry(name).settings)}
                earlier = {key: value for key, value in earlier.items() if key in shared}
            components[section] = {**earlier, **section_values}
            built[section] = _component(section, components[section], origin)
        try:
            fixed = OmegaConf.merge(fixed, values)
        except OmegaConfBaseException as error:
            raise _explain(error, origin) from None
    _check_finite(OmegaConf.to_container(fixed))
    try:
        sections = OmegaConf.to_object(fixed)
    except OmegaConfBaseException as error:
        raise _explain(error, "the settings") from None
    config = Config(**{f.name: getattr(sections, f.name) for f in fields(_FixedSections)}, imports=imports, **built)
    _check_consistent(config)
    return config


def load_run_config(run_dir, overrides: Sequence[str] = (), trust_code: bool = False) -> Config:
    """The config saved in the run directory ``run_dir``, with ``overrides``; a run directory may
    come from anyone, so its ``imports:`` are imported only with ``trust_code``."""
    return load_config(str(check_run_dir(run_dir) / CONFIG), overrides, trust_code)


def _check_consistent(config: Config) -> None:
    if getattr(config.optim.settings, "scale_lr_with_world_size", False) and config.data.batch_size_scope == "global":
        raise ConfigError("optim.scale_lr_with_world_size=true needs data.batch_size_scope=process: a global "
                          "batch is the same size on any number of processes, so its lr should not change")


def to_dict(config: Config) -> dict:
    """The config as plain nested dicts (for YAML files and trackers)."""
    tree = {f.name: OmegaConf.to_container(OmegaConf.structured(getattr(config, f.name)))
            for f in fields(_FixedSections)}
    for section in COMPONENTS:
        component = getattr(config, section)
        tree[section] = {"name": component.name, **asdict(component.settings)}
    tree["imports"] = list(config.imports)
    return tree


def flat_settings(config: Config) -> dict:
    """Every setting by its dotted key: ``{"train.epochs": 30, ...}``."""
    def flatten(tree: dict, prefix: str) -> dict:
        flat = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
        return flat

    return flatten(to_dict(config), "")


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(to_dict(config))))
