"""``colorize train``: the training loop on Accelerate, in the steps a recipe reads as:
build, resume, fit, test.

One process or many (DDP under ``accelerate launch`` or ``torchrun``); the model, loss,
optimizer and schedule named by the config; mixed precision and gradient accumulation;
validation every epoch with early stopping on val ab L1, agreed by every process; ``last/``
and ``best/`` every epoch, and ``last/`` also every ``train.checkpoint_every`` optimizer steps
within an epoch (a resume goes on at the epoch's next batch); and, at the end, the test
metrics of the best model. Everything a run produces lands in its run directory
(:mod:`colorize.run_dir`), saved so that a crash at any instant loses nothing
(:mod:`colorize.engine.checkpoint`). Each run leaves the process as it found it
(:func:`colorize.engine.runtime.run_scope`), so many can run one after another in one process.
"""
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from colorize.config import Config, ConfigError, flat_settings, load_config, load_run_config, save_config
from colorize.data.loaders import Batch, SplitLoader, build_loaders, per_process_batch_size
from colorize.data.manifest import read_manifest
from colorize.data.prior import AbPrior, read_prior
from colorize.engine import checkpoint
from colorize.engine.early_stopping import EarlyStopping
from colorize.engine.evaluate import evaluate
from colorize.engine.runtime import (Precision, cpu_description, create_accelerator, parameter_checksums,
                                     precision_label, run_scope, sync_batchnorm, sync_buffers)
from colorize.engine.step import (StepMode, learning_rate_now, plain_learning_rates, resolve_cuda_graphs,
                                  step_runner)
from colorize.engine.visuals import EpochVisuals
from colorize.engine.weight_average import WeightAverage
from colorize.errors import ColorizeError
from colorize.io import atomic_write_text
from colorize.models import Colorizer, create_model
from colorize.models.saved import load_model, write_model
from colorize.optim import build_optimizer, build_schedule, effective_batch, learning_rate
from colorize.registry import LOSSES
from colorize.run_dir import BEST, CONFIG, LAST, METRICS
from colorize.tracking import RunTracker, Tracking, resolve_tracking


class TrainingDiverged(ColorizeError):
    """The loss became NaN or infinite."""


class RunExists(ColorizeError):
    """A new run would overwrite an existing one."""


@dataclass
class EpochProgress:
    """How far into an epoch a mid-epoch checkpoint is: the batches trained on, and the epoch's
    running sums so far, over all processes."""

    batches: int  # of the epoch, trained on
    world: int  # the processes that trained them (each one's share of the epoch depends on their number)
    seen: torch.Tensor  # (samples,) int32 on the CPU: how often each training sample was trained on
    total: dict  # the epoch's loss sums (_Window.state)
    window: dict  # those since the last log line


@dataclass
class TrainState:
    """Progress saved in every ``last/`` checkpoint."""

    early_stopping: EarlyStopping
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: List[dict] = field(default_factory=list)
    tracking_id: Optional[str] = None  # the W&B run to continue
    progress: Optional[EpochProgress] = None  # how far into epoch ``epoch``: in mid-epoch checkpoints only

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "history": self.history,
                "early_stopping": self.early_stopping.state_dict(), "tracking_id": self.tracking_id,
                "progress": None if self.progress is None else asdict(self.progress)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.tracking_id = state["tracking_id"]
        progress = state["progress"]
        self.progress = None if progress is None else EpochProgress(**progress)


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
    step_mode: StepMode
    step: Optional[Callable] = None  # (batch, group size, whether the optimizer steps) -> loss parts; set by build

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


