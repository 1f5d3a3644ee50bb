"""The checkpoints of a run directory, saved so that a crash at any instant loses nothing.

``last/`` holds the full training state to resume from: Accelerate's (model, optimizer,
schedule, scaler, the RNG of every process) and the trainer's own objects, as JSON plus
safetensors (:data:`STATE_JSON`, :data:`STATE_TENSORS`): nothing read back can run code.
``best/`` is the saved model (:mod:`colorize.models.saved`) of the epoch that ``last/`` names as
best. An epoch's save is three steps, each flushed to the disk before the next: a new best
model is staged beside ``best/``; ``last/`` is staged and swapped in by two renames; the staged
best model is swapped in. :func:`recover_last` and :func:`recover_best` put back whatever a
crash interrupted.
"""
import json
import pickle
from pathlib import Path
from typing import Dict, Optional, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import load
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from colorize import io
from colorize.errors import ColorizeError
from colorize.models.saved import MODEL_CONFIG
from colorize.run_dir import BEST, LAST

STATE_JSON, STATE_TENSORS = "trainer_state.json", "trainer_state.safetensors"
_TENSOR = "__tensor__"  # marks where a tensor of STATE_TENSORS sits in STATE_JSON


class CheckpointError(ColorizeError):
    """A run directory lacks the checkpoint asked for, or it cannot be read or resumed as asked."""


class Stateful(Protocol):
    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def _split_tensors(value, tensors: Dict[str, torch.Tensor], key: str):
    """``value`` with every tensor in it moved to ``tensors`` (under its path) and marked."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value.detach().cpu().contiguous().clone()
        return {_TENSOR: key}
    if isinstance(value, dict):
        return {name: _split_tensors(item, tensors, f"{key}.{name}") for name, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split_tensors(item, tensors, f"{key}.{index}") for index, item in enumerate(value)]
    return value


def _join_tensors(value, tensors: Dict[str, torch.Tensor]):
    if isinstance(value, dict):
        if set(value) == {_TENSOR}:
            return tensors[value[_TENSOR]]
        return {name: _join_tensors(item, tensors) for name, item in value.items()}
    if isinstance(value, list):
        return [_join_tensors(item, tensors) for item in value]
    return value


def _write_objects(objects: Dict[str, Stateful], folder: Path) -> None:
    tensors: Dict[str, torch.Tensor] = {}
    tree = {name: _split_tensors(obj.state_dict(), tensors, name) for name, obj in objects.items()}
    (folder / STATE_JSON).write_text(json.dumps(tree, indent=1) + "\n")
    save_file(tensors, str(folder / STATE_TENSORS))


def _read_objects(objects: Dict[str, Stateful], folder: Path) -> None:
    if list(folder.glob("custom_checkpoint_*.pkl")):
        raise CheckpointError(f"{folder} keeps the training state as a pickle, which can run code when it is "
                              "read, so it is not resumed; start a new run with colorize train --config")
    try:
        tree = io.read_json_object(folder / STATE_JSON)
        tensors = load_file(str(folder / STATE_TENSORS))
        for name, obj in objects.items():
            obj.load_state_dict(_join_tensors(tree[name], tensors))
    except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as error:
        raise _incomplete(folder, error) from None


def _incomplete(folder: Path, error: Exception) -> CheckpointError:
    # torch's reading errors go on with advice for its own users
    reason = f"it lacks {error}" if isinstance(error, KeyError) else str(error).split(". ")[0]
    return CheckpointError(f"{folder} is not a complete checkpoint ({reason}); it cannot be resumed: start a "
                           "new run with colorize train --config, or resume a backup of the run directory")


def save_last(accelerator: Accelerator, run_dir: Path, objects: Dict[str, Stateful]) -> None:
    """Save ``last/`` with the trainer's ``objects`` (every process calls this; they hold the
    same). The previous ``last/`` stays until the new one is complete on the disk."""
    target = Path(run_dir) / LAST
    staging = io.staging_path(target)
    if accelerator.is_main_process:
        io.staging_directory(target)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        _write_objects(objects, staging)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        io.replace_directory(staging, target)
    accelerator.wait_for_everyone()


def load_last(accelerator: Accelerator, run_dir: Path, objects: Dict[str, Stateful]) -> None:
    """Restore Accelerate's state and the trainer's ``objects`` from ``last/`` (after :func:`recover_last`)."""
    path = Path(run_dir) / LAST
    if not path.is_dir():
        raise CheckpointError(f"{run_dir} has no {LAST}/ checkpoint to resume from")
    _read_objects(objects, path)
    try:
        # Accelerate skips random states it cannot read; a resume without them would not be exact
        load(path / f"random_states_{accelerator.process_index}.pkl")
        accelerator.load_state(str(path))
    except (OSError, RuntimeError, ValueError, KeyError, EOFError, pickle.UnpicklingError, SafetensorError) as error:
        raise _incomplete(path, error) from None


def best_staging(run_dir: Path) -> Path:
    """An empty folder to write the next ``best/`` in, before ``last/`` is saved."""
    return io.staging_directory(Path(run_dir) / BEST)


def promote_best(run_dir: Path) -> None:
    """Swap the staged best model in, once ``last/`` names its epoch (main process)."""
    best = Path(run_dir) / BEST
    io.replace_directory(io.staging_path(best), best)


def _model_epoch(folder: Path) -> Optional[int]:
    """The epoch a saved model in ``folder`` was trained to, if it is complete and says so."""
    try:
        return io.read_json_object(folder / MODEL_CONFIG).get("epoch")
    except (OSError, ValueError):
        return None


def recover_last(run_dir: Path) -> Optional[str]:
    """Undo a save of ``last/`` that a crash interrupted, so that ``last/`` is complete (main
    process, before it is read); says what was done, if anything."""
    last = Path(run_dir) / LAST
    previous = io.previous_version(last)
    done = None
    if not last.is_dir() and previous.is_dir():
        io.rename(previous, last)
        done = f"{LAST}/ was being replaced: the previous one is back"
    io.remove(previous)
    io.remove(io.staging_path(last))
    return done


def recover_best(run_dir: Path, epoch: int) -> Optional[str]:
    """Make ``best/`` the model of ``epoch``, the best that ``last/`` names, from whichever
    version a crash left of it (main process, after ``last/`` is read); says what was done."""
    best = Path(run_dir) / BEST
    versions = (best, io.previous_version(best), io.staging_path(best))
    right = next((version for version in versions if _model_epoch(version) == epoch), None)
    if right is None and not best.is_dir() and versions[1].is_dir():  # no epoch to match: the previous one
        right = versions[1]
    done = None
    if right is not None and right != best:
        io.remove(best)
        io.rename(right, best)
        done = f"{BEST}/ was being replaced: it is the model of epoch {_model_epoch(best)} again"
    for version in versions[1:]:
        io.remove(version)
    return done
