"""Checkpoints of a run directory, each written in a staging folder and then renamed:

- ``last/``: the full Accelerate state (model, optimizer, scaler, RNG of every process, and
  the registered training state), to resume from. It is replaced by two renames (the old one
  to ``.last.old``, the new one into place); a run killed between them is resumed from
  ``.last.old``, which is complete until the new ``last/`` is;
- ``best/``: the best model's weights (``model.safetensors``) and ``model.json``, which is
  everything needed to rebuild it (name, constructor arguments, class names).
"""
import json
from pathlib import Path
from typing import Tuple

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from colorize.errors import ColorizeError
from colorize.io import previous_version, replace_directory, staging_directory
from colorize.models import create_model

LAST, BEST = "last", "best"


class CheckpointError(ColorizeError):
    """A run directory lacks the checkpoint asked for, or it cannot be read."""


def save_last(accelerator: Accelerator, run_dir: Path) -> None:
    """Every process calls this; the previous ``last/`` stays until the new one is complete."""
    target = Path(run_dir) / LAST
    staging = target.with_name(f".{LAST}.partial")
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


def save_best(model: nn.Module, spec: dict, run_dir: Path) -> None:
    """Main process only: the model's weights and the ``spec`` that rebuilds it."""
    target = Path(run_dir) / BEST
    staging = staging_directory(target)
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(staging / "model.safetensors"))
    (staging / "model.json").write_text(json.dumps(spec, indent=2) + "\n")
    replace_directory(staging, target)


def load_best(run_dir: Path, device: torch.device = torch.device("cpu")) -> Tuple[nn.Module, dict]:
    """The best model of ``run_dir`` in eval mode on ``device``, and its spec."""
    path = Path(run_dir) / BEST
    if not (path / "model.json").is_file() or not (path / "model.safetensors").is_file():
        raise CheckpointError(
            f"{run_dir} has no {BEST}/ checkpoint (model.json and model.safetensors); "
            f"train one with: colorize train --config configs/reference.yaml run.dir={run_dir}"
        )
    spec = json.loads((path / "model.json").read_text())
    model = create_model(spec["name"], **spec["kwargs"])
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.to(device).eval(), spec