class _Window:
    """Loss sums and timings since the last log line (or the epoch's start). The sums stay on the
    device, so adding a batch never waits for it; ``read`` sums them over processes. The loss's
    parts are whatever it returns."""

    def __init__(self, device: torch.device):
        self.device = device
        self.parts: List[str] = []
        self.sums: Optional[torch.Tensor] = None
        self.images = 0
        self.wait = 0.0
        self.started = time.perf_counter()

    def add(self, parts: List[str], sums: torch.Tensor, images: int, wait: float) -> None:
        """Add a batch of ``images``: ``sums``, its loss ``parts`` times its images (float64)."""
        if self.sums is None:
            self.parts, self.sums = parts, sums.clone()
        else:
            self.sums += sums
        self.images += images
        self.wait += wait

    @classmethod
    def carried_on(cls, device: torch.device, state: dict) -> "_Window":
        """A window that goes on from one's :meth:`state`."""
        window = cls(device)
        window.parts, window.images, window.wait = list(state["parts"]), state["images"], state["wait"]
        if window.parts:
            window.sums = torch.tensor(state["sums"], dtype=torch.float64, device=device)
        window.started -= state["seconds"]
        return window

    def _global_sums(self, accelerator: Accelerator) -> Tuple[List[float], int]:
        """(the loss sums, the images) over all processes."""
        sums = self.sums if self.sums is not None else torch.zeros(0, dtype=torch.float64, device=self.device)
        local = torch.cat((sums, sums.new_full((1,), self.images)))
        *totals, images = accelerator.reduce(local, reduction="sum").tolist()
        return totals, int(images)

    def state(self, accelerator: Accelerator) -> dict:
        """The window so far, its sums over all processes (every process calls this)."""
        totals, images = self._global_sums(accelerator)
        return {"parts": self.parts, "sums": totals, "images": images, "wait": self.wait,
                "seconds": time.perf_counter() - self.started}

    def read(self, accelerator: Accelerator) -> Dict[str, float]:
        """Global mean losses (``loss`` and ``loss_<part>``), images/s and the fraction of time
        spent waiting for data."""
        totals, images = self._global_sums(accelerator)
        seconds = time.perf_counter() - self.started
        values = {"loss" if name == "total" else f"loss_{name}": total / max(images, 1)
                  for name, total in zip(self.parts, totals)}
        values.update(images=images, seconds=seconds, images_per_s=images / max(seconds, 1e-9),
                      data_wait_fraction=self.wait / max(seconds, 1e-9))
        return values


def _check_finite(values: Dict[str, float], epoch: int, step: int, run_dir: Path) -> None:
    if not math.isfinite(values["loss"]):
        raise TrainingDiverged(
            f"the training loss became {values['loss']} in epoch {epoch} (step {step}); stopped. "
            f"The last good checkpoint is {run_dir / LAST} (resume with colorize train "
            f"--resume {run_dir}); try a lower optim.lr or train.mixed_precision=no"
        )


def _accumulation_groups(batches: int, accum: int, first: int = 0):
    """For each batch of an epoch from batch ``first`` on: (its index, the size of its
    accumulation group, whether the optimizer steps after it). Groups start at ``first``; the
    last one of an epoch may be smaller: it is applied at the epoch's end."""
    for index in range(first, batches):
        start = index - (index - first) % accum
        end = min(start + accum, batches)
        yield index, end - start, index + 1 == end


class _EpochSums:
    """One process's running sums of an epoch: its losses (``total``), those since the last log
    line (``window``), and how often each sample was trained on. A resumed epoch's sums go on, in
    the main process only, from the sums over all processes that its checkpoint saved."""

    def __init__(self, accelerator: Accelerator, samples: int, saved: Optional[EpochProgress]):
        device = accelerator.device
        carried = saved if accelerator.is_main_process else None
        self.seen = (torch.zeros(samples, dtype=torch.int32, device=device) if carried is None
                     else carried.seen.to(device))
        self.total = _Window(device) if carried is None else _Window.carried_on(device, carried.total)
        self.window = _Window(device) if carried is None else _Window.carried_on(device, carried.window)

    def add(self, batch: Batch, losses: Dict[str, torch.Tensor], waited: float) -> None:
        """Add a batch, in a few device operations that never wait for it."""
        self.seen.index_add_(0, batch.index, torch.ones_like(batch.index, dtype=torch.int32))
        parts, images = list(losses), len(batch.l)
        sums = torch.stack([losses[name].detach() for name in parts]).double() * images
        self.window.add(parts, sums, images, waited)
        self.total.add(parts, sums, images, waited)

    def progress(self, accelerator: Accelerator, batches: int) -> EpochProgress:
        """The epoch so far, after ``batches`` batches (every process calls this)."""
        seen = accelerator.reduce(self.seen, reduction="sum").cpu()
        return EpochProgress(batches, accelerator.num_processes, seen, self.total.state(accelerator),
                             self.window.state(accelerator))

    def coverage(self, accelerator: Accelerator) -> Dict[str, int]:
        """How many samples the epoch trained on once, not at all, and more than once."""
        seen = accelerator.reduce(self.seen, reduction="sum")
        return {"samples_seen_once": int((seen == 1).sum()), "samples_unseen": int((seen == 0).sum()),
                "samples_repeated": int((seen > 1).sum())}


