"""Throughput benchmarks that print measured figures: ``colorize bench loader``.

The loader benchmark times, in one run and on the same training split, FFCV, the in-memory
loader, and the per-item pipeline of the original report (a torchvision-style dataset that
makes a PIL image per sample, flips it, converts it with scikit-image's ``rgb2lab`` and feeds a
``DataLoader`` with one worker per core).
"""
import os
import platform
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from colorize.color import lab_to_rgb
from colorize.config import DataConfig
from colorize.data.loaders import LOADERS, MemoryLoader, build_loaders, decode_lab
from colorize.engine.runtime import cpu_description
from colorize.images import to_uint8


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


class PerItemLabDataset(Dataset):
    """The report's input pipeline: uint8 images in memory, converted one sample at a time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        from PIL import Image
        from skimage.color import rgb2lab
        from torchvision.transforms import functional

        image = Image.fromarray(self.images[i])
        if torch.rand(1).item() < 0.5:
            image = functional.hflip(image)
        lab = torch.from_numpy(rgb2lab(np.asarray(image)).astype(np.float32)).permute(2, 0, 1)
        return lab[:1], lab[1:], int(self.labels[i])


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a CUDA device; nothing to wait for on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images_per_second(epochs: Callable[[], Iterable], count: int, repeats: int,
                       device: torch.device = torch.device("cpu")) -> float:
    for _ in epochs():  # warm-up: JIT compilation, worker start-up, page cache
        pass
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        for _ in epochs():
            pass
    synchronize(device)
    return count * repeats / (time.perf_counter() - start)


def stored_rgb(loader: MemoryLoader) -> np.ndarray:
    """The split a memory loader holds, as (N, R, R, 3) uint8 RGB images."""
    return to_uint8(lab_to_rgb(decode_lab(loader.lab, loader.spec.storage_dtype)))


def loader_benchmark(data_dir: Path, batch_size: int = 512, epochs: int = 3) -> Dict:
    """Images per second of each loader over the training split of ``data_dir``, delivering
    batches in host memory and, with a GPU, on the GPU (``<loader> cuda``)."""
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = {}
    for device in devices:
        for kind in LOADERS:
            name = kind if device.type == "cpu" else f"{kind} {device.type}"
            print(f"timing {name}...", file=sys.stderr, flush=True)
            loader = build_loaders(DataConfig(dir=str(data_dir), loader=kind, batch_size=batch_size),
                                   device=device, splits=("train",))["train"]
            count = len(loader) * batch_size
            results[name] = {"images_per_s": _images_per_second(lambda: loader, count, epochs, device)}

    print("timing the per-item pipeline...", file=sys.stderr, flush=True)
    held = build_loaders(DataConfig(dir=str(data_dir), loader="memory"), splits=("train",))["train"]
    per_item = DataLoader(PerItemLabDataset(stored_rgb(held), held.labels.numpy()),
                          batch_size=batch_size, shuffle=True, drop_last=True,
                          num_workers=os.cpu_count(), persistent_workers=True)
    count = len(per_item) * batch_size
    results["per_item"] = {"images_per_s": _images_per_second(lambda: per_item, count, epochs)}
    return {"loaders": results, "batch_size": batch_size, "machine": machine_description()}


def format_table(result: Dict) -> str:
    loaders = result["loaders"]
    base = loaders["per_item"]["images_per_s"]
    lines = [f"{'loader':<12}{'images/s':>12}{'vs per-item':>14}"]
    for name, figures in loaders.items():
        rate = figures["images_per_s"]
        lines.append(f"{name:<12}{rate:>12,.0f}{rate / base:>13.1f}x")
    lines.append(f"batch size {result['batch_size']}; {result['machine']}")
    return "\n".join(lines)
