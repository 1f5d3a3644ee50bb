"""The ``last/`` checkpoint of a run directory: the full Accelerate state (model, optimizer,
schedule, scaler, RNG of every process, and the registered training state), to resume from.
It is written in a staging folder and replaced by two renames (the old one to ``.last.old``,
the new one into place); a run killed between them is resumed from ``.last.old``, which is
complete until the new ``last/`` is. (``best/`` is a saved model: :mod:`colorize.models.saved`.)
"""
from pathlib import Path

from accelerate import Accelerator

from colorize.errors import ColorizeError
from colorize.io import previous_version, replace_directory, staging_directory, staging_path
from colorize.run_dir import LAST


class CheckpointError(ColorizeError):
    """A run directory lacks the checkpoint asked for, or it cannot be read or resumed as asked."""


def save_last(accelerator: Accelerator, run_dir: Path) -> None:
    """Every process calls this; the previous ``last/`` stays until the new one is complete."""
    target = Path(run_dir) / LAST
    staging = staging_path(target)
    if accelerator.is_main_process:
        staging_directory(target)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(staging))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        replace_directory(staging, target)
    accelerator.wait_for_everyone()


def load_last(accelerator: Accelerator, run_dir: Path) -> None:
    """Restore every registered object from ``last/`` (or ``.last.old`` while it is replaced)."""
    path = Path(run_dir) / LAST
    if not path.is_dir():
        path = previous_version(path)
        if not path.is_dir():
            raise CheckpointError(f"{run_dir} has no {LAST}/ checkpoint to resume from")
        accelerator.print(f"{run_dir}/{LAST} was being replaced when the run stopped; resuming from {path}")
    accelerator.load_state(str(path))
