"""Optimizers (``optim.name``) and learning-rate schedules (``schedule.name``) by name, and
the effective batch.

Optimizers put no weight decay on norms and biases. An optimizer factory is called as
``factory(settings, groups, lr)``, with ``device=`` the parameters' training device too when
it has a ``device`` parameter; the built-in ones use torch's fused kernels on CUDA and foreach
kernels elsewhere (see :func:`kernels`). A schedule is a factor of ``optim.lr``
as a function of the optimizer step and the run's total steps, stepped once per optimizer step;
it saves only the step count, so a resumed run follows the same sequence (a longer one from the
step reached when the resume raises ``train.epochs``).
"""
import inspect
import math
from dataclasses import dataclass
from typing import Callable, List, Optional

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from colorize.errors import ConfigError, check_not_negative, check_positive
from colorize.registry import Registry

OPTIMIZERS = Registry("optimizer", "optim")
SCHEDULES = Registry("schedule", "schedule")


@dataclass
class OptimizerSettings:
    """Settings every optimizer has."""

    lr: float = 1e-3
    weight_decay: float = 0.0  # not applied to norms and biases
    scale_lr_with_world_size: bool = False  # lr x processes (only with a per-process batch)

    def __post_init__(self):
        check_positive("optim.lr", self.lr)
        if self.lr > torch.finfo(torch.float32).max:
            raise ConfigError(f"optim.lr={self.lr} is beyond float32, in which the optimizers compute; "
                              "pick a learning rate such as 1e-3")
        check_not_negative("optim.weight_decay", self.weight_decay, "0: no decay")


@dataclass
class AdamSettings(OptimizerSettings):
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self):
        super().__post_init__()
        for key in ("beta1", "beta2"):
            if not 0 <= getattr(self, key) < 1:
                raise ConfigError(f"optim.{key} must be in [0, 1), got {getattr(self, key)}")
        check_not_negative("optim.eps", self.eps)


@dataclass
class AdamWSettings(AdamSettings):
    weight_decay: float = 0.01


@dataclass
class SGDSettings(OptimizerSettings):
    lr: float = 0.05
    momentum: float = 0.9  # Nesterov

    def __post_init__(self):
        super().__post_init__()
        check_not_negative("optim.momentum", self.momentum)


def parameter_groups(model: nn.Module, weight_decay: float) -> List[dict]:
    """Weights of convolutions and linear layers decay; norms and biases (1-D tensors) do not.
    Without weight decay, one group."""
    if weight_decay == 0:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    decay, keep = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decay if parameter.ndim > 1 else keep).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": keep, "weight_decay": 0.0}]


def kernels(device: torch.device) -> dict:
    """How a built-in optimizer steps parameters on ``device``: fused on CUDA (one launch per
    step, step counts on the device), foreach elsewhere (on the CPU, exactly the per-parameter
    loop's numbers)."""
    return {"fused": True} if device.type == "cuda" else {"foreach": True}