def _save_within_epoch(training: Training, sums: _EpochSums, batches: int) -> None:
    """Write ``last/`` with how far into the epoch the run is (every process calls this)."""
    training.state.progress = sums.progress(training.accelerator, batches)
    checkpoint.save_last(training.accelerator, training.config.run.path, training.checkpointed)
    training.state.progress = None


def train_epoch(training: Training, epoch: int) -> Dict[str, float]:
    """One pass over the training split (the rest of it, after a mid-epoch checkpoint); returns
    the epoch's global means and throughput."""
    model, accelerator, config, loader = training.model, training.accelerator, training.config, training.loaders["train"]
    state, every = training.state, config.train.checkpoint_every
    saved, state.progress = state.progress, None
    first = 0 if saved is None else saved.batches
    model.train()
    loader.set_epoch(epoch, first)
    sums = _EpochSums(accelerator, loader.num_samples, saved)
    bar = tqdm(total=len(loader), initial=first, desc=f"epoch {epoch + 1}/{config.train.epochs}", unit="batch",
               disable=not accelerator.is_local_main_process, leave=False, dynamic_ncols=True)
    batches = iter(loader)
    for index, group_size, steps in _accumulation_groups(len(loader), config.train.grad_accum, first):
        waited = time.perf_counter()
        batch = next(batches)
        waited = time.perf_counter() - waited
        losses = training.step(batch, group_size, steps)
        sums.add(batch, losses, waited)
        bar.update()
        if (index + 1) % config.train.log_every == 0 or index + 1 == len(loader):
            values = sums.window.read(accelerator)
            _check_finite(values, epoch + 1, state.step, config.run.path)
            accelerator.log({f"train/{k}": v for k, v in values.items() if k not in ("images", "seconds")}
                            | {"train/lr": learning_rate_now(training.optimizer), "epoch": epoch + 1},
                            step=state.step)
            bar.set_postfix(loss=f"{values['loss']:.3f}", img_s=f"{values['images_per_s']:.0f}")
            sums.window = _Window(accelerator.device)
        # every checkpoint_every steps, but for the epoch's last (fit saves last/ after it)
        if steps and every and state.step % every == 0 and index + 1 < len(loader):
            _save_within_epoch(training, sums, index + 1)
    bar.close()
    return sums.total.read(accelerator) | sums.coverage(accelerator) | {"lr": learning_rate_now(training.optimizer)}


# --- build ---------------------------------------------------------------------------------------

def _model_head(config: Config) -> str:
    """The recipe network's ``model.head`` (a network without one regresses ab)."""
    return getattr(config.model.settings, "head", "ab")


def _loss_trait(config: Config, name: str, default):
    """What the recipe's loss class declares as ``name`` (``head``, ``needs_prior``), else ``default``."""
    return getattr(LOSSES.entry(config.loss.name).factory, name, default)


def data_prior(config: Config, manifest: dict, data_dir: Path) -> Optional[AbPrior]:
    """The ab prior of the prepared data in ``data_dir``, read if the model's head or the loss uses it."""
    if _model_head(config) == "bins" or _loss_trait(config, "needs_prior", False):
        return read_prior(data_dir, manifest)
    return None


def check_loss_fits_head(config: Config) -> None:
    """Refuse, by name, a loss that scores another head than the network has."""
    head = _model_head(config)
    scored = _loss_trait(config, "head", head)
    if scored != head:
        raise ConfigError(f"loss.name={config.loss.name} scores a network's {scored} head, and model.head is "
                          f"{head}: set model.head={scored}, or choose a loss for model.head={head}")


def build_loss(config: Config, prior: Optional[AbPrior], device: torch.device):
    """The config's loss, given the ab prior (on ``device``) if it needs it."""
    if _loss_trait(config, "needs_prior", False):
        return LOSSES.build(config.loss.name, config.loss.settings, AbPrior(*(t.to(device) for t in prior)))
    return LOSSES.build(config.loss.name, config.loss.settings)


def recipe_model(config: Config, manifest: dict, prior: Optional[AbPrior]) -> Colorizer:
    """The config's network for the data's classes and resolution (a bin head gets the prior's bins)."""
    return create_model(config.model.name, config.model.settings, num_classes=len(manifest["classes"]),
                        resolution=manifest["resolution"], bins=None if prior is None else prior.centres)


