"""Process set-up for training and evaluation: the Accelerator and its precision, a guard
against processes that were launched together but are not distributed, and the CPU thread count."""
import contextlib
import os
import random
import warnings
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import broadcast
from torch import nn

from colorize.errors import ColorizeError, ConfigError
from colorize.settings import TrainConfig

# The environment variable deterministic cuBLAS products need (set by a deterministic run).
CUBLAS_WORKSPACE = "CUBLAS_WORKSPACE_CONFIG"


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


def _cpu_supports(feature: str) -> bool:
    """Whether the CPU has ``feature`` (``avx512_bf16``, ``amx_tile``), as torch reads it; False
    with a torch too old to tell."""
    return getattr(torch.cpu, f"_is_{feature}_supported", lambda: False)()


def cpu_has_native_bf16() -> bool:
    """Whether this CPU's kernels compute bf16 natively (AVX-512 BF16 or AMX), as torch and
    oneDNN will use them: ``ATEN_CPU_CAPABILITY=avx2`` or ``ONEDNN_MAX_CPU_ISA=AVX2`` make it False."""
    hardware = _cpu_supports("avx512_bf16") or _cpu_supports("amx_tile")
    return (hardware and torch.backends.cpu.get_cpu_capability().startswith("AVX512")
            and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def has_native_bf16(cuda: bool) -> bool:
    """Whether the GPU (``cuda``) or else the CPU computes bf16 natively."""
    return torch.cuda.is_bf16_supported(including_emulation=False) if cuda else cpu_has_native_bf16()


def cpu_uses_amx() -> bool:
    """Whether oneDNN computes bf16 on this CPU's AMX tiles (``ONEDNN_MAX_CPU_ISA`` below AMX
    makes it False)."""
    allowed = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()
    return cpu_has_native_bf16() and _cpu_supports("amx_tile") and (allowed == "ALL" or "AMX" in allowed)


def cpu_description() -> str:
    """The CPU kernels torch uses here, e.g. ``AVX2``, ``AVX512 with native bf16`` or
    ``AVX512 with native bf16 (AMX)``."""
    capability = torch.backends.cpu.get_cpu_capability()
    if not cpu_has_native_bf16():
        return capability
    return f"{capability} with native bf16" + (" (AMX)" if cpu_uses_amx() else "")


@dataclass(frozen=True)
class Precision:
    """The precision a run computes in (Accelerate's name: ``no``, ``bf16`` or ``fp16``) and why."""

    name: str
    reason: str


def precision_label(name: str) -> str:
    """Accelerate's precision name as people say it: ``no`` is fp32."""
    return "fp32" if name == "no" else name


def resolve_precision(requested: str, cuda: bool) -> Precision:
    """``train.mixed_precision`` on this hardware. ``auto`` is bf16 where the device computes it
    natively and fp32 otherwise; bf16 asked for on a CPU without it works, with a warning."""
    if requested in ("no", "fp32"):
        return Precision("no", "fp32 asked for")
    if requested == "fp16":
        if not cuda:
            raise ConfigError("train.mixed_precision=fp16 needs a GPU; use auto, bf16 or no on a CPU")
        return Precision("fp16", "fp16 asked for")
    native = has_native_bf16(cuda)
    device = f"the GPU ({torch.cuda.get_device_name()})" if cuda else f"the CPU ({cpu_description()})"
    if requested == "bf16":
        if not native:
            warnings.warn(f"train.mixed_precision=bf16 on {device}, which has no native bf16: it is "
                          "emulated, and training can be ten times slower or more than in fp32; "
                          "use train.mixed_precision=auto", stacklevel=2)
        return Precision("bf16", "bf16 asked for" + ("" if native else f", emulated on {device}"))
    if native:
        return Precision("bf16", f"auto: {device} computes bf16 natively")
    return Precision("no", f"auto: {device} has no native bf16, so fp32")


def _clear_accelerate_state() -> None:
    """Forget the settings of any earlier Accelerator of this process (its precision above all),
    and the process group too once it has been destroyed (``end_training``) or never was."""
    process_group_gone = PartialState._shared_state and not torch.distributed.is_initialized()
    AcceleratorState._reset_state(reset_partial_state=bool(process_group_gone))
    GradientState._reset_state()


def _restore_environment(name: str, value: Optional[str]) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


@contextlib.contextmanager
def run_scope() -> Iterator[None]:
    """The process-wide state a run changes, given back when it ends, however it ends: its
    Accelerator's settings, torch's thread count, its deterministic algorithms (and the cuBLAS
    workspace setting they need) and the random generators (Python's, NumPy's and torch's). Any
    number of runs, with any settings, can follow one another in one process."""
    threads = torch.get_num_threads()
    cublas_workspace = os.environ.get(CUBLAS_WORKSPACE)
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if cuda else []):
        try:
            yield
        finally:
            _clear_accelerate_state()
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
            _restore_environment(CUBLAS_WORKSPACE, cublas_workspace)
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def create_accelerator(config: TrainConfig, log_with: Optional[str] = None) -> Tuple[Accelerator, Precision]:
    """The Accelerator of this process (whatever an earlier one in this process was set to), and
    the precision it computes in."""
    _clear_accelerate_state()
    if config.deterministic:
        os.environ.setdefault(CUBLAS_WORKSPACE, ":4096:8")  # before CUDA starts
    precision = resolve_precision(config.mixed_precision, torch.cuda.is_available())
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # several processes without a GPU: DDP on gloo
        mixed_precision=precision.name,
        log_with=log_with,
        step_scheduler_with_optimizer=False,  # the trainer steps the schedule once per optimizer step
    )
    check_distributed(accelerator)
    set_thread_count(config.threads)
    return accelerator, precision


def sync_batchnorm(model: nn.Module, accelerator: Accelerator) -> nn.Module:
    """``model`` with BatchNorm statistics computed over all processes (``train.sync_batchnorm``)."""
    if accelerator.num_processes > 1 and accelerator.device.type == "cpu":
        raise ConfigError("train.sync_batchnorm needs GPUs: torch's SyncBatchNorm has no CPU "
                          "implementation; set train.sync_batchnorm=false")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


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
