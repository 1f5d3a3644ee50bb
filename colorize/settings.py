"""The fixed sections of a recipe (``run``, ``data``, ``train``, ``tracking``) as dataclasses,
the words their choice settings take, and which settings define what a run learns.

The sections that name a registered component (``model``, ``loss``, ``optim``, ``schedule``)
and the loading of YAML files are :mod:`colorize.config`'s.
"""
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from colorize.errors import ConfigError, check_not_negative, check_positive

LOADERS = ("ffcv", "memory")  # data.loader's kinds (colorize.data.loaders); auto picks one
PRECISIONS = ("no", "fp32", "bf16", "fp16")  # train.mixed_precision besides auto (colorize.engine.runtime)

# The settings that take one of a few words, and those words.
CHOICES: Dict[str, Tuple[str, ...]] = {
    "data.loader": ("auto", *LOADERS),
    "data.batch_size_scope": ("process", "global"),
    "train.mixed_precision": ("auto", *PRECISIONS),
    "train.cuda_graphs": ("auto", "on", "off"),
    "tracking.backend": ("wandb", "none"),
    "tracking.mode": ("auto", "online", "offline", "disabled"),
}

# Settings that say where and how a run is computed, written and watched, not what it learns
# (dotted keys, or prefixes ending in a dot). Runs that differ only in these and in train.seed
# are seeds of one recipe (colorize report).
INCIDENTAL = ("run.", "tracking.", "data.dir", "data.loader", "data.num_workers", "data.os_cache",
              "train.threads", "train.log_every", "train.checkpoint_every", "train.channels_last",
              "train.compile", "train.cuda_graphs", "train.deterministic")
# Settings a resumed run may change besides those: how long it trains, its precision, and the
# learning rate from there on. Every other setting defines the run and must stay.
FREE_ON_RESUME = INCIDENTAL + ("train.epochs", "train.patience", "train.min_delta", "train.mixed_precision",
                               "optim.lr")


def is_setting_among(key: str, settings: Tuple[str, ...]) -> bool:
    """Whether the dotted ``key`` is one of ``settings`` (keys, or prefixes ending in a dot)."""
    return key in settings or any(key.startswith(prefix) for prefix in settings if prefix.endswith("."))


@dataclass
class DataConfig:
    dir: str = "data/cifar10"  # made by `colorize prepare`
    loader: str = "auto"  # auto: memory where the split fits, else ffcv | ffcv | memory
    batch_size: int = 512
    batch_size_scope: str = "process"  # process: per process | global: split over processes
    hflip: bool = True  # random horizontal flip of training images
    shift: int = 0  # move training images by up to this many pixels along each axis (mirrored edges)
    num_workers: int = 1  # FFCV decoding threads
    os_cache: bool = True  # FFCV: share the file through the OS page cache
    train_limit: Optional[int] = None  # use only the first N training images
    eval_limit: Optional[int] = None  # use only the first N val and test images

    def __post_init__(self):
        _check_choices("data", self)
        check_positive("data.batch_size", self.batch_size)
        check_positive("data.num_workers", self.num_workers)
        check_positive("data.train_limit", self.train_limit)
        check_positive("data.eval_limit", self.eval_limit)
        if self.shift < 0:
            raise ConfigError(f"data.shift must be 0 (off) or a number of pixels, got {self.shift}")


@dataclass
class TrainConfig:
    epochs: int = 30
    # auto: bf16 where the device computes it natively, else fp32 | no (= fp32) | bf16 | fp16
    mixed_precision: str = "auto"
    grad_accum: int = 1
    seed: int = 0
    patience: int = 5  # epochs without val ab L1 improvement before stopping
    min_delta: float = 0.0  # improvement smaller than this does not count
    # the best epoch is chosen among those whose val colourfulness ratio reaches this, once one does
    min_colorfulness: float = 0.0
    log_every: int = 20  # batches between logged train losses
    threads: Optional[int] = None  # torch threads per process; default: cores / local processes
    channels_last: bool = True  # NHWC memory layout for the convolutions (faster on CPU and GPU)
    sync_batchnorm: bool = False  # BatchNorm statistics over all processes (GPUs only)
    deterministic: bool = False  # deterministic algorithms (for exact resume on CUDA; slower)
    compile: bool = False  # torch.compile the model
    cuda_graphs: str = "auto"  # auto | on: capture the training step in a CUDA graph where possible | off
    ema: float = 0.0  # decay of a moving average of the weights that is validated, saved and tested; 0: off
    checkpoint_every: int = 0  # optimizer steps between checkpoints of last/ within an epoch; 0: off

    def __post_init__(self):
        _check_choices("train", self)
        for key in ("epochs", "grad_accum", "patience", "log_every"):
            check_positive(f"train.{key}", getattr(self, key))
        check_positive("train.threads", self.threads)
        check_not_negative("train.min_delta", self.min_delta, "0: every improvement counts")
        check_not_negative("train.min_colorfulness", self.min_colorfulness, "off")
        if not 0 <= self.ema < 1:
            raise ConfigError(f"train.ema must be at least 0 (off) and below 1, got {self.ema}")
        if self.checkpoint_every < 0:
            raise ConfigError(f"train.checkpoint_every must be 0 (off) or a number of optimizer steps, "
                              f"got {self.checkpoint_every}")


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
        check_positive("tracking.grid_per_class", self.grid_per_class)


@dataclass
class RunConfig:
    name: str = "reference"
    dir: Optional[str] = None  # default: runs/<name>

    def __post_init__(self):
        if os.path.isabs(self.name) or any(part in ("", ".", "..") for part in self.name.split("/")):
            raise ConfigError(f"run.name={self.name!r} must name a folder inside runs/ (such as lr3e-4 or "
                              "sweep/lr3e-4); for a run elsewhere, set run.dir")

    @property
    def path(self) -> Path:
        return Path(self.dir if self.dir is not None else os.path.join("runs", self.name))



def _check_choices(section: str, settings) -> None:
    for key, allowed in CHOICES.items():
        prefix, _, name = key.partition(".")
        value = getattr(settings, name) if prefix == section else None
        if value is not None and value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")