def build_model(config: Config, manifest: dict, accelerator: Accelerator, prior: Optional[AbPrior]) -> Colorizer:
    """The config's model for the data's classes and resolution, in the layout the config asks."""
    model = recipe_model(config, manifest, prior)
    if config.train.sync_batchnorm:
        model = sync_batchnorm(model, accelerator)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if config.train.compile:
        model.compile()  # in place: the saved weights keep their names
    return model


def build(config: Config, accelerator: Accelerator, precision: Precision,
          loaders: Dict[str, SplitLoader], manifest: dict) -> Training:
    """Model, optimizer, schedule and loss of ``config``, prepared by ``accelerator``."""
    world = accelerator.num_processes
    check_loss_fits_head(config)
    prior = data_prior(config, manifest, Path(config.data.dir))
    model = build_model(config, manifest, accelerator, prior)
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


# --- resume --------------------------------------------------------------------------------------

# The settings a resumed run may change: how long it trains, where it is written and tracked,
# where the prepared data now lie, how it is computed, and the learning rate from here on. Every
# other setting defines the run (what it learns from and in which order) and must stay.
_FREE_ON_RESUME = ("run.", "tracking.", "train.epochs", "train.patience", "train.min_delta", "train.log_every",
                   "train.threads", "train.checkpoint_every", "train.mixed_precision", "train.channels_last",
                   "train.compile", "train.cuda_graphs", "train.deterministic", "data.dir", "data.loader", "data.num_workers",
                   "data.os_cache", "optim.lr")


def _check_resume_keeps(previous: Config, config: Config) -> None:
    """Refuse, by name, a resume that changes a setting that defines the run."""
    old, new = flat_settings(previous), flat_settings(config)
    for key in sorted(old.keys() | new.keys()):
        if not key.startswith(_FREE_ON_RESUME) and old.get(key) != new.get(key):
            raise ConfigError(f"{key} cannot change when resuming a run ({old.get(key)!r} -> {new.get(key)!r}); "
                              f"start a new run with --config instead")


def _resume_plan(previous: Config, config: Config, state: TrainState, batches: int) -> Tuple[bool, str]:
    """(whether training goes on, the message that says what a resume does), for a run of
    ``batches`` batches per epoch. Raising ``train.epochs`` on a run that stopped early restarts
    its early-stopping count."""
    early, epochs, done = state.early_stopping, config.train.epochs, state.epoch
    if early.should_stop and epochs > previous.train.epochs:
        early.bad_epochs = 0
        return True, (f"the run stopped early after epoch {done}; train.epochs is now {epochs}: training "
                      f"on with early stopping restarted (patience {early.patience})")
    if early.should_stop:
        return False, (f"the run is complete: it stopped early after epoch {done}, {early.bad_epochs} epochs "
                       "without improvement; raise train.epochs or train.patience to train on")
    if done >= epochs:
        return False, f"the run is complete: it trained all {epochs} epochs; raise train.epochs to train on"
    if early.bad_epochs >= previous.train.patience:
        return True, (f"the run stopped early after epoch {done}; train.patience is now {early.patience}: "
                      f"training on to epoch {epochs}")
    if done >= previous.train.epochs:
        return True, f"the run trained all {done} epochs; train.epochs is now {epochs}: training on"
    if state.progress is not None:
        return True, f"resuming epoch {done + 1} at batch {state.progress.batches + 1} of {batches}"
    return True, f"resuming after epoch {done} of {epochs}"


def _check_same_world(state: TrainState, world: int, run_dir: Path) -> None:
    """Refuse to go on with an epoch's rest on another number of processes than began it."""
    if state.progress is not None and state.progress.world != world:
        raise checkpoint.CheckpointError(
            f"{run_dir}/{LAST} was saved within epoch {state.epoch + 1} by {state.progress.world} processes, "
            f"which share that epoch's samples among them; resume it with {state.progress.world} processes")


def _say_recovered(run_dir: Path, recovered: Optional[str]) -> None:
    if recovered:
        print(f"{run_dir}: the run stopped while saving; {recovered}", flush=True)


def resume(training: Training, previous: Config) -> bool:
    """Restore ``last/``, after putting back whatever a crash interrupted (the config's learning
    rate applies from here on); whether the run trains on."""
    run_dir, accelerator, state = training.config.run.path, training.accelerator, training.state
    if accelerator.is_main_process:
        _say_recovered(run_dir, checkpoint.recover_last(run_dir))
    accelerator.wait_for_everyone()
    checkpoint.load_last(accelerator, run_dir, training.checkpointed)
    plain_learning_rates(training.optimizer.optimizer)  # a captured run saved them in tensors
    if accelerator.is_main_process:
        _say_recovered(run_dir, checkpoint.recover_best(run_dir, state.early_stopping.best_epoch))
    going_on, message = _resume_plan(previous, training.config, state, len(training.loaders["train"]))
    if going_on:
        _check_same_world(state, training.accelerator.num_processes, run_dir)
    accelerator.print(f"{run_dir}: {message}")
    return going_on


