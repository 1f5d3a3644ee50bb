"""``colorize train``: the training loop on Accelerate, in the steps a recipe reads as:
build, resume, fit, test the best model.

One process or many (DDP under ``accelerate launch`` or ``torchrun``); the model, loss,
optimizer and schedule named by the config; mixed precision and gradient accumulation;
validation every epoch with early stopping on val ab L1, agreed by every process; ``last/``
and ``best/`` every epoch, and ``last/`` also every ``train.checkpoint_every`` optimizer steps
within an epoch (a resume goes on at the epoch's next batch), and where SIGTERM stops the run
(:mod:`colorize.engine.stop_request`); and, at the end, the test metrics of the best model.
Everything a run produces lands in its run directory (:mod:`colorize.run_dir`), saved so that a
crash at any instant loses nothing (:mod:`colorize.engine.checkpoint`). Each run leaves the
process as it found it (:func:`colorize.engine.runtime.run_scope`), so many can run one after
another in one process.
"""
import json
import math
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from colorize.config import Config, load_config, load_run_config, save_config
from colorize.data.loaders import build_loaders, per_process_batch_size
from colorize.data.manifest import read_manifest
from colorize.engine import checkpoint
from colorize.engine.build import Training, build_training
from colorize.engine.early_stopping import EarlyStopping
from colorize.engine.evaluate import evaluate
from colorize.engine.meters import EpochSums, LossWindow
from colorize.engine.resume import check_resume_keeps, resume, tested_metrics
from colorize.engine.runtime import (
    Precision,
    cpu_description,
    create_accelerator,
    parameter_checksums,
    precision_label,
    run_scope,
    sync_buffers,
)
from colorize.engine.step import learning_rate_now
from colorize.engine.weight_average import floats_and_integers
from colorize.errors import ColorizeError
from colorize.io import atomic_write_text
from colorize.models.saved import load_model, write_model
from colorize.run_dir import BEST, CONFIG, LAST, METRICS
from colorize.show.tracking import RunTracker, Tracking, resolve_tracking
from colorize.show.visuals import EpochVisuals


class TrainingDiverged(ColorizeError):
    """The loss became NaN or infinite."""


class RunExists(ColorizeError):
    """A new run would overwrite an existing one."""


def _check_finite(values: Dict[str, float], epoch: int, step: int, run_dir: Path,
                  model: Optional[torch.nn.Module] = None) -> None:
    """Stop the run if the loss in ``values``, or a weight of ``model`` (checked before a save),
    is no longer finite."""
    if not math.isfinite(values["loss"]):
        problem = f"the training loss became {values['loss']}"
    elif model is not None and not _all_finite(model):
        problem = "the weights became infinite or NaN"
    else:
        return
    raise TrainingDiverged(
        f"{problem} in epoch {epoch} (step {step}); stopped. The last good checkpoint is {run_dir / LAST} "
        f"(resume with colorize train --resume {run_dir}); try a lower optim.lr or train.mixed_precision=no"
    )


def _all_finite(model: torch.nn.Module) -> bool:
    """Whether every weight and floating-point buffer (BatchNorm's statistics) of ``model`` is finite."""
    floats, _ = floats_and_integers(model)
    return bool(torch.stack([t.isfinite().all() for t in floats]).all())


def _accumulation_groups(batches: int, accum: int, first: int = 0):
    """For each batch of an epoch from batch ``first`` on: (its index, the size of its
    accumulation group, whether the optimizer steps after it). Groups start at ``first``; the
    last one of an epoch may be smaller: it is applied at the epoch's end."""
    for index in range(first, batches):
        start = index - (index - first) % accum
        end = min(start + accum, batches)
        yield index, end - start, index + 1 == end


