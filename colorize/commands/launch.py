"""The command that ``make train`` (and ``colorize bench train``) start training with on this
machine: ``accelerate launch`` with one process per GPU, or, without GPUs, one process using
every core (on two cores it trains faster than two DDP processes of one thread each: ``colorize
bench train`` measures both). ``python -m colorize.commands.launch`` prints it.

The launcher's settings are given as flags, so they hold for an installed package too; the
files in the checkout's ``launch/`` say the same for people who launch by hand."""
import shlex
import sys
from pathlib import Path
from typing import List

import torch


def accelerate_launch(processes: int) -> List[str]:
    """``accelerate launch`` of ``processes`` DDP processes on this machine (over NCCL on GPUs;
    without GPUs, colorize joins them into one gloo process group)."""
    return [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes",
            str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]


def launch_command() -> List[str]:
    gpus = torch.cuda.device_count()
    return accelerate_launch(gpus) if gpus else [sys.executable]


if __name__ == "__main__":
    print(shlex.join(launch_command()))