# --- fit -----------------------------------------------------------------------------------------

def _write_metrics(training: Training, test: Optional[dict] = None) -> dict:
    config, state, accelerator, precision = training.config, training.state, training.accelerator, training.precision
    history = state.history
    train_seconds = sum(h["train"]["seconds"] for h in history)
    train_images = sum(h["train"]["images"] for h in history)
    early = state.early_stopping
    metrics = {
        "run": config.run.name,
        "world_size": accelerator.num_processes,
        "batch_size_per_process": per_process_batch_size(config.data, accelerator.num_processes),
        "effective_batch_size": training.effective_batch,
        "mixed_precision": precision.name,
        "mixed_precision_reason": precision.reason,
        "cuda_graphs": training.step_mode.captured,
        "device": str(accelerator.device),
        "cpu": cpu_description(),
        "torch_threads": torch.get_num_threads(),
        "epochs_run": state.epoch,
        "stopped_early": early.should_stop,
        "best_epoch": early.best_epoch,
        "best_val_ab_l1": early.best,
        "train_images_per_s": train_images / max(train_seconds, 1e-9),
        "wall_time_s": sum(h["seconds"] for h in history),
        "history": history,
    }
    if test is not None:
        metrics["test"] = test
    atomic_write_text(config.run.path / METRICS, json.dumps(metrics, indent=2) + "\n")
    return metrics


def _stage_best(training: Training, epoch: int) -> None:
    """Write the model of ``epoch``, the new best, beside ``best/`` (main process)."""
    config, manifest = training.config, training.manifest
    write_model(training.evaluated_model, checkpoint.best_staging(config.run.path), config.model.name,
                config.model.settings, manifest["classes"], manifest["resolution"], epoch=epoch)


def fit(training: Training, visuals: Optional[EpochVisuals]) -> None:
    """Train epoch after epoch until ``train.epochs`` or early stopping, saving as it goes."""
    config, accelerator, state = training.config, training.accelerator, training.state
    plain_model = training.plain_model
    for epoch in range(state.epoch, config.train.epochs):
        if state.early_stopping.should_stop:
            break
        train_values = train_epoch(training, epoch)
        trained = time.perf_counter()
        sync_buffers(plain_model, accelerator)
        if training.average is not None:
            sync_buffers(training.average.model, accelerator)
        checksums = parameter_checksums(plain_model, accelerator)
        val = evaluate(training.evaluated_model, training.loaders["val"], accelerator)
        vivid_enough = val["colorfulness_ratio"] >= config.train.min_colorfulness
        new_best = state.early_stopping.update(val["ab_l1"], epoch + 1, vivid_enough)
        if new_best and accelerator.is_main_process:
            _stage_best(training, epoch + 1)
        state.epoch = epoch + 1
        state.history.append({"epoch": epoch + 1, "step": state.step, "train": train_values, "val": val,
                              "model_checksums": checksums,
                              "seconds": train_values["seconds"] + time.perf_counter() - trained})
        accelerator.log({f"val/{k}": v for k, v in val.items()} | {"epoch": epoch + 1}, step=state.step)
        if visuals is not None:
            visuals.grid(training.evaluated_model, epoch + 1, state.step)
        checkpoint.save_last(accelerator, config.run.path, training.checkpointed)
        if new_best and accelerator.is_main_process:
            checkpoint.promote_best(config.run.path)
        if accelerator.is_main_process:
            _write_metrics(training)
            _print_epoch(state.history[-1], state.early_stopping)
        if state.early_stopping.should_stop:
            accelerator.set_trigger()
        if accelerator.check_trigger():
            print(f"[process {accelerator.process_index}] stopping early after epoch {epoch + 1}: val ab L1 "
                  f"has not improved for {config.train.patience} epochs", flush=True)
            break


# --- test ----------------------------------------------------------------------------------------