def _save_within_epoch(training: Training, sums: EpochSums, epoch: int, batches: int) -> None:
    """Write ``last/`` with how far into the epoch the run is (every process calls this), unless
    the epoch's loss or the weights are no longer finite: ``last/`` stays the last good checkpoint."""
    progress = sums.progress(training.accelerator, batches)
    _check_finite(LossWindow.values(progress.total), epoch + 1, training.state.step, training.config.run.path,
                  training.plain_model)
    training.state.progress = progress
    checkpoint.save_last(training.accelerator, training.config.run.path, training.checkpointed)
    training.state.progress = None


def train_epoch(training: Training, epoch: int) -> Dict[str, float]:
    """One pass over the training split (the rest of it, after a mid-epoch checkpoint); returns
    the epoch's global means and throughput."""
    model, accelerator, config = training.model, training.accelerator, training.config
    loader = training.loaders["train"]
    state, every = training.state, config.train.checkpoint_every
    saved, state.progress = state.progress, None
    first = 0 if saved is None else saved.batches
    model.train()
    loader.set_epoch(epoch, first)
    sums = EpochSums(accelerator, loader.num_samples, saved)
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
            sums.window = LossWindow(accelerator.device)
            training.stop.poll(accelerator)
        # every checkpoint_every steps, and where a stop is agreed, but for the epoch's last step
        # (fit saves last/ after it)
        stopping = training.stop.agreed
        if steps and (stopping or every and state.step % every == 0) and index + 1 < len(loader):
            _save_within_epoch(training, sums, epoch, index + 1)
            if stopping:
                bar.close()
                raise training.stop.stopped(f"in epoch {epoch + 1} after step {state.step}", config.run.path)
    bar.close()
    return sums.total.read(accelerator) | sums.coverage(accelerator) | {"lr": learning_rate_now(training.optimizer)}


def _images_per_s(history: List[dict]) -> float:
    """Training images/s over the epochs of ``history``."""
    seconds = sum(h["train"]["seconds"] for h in history)
    return sum(h["train"]["images"] for h in history) / max(seconds, 1e-9)


def _write_metrics(training: Training, test: Optional[dict] = None) -> dict:
    config, state, accelerator, precision = training.config, training.state, training.accelerator, training.precision
    history = state.history
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
        "train_images_per_s": _images_per_s(history),
        # the first epoch also times one-time work: kernel selection, a CUDA graph's capture
        "steady_train_images_per_s": _images_per_s(history[1:]) if len(history) > 1 else None,
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
    write_model(training.evaluated_model, checkpoint.best_staging(config.run.path), manifest["classes"], epoch=epoch)


def fit(training: Training, visuals: Optional[EpochVisuals]) -> None:
    """Train epoch after epoch until ``train.epochs`` or early stopping, saving as it goes."""
    config, accelerator, state = training.config, training.accelerator, training.state
    plain_model = training.plain_model
    for epoch in range(state.epoch, config.train.epochs):
        if state.early_stopping.should_stop:
            break
        train_values = train_epoch(training, epoch)
        _check_finite(train_values, epoch + 1, state.step, config.run.path, plain_model)
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
        if training.stop.poll(accelerator):
            raise training.stop.stopped(f"after epoch {epoch + 1} (step {state.step})", config.run.path)
        if state.early_stopping.should_stop:
            accelerator.set_trigger()
        if accelerator.check_trigger():
            print(f"[process {accelerator.process_index}] stopping early after epoch {epoch + 1}: val ab L1 "
                  f"has not improved for {config.train.patience} epochs", flush=True)
            break


def test_best(training: Training, tracker: RunTracker, visuals: Optional[EpochVisuals]) -> Optional[dict]:
    """The best model's test metrics, written to ``metrics.json`` (returned on the main process)."""
    accelerator = training.accelerator
    accelerator.wait_for_everyone()
    best = load_model(training.config.run.path / BEST, accelerator.device)
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
        check_resume_keeps(previous, config)
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
    training = build_training(config, accelerator, precision, loaders, manifest)
    if previous is not None and not resume(training, previous) and (tested := tested_metrics(training)):
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
    with training.stop:
        fit(training, visuals)
    metrics = test_best(training, tracker, visuals)
    accelerator.wait_for_everyone()
    return metrics


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
