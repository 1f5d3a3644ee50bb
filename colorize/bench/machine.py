"""What every benchmark prints beside its figures: the machine, and its measured matmul peak;
and waiting for a device's queued work before reading a clock."""
import os
import platform
import time

import torch

from colorize.engine.runtime import cpu_description


def machine_description() -> str:
    """CPU model, the kernels torch uses on it (e.g. ``AVX2``), core count and, when present, the GPU."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    text = f"{cpu}, {cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", {torch.cuda.get_device_name()}"
    return text


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a CUDA device; nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device, size: int, rounds: int = 5, seconds: float = 0.2) -> float:
    """GFLOP/s of ``size`` x ``size`` matrix products in ``dtype``: the best of ``rounds`` rounds
    of ``seconds`` each (a peak, so a round slowed by anything else on the machine does not count)."""
    a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    synchronize(device)
    best = 0.0
    for _ in range(rounds):
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            torch.mm(a, b)
            synchronize(device)
            runs += 1
        best = max(best, 2 * size ** 3 * runs / (time.perf_counter() - start) / 1e9)
    return best