def test(training: Training, tracker: RunTracker, visuals: Optional[EpochVisuals]) -> Optional[dict]:
    """The best model's test metrics, written to ``metrics.json`` (returned on the main process)."""
    accelerator = training.accelerator
    accelerator.wait_for_everyone()
    best = load_model(training.config.run.path / BEST, accelerator.device).model
    values = evaluate(best, training.loaders["test"], accelerator, training.manifest["classes"])
    metrics = None
    if accelerator.is_main_process:
        metrics = _write_metrics(training, values)
        early, floor = training.state.early_stopping, training.config.train.min_colorfulness
        if floor and not early.best_eligible:
            print(f"no epoch reached train.min_colorfulness {floor} on val: the best is the epoch of lowest "
                  "val ab L1 of all")
        print(f"test of best epoch {early.best_epoch}: " + _format(values))
        tracker.summarize({f"test/{k}": v for k, v in values.items() if k != "per_class"})
        visuals.test_table(best, training.loaders["test"], training.state.step)
    return metrics


def train(config: Config, previous: Optional[Config] = None) -> dict:
    """Train the run ``config.run.path``: a new one, or, with the ``previous`` config of that
    run, resume it. Returns its metrics."""
    run_dir = config.run.path
    if previous is not None:
        _check_resume_keeps(previous, config)
    elif (run_dir / LAST).exists():
        raise RunExists(f"{run_dir} already holds a run; resume it with colorize train --resume "
                        f"{run_dir}, or pick another run.name or run.dir")
    with run_scope():
        tracking = resolve_tracking(config.tracking)  # before any work: online without W&B fails here
        accelerator, precision = create_accelerator(config.train, log_with=tracking.log_with)
        try:
            return _train(config, previous, accelerator, precision, tracking)
        finally:
            accelerator.end_training()


def _train(config: Config, previous: Optional[Config], accelerator: Accelerator, precision: Precision,
           tracking: Tracking) -> dict:
    run_dir = config.run.path
    set_seed(config.train.seed, deterministic=config.train.deterministic)
    manifest = read_manifest(Path(config.data.dir))
    loaders = build_loaders(config.data, seed=config.train.seed, rank=accelerator.process_index,
                            world=accelerator.num_processes, device=accelerator.device)
    training = build(config, accelerator, precision, loaders, manifest)
    if previous is not None and not resume(training, previous) and (tested := _tested_metrics(training)):
        return tested
    if accelerator.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / CONFIG)
    mode = training.step_mode
    accelerator.print(f"precision: {precision_label(precision.name)} ({precision.reason}); "
                      f"{training.effective_batch} images per optimizer step; step "
                      f"{'captured in a CUDA graph' if mode.captured else 'eager'} ({mode.reason})")
    tracker = RunTracker(config, tracking, accelerator, run_dir, training.state.tracking_id)
    training.state.tracking_id = tracker.run_id
    visuals = EpochVisuals(config, manifest["classes"], accelerator, tracker, loaders["val"]) \
        if accelerator.is_main_process else None
    fit(training, visuals)
    metrics = test(training, tracker, visuals)
    accelerator.wait_for_everyone()
    return metrics


def _tested_metrics(training: Training) -> Optional[dict]:
    """The metrics of the run's test after the epochs it has trained, if they are written."""
    path = training.config.run.path / METRICS
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    return metrics if "test" in metrics and metrics["epochs_run"] == training.state.epoch else None


def _format(values: dict) -> str:
    return (f"ab L1 {values['ab_l1']:.3f}, PSNR {values['psnr']:.2f} dB, colourfulness ratio "
            f"{values['colorfulness_ratio']:.3f}, accuracy {values['accuracy']:.3f}")


def _print_epoch(entry: dict, early: EarlyStopping) -> None:
    train_values = entry["train"]
    marker = " (best)" if early.best_epoch == entry["epoch"] else ""
    print(f"epoch {entry['epoch']}: train loss {train_values['loss']:.4f} at {train_values['images_per_s']:.0f} "
          f"img/s; val {_format(entry['val'])}{marker}", flush=True)


def train_from_cli(config_path: Optional[str], overrides: List[str], resume_dir: Optional[str],
                   trust_code: bool = False) -> dict:
    """``colorize train``: a new run from a config, or ``--resume RUN_DIR`` with its saved config
    (whose ``imports:`` are imported only with ``trust_code``)."""
    if resume_dir is not None:
        return train(load_run_config(resume_dir, [*overrides, f"run.dir={resume_dir}"], trust_code),
                     previous=load_run_config(resume_dir, trust_code=trust_code))
    return train(load_config(config_path, overrides))
