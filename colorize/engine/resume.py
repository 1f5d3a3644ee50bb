"""Resuming a run from ``last/``: which settings may change, what the resume does (goes on,
trains further, or finds the run complete), and putting back whatever a crash interrupted."""
from pathlib import Path
from typing import Optional, Tuple

from colorize.config import Config, flat_settings
from colorize.engine import checkpoint
from colorize.engine.build import Training
from colorize.engine.state import TrainState
from colorize.engine.step import plain_learning_rates
from colorize.errors import ConfigError
from colorize.run_dir import LAST, read_metrics
from colorize.settings import FREE_ON_RESUME, is_setting_among


def check_resume_keeps(previous: Config, config: Config) -> None:
    """Refuse, by name, a resume that changes a setting that defines the run."""
    old, new = flat_settings(previous), flat_settings(config)
    for key in sorted(old.keys() | new.keys()):
        if not is_setting_among(key, FREE_ON_RESUME) and old.get(key) != new.get(key):
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


def tested_metrics(training: Training) -> Optional[dict]:
    """The metrics of the run's test after the epochs it has trained, if they are written."""
    metrics = read_metrics(training.config.run.path)
    return metrics if "test" in metrics and metrics["epochs_run"] == training.state.epoch else None
