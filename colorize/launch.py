"""The ``accelerate launch`` command that ``make train`` (and ``colorize bench train``) start
training with on this machine: one process per GPU, or two CPU processes with DDP over gloo.
``python -m colorize.launch`` prints it."""
import shlex
import sys
from pathlib import Path
from typing import List

import torch

LAUNCH_DIR = Path(__file__).resolve().parents[1] / "launch"


def launch_command() -> List[str]:
    accelerate = [str(Path(sys.executable).parent / "accelerate"), "launch"]
    gpus = torch.cuda.device_count()
    if gpus:
        return accelerate + ["--config_file", str(LAUNCH_DIR / "multi-gpu.yaml"), "--num_processes", str(gpus)]
    return accelerate + ["--config_file", str(LAUNCH_DIR / "cpu-ddp.yaml")]


if __name__ == "__main__":
    print(shlex.join(launch_command()))
