"""Every setting of a run, as dataclasses; loaded from YAML plus dotted command-line overrides.

``load_config("configs/reference.yaml", ["optim.lr=3e-4"])`` returns a :class:`Config`.
Unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the key.
Values keep what was typed: YAML 1.1 would read ``no``, ``on`` or ``01`` as a boolean or a
number, but here a value becomes a boolean or a number only where the setting is one.
"""
import difflib
import os
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from colorize.errors import ColorizeError
from colorize.io import atomic_write_text


class ConfigError(ColorizeError, ValueError):
    """A setting is unknown, mistyped or out of range; the message names it."""


# The settings that take one of a few words, and those words.
CHOICES: Dict[str, Tuple[str, ...]] = {
    "data.loader": ("ffcv", "memory"),
    "data.batch_size_scope": ("process", "global"),
    "train.mixed_precision": ("auto", "no", "fp32", "bf16", "fp16"),
    "tracking.backend": ("wandb", "none"),
    "tracking.mode": ("auto", "online", "offline", "disabled"),
}


@dataclass
class DataConfig:
    dir: str = "data/cifar10"  # made by `colorize prepare`
    loader: str = "ffcv"  # ffcv | memory
    batch_size: int = 512
    batch_size_scope: str = "process"  # process: per process | global: split over processes
    hflip: bool = True  # random horizontal flip of training images
    num_workers: int = 1  # FFCV decoding threads
    os_cache: bool = True  # FFCV: share the file through the OS page cache
    train_limit: Optional[int] = None  # use only the first N training images
    eval_limit: Optional[int] = None  # use only the first N val and test images

    def __post_init__(self):
        _check_choices("data", self)
        _positive("data.batch_size", self.batch_size)
        _positive("data.num_workers", self.num_workers)
        _positive("data.train_limit", self.train_limit)
        _positive("data.eval_limit", self.eval_limit)


@dataclass
class ModelConfig:
    name: str = "fusion"
    width: int = 32  # first encoder layer; later layers use 2x and 4x
    global_hidden: int = 512
    global_dim: int = 128

    def __post_init__(self):
        for key in ("width", "global_hidden", "global_dim"):
            _positive(f"model.{key}", getattr(self, key))


@dataclass
class LossConfig:
    huber_delta: float = 1.0  # in ab units
    class_weight: float = 1.0

    def __post_init__(self):
        _positive("loss.huber_delta", self.huber_delta)
        if self.class_weight < 0:
            raise ConfigError(f"loss.class_weight must be >= 0, got {self.class_weight}")


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.0
    scale_lr_with_world_size: bool = False  # lr x number of processes

    def __post_init__(self):
        _positive("optim.lr", self.lr)


@dataclass
class TrainConfig:
    epochs: int = 30
    mixed_precision: str = "auto"  # auto: bf16 where the device computes it natively, else fp32 | no (= fp32) | bf16 | fp16
    grad_accum: int = 1
    seed: int = 0
    patience: int = 5  # epochs without val ab L1 improvement before stopping
    min_delta: float = 0.0  # improvement smaller than this does not count
    log_every: int = 20  # steps between logged train losses
    threads: Optional[int] = None  # torch threads per process; default: cores / local processes
    channels_last: bool = True  # NHWC memory layout for the convolutions (faster on CPU and GPU)
    sync_batchnorm: bool = False  # BatchNorm statistics over all processes (GPUs only)
    deterministic: bool = False  # deterministic algorithms (for exact resume on CUDA; slower)

    def __post_init__(self):
        _check_choices("train", self)
        for key in ("epochs", "grad_accum", "patience", "log_every"):
            _positive(f"train.{key}", getattr(self, key))
        _positive("train.threads", self.threads)


@dataclass
class TrackingConfig:
    backend: str = "wandb"  # wandb | none
    mode: str = "auto"  # auto | online | offline | disabled
    project: str = "colorize"
    entity: Optional[str] = None
    run_name: Optional[str] = None  # default: run.name
    group: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    grid_per_class: int = 4  # validation images per class in the colour grid

    def __post_init__(self):
        _check_choices("tracking", self)
        _positive("tracking.grid_per_class", self.grid_per_class)


@dataclass
class RunConfig:
    name: str = "reference"
    dir: Optional[str] = None  # default: runs/<name>

    @property
    def path(self) -> Path:
        return Path(self.dir if self.dir is not None else os.path.join("runs", self.name))


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


def _check_choices(section: str, settings) -> None:
    for key, allowed in CHOICES.items():
        prefix, _, name = key.partition(".")
        value = getattr(settings, name) if prefix == section else None
        if value is not None and value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def _positive(key: str, value) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{key} must be positive, got {value}")


def _known_keys(schema=Config, prefix: str = "") -> List[str]:
    keys = []
    for f in fields(schema):
        if is_dataclass(f.type):
            keys += _known_keys(f.type, f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def _explain(error: OmegaConfBaseException, origin: str) -> ConfigError:
    key = error.full_key or "?"
    if isinstance(error, ConfigKeyError):
        close = difflib.get_close_matches(key, _known_keys(), n=1)
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


def _parse_yaml(text: str, origin: str):
    try:
        return yaml.load(text, Loader=_TextLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{origin} is not valid YAML: {error}") from None


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
        node[name] = _parse_yaml(value, f"the value of override {item!r}")
    return tree


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path``, then ``key=value`` overrides."""
    merged = OmegaConf.structured(Config)
    if path is not None:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path} does not exist")
        content = _parse_yaml(Path(path).read_text(), f"config file {path}") or {}
        if not isinstance(content, dict):
            raise ConfigError(f"config file {path} must hold sections such as train: and data:")
        try:
            merged = OmegaConf.merge(merged, content)
        except OmegaConfBaseException as error:
            raise _explain(error, path) from None
    try:
        merged = OmegaConf.merge(merged, _overrides_tree(overrides))
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise _explain(error, "the command line") from None


def to_dict(config: Config) -> dict:
    """The config as plain nested dicts (for YAML files and trackers)."""
    return OmegaConf.to_container(OmegaConf.structured(config))


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.structured(config)))