@OPTIMIZERS.register("adam", AdamSettings)
def adam(settings: AdamSettings, groups: List[dict], lr: float,
         device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.Adam(groups, lr=lr, betas=(settings.beta1, settings.beta2), eps=settings.eps,
                            **kernels(device))


@OPTIMIZERS.register("adamw", AdamWSettings)
def adamw(settings: AdamWSettings, groups: List[dict], lr: float,
          device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=lr, betas=(settings.beta1, settings.beta2), eps=settings.eps,
                             **kernels(device))


@OPTIMIZERS.register("sgd", SGDSettings)
def sgd(settings: SGDSettings, groups: List[dict], lr: float,
        device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=settings.momentum, nesterov=settings.momentum > 0,
                           **kernels(device))


def build_optimizer(name: str, settings: OptimizerSettings, model: nn.Module, lr: float,
                    device: Optional[torch.device] = None) -> torch.optim.Optimizer:
    """Optimizer ``name`` of ``model``'s parameters, which train on ``device`` (default: where
    they are now; pass the device they will be moved to before training)."""
    factory = OPTIMIZERS.entry(name).factory
    groups = parameter_groups(model, settings.weight_decay)
    if "device" not in inspect.signature(factory).parameters:
        return factory(settings, groups, lr)
    return factory(settings, groups, lr, device=device or next(model.parameters()).device)


def effective_batch(batch_per_process: int, processes: int, grad_accum: int) -> int:
    """Images per optimizer step."""
    return batch_per_process * processes * grad_accum


def learning_rate(settings: OptimizerSettings, processes: int) -> float:
    """``optim.lr``, times the processes with ``optim.scale_lr_with_world_size`` (which the
    config allows only with a per-process batch)."""
    return settings.lr * (processes if settings.scale_lr_with_world_size else 1)


# --- schedules: factor(step, total_steps) of the optimizer's lr --------------------------------

@dataclass
class OneCycleSettings:
    warmup: float = 0.3  # fraction of the steps rising from lr / start_div to lr
    start_div: float = 25.0
    end_div: float = 1e4  # the last step's lr is lr / end_div

    def __post_init__(self):
        _check_fraction("schedule.warmup", self.warmup)
        check_positive("schedule.start_div", self.start_div)
        check_positive("schedule.end_div", self.end_div)


@dataclass
class CosineSettings:
    warmup: float = 0.05  # fraction of the steps rising linearly from 0 to lr
    end_factor: float = 0.0  # the last step's lr is lr x end_factor

    def __post_init__(self):
        _check_fraction("schedule.warmup", self.warmup)
        if not 0 <= self.end_factor <= 1:
            raise ConfigError(f"schedule.end_factor must be in [0, 1], got {self.end_factor}")


def _check_fraction(key: str, value: float) -> None:
    if not 0 <= value < 1:
        raise ConfigError(f"{key} must be in [0, 1), got {value}")


def _cosine(start: float, end: float, progress: float) -> float:
    return end + (start - end) * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0))) / 2


@SCHEDULES.register("constant")
def constant(settings, step: int, total: int) -> float:
    return 1.0


@SCHEDULES.register("one_cycle", OneCycleSettings)
def one_cycle(settings: OneCycleSettings, step: int, total: int) -> float:
    """Smith's one cycle with cosine phases (as ``torch.optim.lr_scheduler.OneCycleLR``)."""
    rise = settings.warmup * total
    if step < rise:
        return _cosine(1 / settings.start_div, 1.0, step / rise)
    return _cosine(1.0, 1 / settings.end_div, (step - rise) / max(total - 1 - rise, 1))


@SCHEDULES.register("cosine", CosineSettings)
def cosine(settings: CosineSettings, step: int, total: int) -> float:
    """Linear warm-up, then a cosine down to ``end_factor``."""
    rise = settings.warmup * total
    if step < rise:
        return (step + 1) / (rise + 1)
    return _cosine(1.0, settings.end_factor, (step - rise) / max(total - 1 - rise, 1))


class StepSchedule(LambdaLR):
    """lr = the optimizer's lr x ``factor(step, total_steps)``. Its state is the step count
    only: a resumed run rebuilds it from the config and continues the same sequence."""

    def __init__(self, optimizer: torch.optim.Optimizer, factor: Callable[[int, int], float], total_steps: int):
        self.total_steps = total_steps
        super().__init__(optimizer, lambda step: factor(min(step, total_steps - 1), total_steps))

    def state_dict(self) -> dict:
        return {"step": self.last_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.last_epoch = state["step"]
        for group, base, factor in zip(self.optimizer.param_groups, self.base_lrs, self.lr_lambdas):
            group["lr"] = base * factor(self.last_epoch)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]


def build_schedule(name: str, settings, optimizer: torch.optim.Optimizer, total_steps: int) -> StepSchedule:
    factor = SCHEDULES.entry(name).factory
    return StepSchedule(optimizer, lambda step, total: factor(settings, step, total), total_steps)
