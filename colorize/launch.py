"""The command that ``make train`` (and ``colorize bench train``) start training with on this
machine: ``accelerate launch`` with one process per GPU, or, without GPUs, one process using
every core (measured faster on two cores than two DDP processes of one thread each: see the
README's speed section). ``python -m colorize.launch`` prints it."""
import shlex
import sys
from pathlib import Path
from typing import List

import torch

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"


def accelerate_launch(config_file: str) -> List[str]:
    """``accelerate launch`` with one of ``launch/``'s config files."""
    return [str(Path(sys.executable).parent / "accelerate"), "launch", "--config_file", str(LAUNCH_DIR / config_file)]


def launch_command() -> List[str]:
    gpus = torch.cuda.device_count()
    if gpus:
        return accelerate_launch("multi-gpu.yaml") + ["--num_processes", str(gpus)]
    return [sys.executable]


if __name__ == "__main__":
    print(shlex.join(launch_command()))
