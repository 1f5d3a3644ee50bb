"""A recipe built: config + prepared data -> the network, the loss, the optimizer and the
schedule, prepared by the Accelerator (:func:`build_training`). Training, the benchmarks and
``colorize list`` build through these functions."""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional

import torch
from accelerate import Accelerator

from colorize.config import Config
from colorize.data.loaders import SplitLoader, per_process_batch_size
from colorize.data.prior import AbPrior, read_prior
from colorize.engine import checkpoint
from colorize.engine.early_stopping import EarlyStopping
from colorize.engine.runtime import Precision, sync_batchnorm
from colorize.engine.state import TrainState
from colorize.engine.step import StepMode, resolve_cuda_graphs, step_runner
from colorize.engine.stop_request import StopRequest
from colorize.engine.weight_average import WeightAverage
from colorize.errors import ConfigError
from colorize.losses import LOSSES
from colorize.models import Colorizer, create_model
from colorize.optim import build_optimizer, build_schedule, effective_batch, learning_rate


@dataclass
class Training:
    """What a run trains with: built once, prepared by the Accelerator."""

    config: Config
    accelerator: Accelerator
    precision: Precision
    manifest: dict
    loaders: Dict[str, SplitLoader]
    model: torch.nn.Module  # DDP-wrapped with several processes
    optimizer: torch.optim.Optimizer
    schedule: object
    loss: object
    state: TrainState
    effective_batch: int
    average: Optional[WeightAverage]  # with train.ema
    step_mode: StepMode  # eager from the moment a capture fails
    step: Optional[Callable] = None  # (batch, group size, whether the optimizer steps) -> loss parts
    stop: StopRequest = field(default_factory=StopRequest)  # SIGTERM, noted while fit runs

    def __post_init__(self):
        if self.step is None:
            self.step = step_runner(self)

    @property
    def plain_model(self) -> Colorizer:
        return self.accelerator.unwrap_model(self.model)

    @property
    def evaluated_model(self) -> Colorizer:
        """What is validated, saved as best and tested: the weight average, if the run keeps one."""
        return self.plain_model if self.average is None else self.average.model

    @property
    def checkpointed(self) -> Dict[str, checkpoint.Stateful]:
        """The trainer's own objects that ``last/`` keeps beside Accelerate's."""
        return {"train": self.state} | ({} if self.average is None else {"average": self.average})


def model_head(config: Config) -> str:
    """The recipe network's ``model.head`` (a network without one regresses ab)."""
    return getattr(config.model.settings, "head", "ab")


def _loss_trait(config: Config, name: str, default):
    """What the recipe's loss class declares as ``name`` (``head``, ``needs_prior``), else ``default``."""
    return getattr(LOSSES.entry(config.loss.name).factory, name, default)


def data_prior(config: Config, manifest: dict, data_dir: Path) -> Optional[AbPrior]:
    """The ab prior of the prepared data in ``data_dir``, read if the model's head or the loss uses it."""
    if model_head(config) == "bins" or _loss_trait(config, "needs_prior", False):
        return read_prior(data_dir, manifest)
    return None


def check_loss_fits_head(config: Config) -> None:
    """Refuse, by name, a loss that scores another head than the network has."""
    head = model_head(config)
    scored = _loss_trait(config, "head", head)
    if scored != head:
        raise ConfigError(f"loss.name={config.loss.name} scores a network's {scored} head, and model.head is "
                          f"{head}: set model.head={scored}, or choose a loss for model.head={head}")


def build_loss(config: Config, prior: Optional[AbPrior], device: torch.device):
    """The config's loss, given the ab prior (on ``device``) if it needs it."""
    if _loss_trait(config, "needs_prior", False):
        return LOSSES.build(config.loss.name, config.loss.settings, AbPrior(*(t.to(device) for t in prior)))
    return LOSSES.build(config.loss.name, config.loss.settings)


def build_model(config: Config, manifest: dict, prior: Optional[AbPrior]) -> Colorizer:
    """The config's network for the data's classes and resolution (a bin head gets the prior's bins)."""
    return create_model(config.model.name, config.model.settings, num_classes=len(manifest["classes"]),
                        resolution=manifest["resolution"], bins=None if prior is None else prior.centres)


def _training_layout(model: Colorizer, config: Config, accelerator: Accelerator) -> Colorizer:
    """``model`` in the layout the config trains it in."""
    if config.train.sync_batchnorm:
        model = sync_batchnorm(model, accelerator)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.train.compile:
        model.compile()  # in place: the saved weights keep their names
    return model


def build_training(config: Config, accelerator: Accelerator, precision: Precision,
                   loaders: Dict[str, SplitLoader], manifest: dict) -> Training:
    """Model, optimizer, schedule and loss of ``config``, prepared by ``accelerator``."""
    world = accelerator.num_processes
    check_loss_fits_head(config)
    prior = data_prior(config, manifest, Path(config.data.dir))
    model = _training_layout(build_model(config, manifest, prior), config, accelerator)
    lr = learning_rate(config.optim.settings, world)
    optimizer = build_optimizer(config.optim.name, config.optim.settings, model, lr, accelerator.device)
    steps_per_epoch = math.ceil(len(loaders["train"]) / config.train.grad_accum)
    schedule = build_schedule(config.schedule.name, config.schedule.settings, optimizer,
                              total_steps=steps_per_epoch * config.train.epochs)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    state = TrainState(EarlyStopping(config.train.patience, config.train.min_delta))
    average = WeightAverage(accelerator.unwrap_model(model), config.train.ema) if config.train.ema else None
    batch = effective_batch(per_process_batch_size(config.data, world), world, config.train.grad_accum)
    step_mode = resolve_cuda_graphs(config.train.cuda_graphs, accelerator.device, world, precision.name,
                                    config.train.grad_accum, config.train.compile)
    return Training(config, accelerator, precision, manifest, loaders, model, optimizer, schedule,
                    build_loss(config, prior, accelerator.device), state, batch, average, step_mode)
