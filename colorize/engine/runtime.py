"""Process set-up for training and evaluation: the Accelerator, a guard against processes that
were launched together but are not distributed, and the CPU thread count."""
import os
from typing import List, Optional

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast
from torch import nn

from colorize.config import ConfigError, TrainConfig
from colorize.errors import ColorizeError


class NotDistributedError(ColorizeError):
    """Several processes were launched but they do not form one distributed job."""


class OutOfSyncError(ColorizeError):
    """The processes of one DDP job hold different models."""


def check_distributed(accelerator: Accelerator) -> None:
    """Stop at once when the launcher started several processes that are not one DDP job
    (they would each train an independent copy)."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and accelerator.num_processes != launched:
        raise NotDistributedError(
            f"{launched} processes were launched (WORLD_SIZE={launched}) but they are not "
            f"distributed (this one sees {accelerator.num_processes}); each would train its own "
            "copy. Without GPUs, launch with `accelerate launch --config_file launch/cpu-ddp.yaml` "
            "or set ACCELERATE_USE_CPU=1; with GPUs, check that every process sees CUDA."
        )


def set_thread_count(threads: Optional[int]) -> None:
    """Torch threads per process: ``threads``, or the usable cores shared by this machine's processes."""
    if threads is None:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        threads = max(1, len(os.sched_getaffinity(0)) // local)
    torch.set_num_threads(threads)


def create_accelerator(config: TrainConfig, log_with: Optional[str] = None) -> Accelerator:
    if config.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("train.mixed_precision=fp16 needs a GPU; use bf16 or no on a CPU")
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # several processes without a GPU: DDP on gloo
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with=log_with,
    )
    check_distributed(accelerator)
    set_thread_count(config.threads)
    return accelerator


def sync_buffers(model: nn.Module, accelerator: Accelerator) -> None:
    """Give every process the main process's buffers (BatchNorm statistics), as DDP does before
    each forward pass, so evaluation and checkpoints agree across processes."""
    if accelerator.num_processes > 1:
        for buffer in model.buffers():
            buffer.copy_(broadcast(buffer.clone(), from_process=0))


def parameter_checksums(model: nn.Module, accelerator: Accelerator) -> List[float]:
    """One checksum of the model per process; raises :class:`OutOfSyncError` if they differ."""
    local = torch.stack([t.detach().double().sum() for t in model.state_dict().values()])
    everyone = accelerator.gather(local[None])
    if not torch.equal(everyone, everyone[:1].expand_as(everyone)):
        raise OutOfSyncError("the model differs between processes; the distributed setup is broken")
    return everyone.sum(dim=1).tolist()
