"""``colorize bench loader``: images per second of each loader over the training split, in one
run: FFCV, the in-memory loader (batches in host memory and, with a GPU, on the GPU), and the
per-item pipeline of the original report (:mod:`colorize.bench.report_pipeline`)."""
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, Iterable

import torch
from torch.utils.data import DataLoader

from colorize.bench.machine import machine_description, synchronize
from colorize.bench.report_pipeline import PerItemLabDataset, stored_rgb
from colorize.data.loaders import build_loaders
from colorize.data.manifest import read_manifest
from colorize.settings import LOADERS, DataConfig


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


def loader_benchmark(data_dir: Path, batch_size: int = 512, epochs: int = 3) -> Dict:
    """Images per second of each loader over the training split of ``data_dir``, delivering
    batches in host memory and, with a GPU, on the GPU (``<loader> cuda``)."""
    read_manifest(data_dir)  # a folder that is not prepared data is named before any timing starts
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    results = {}
    for device in devices:
        for kind in LOADERS:
            name = kind if device.type == "cpu" else f"{kind} {device.type}"
            print(f"timing {name}...", file=sys.stderr, flush=True)
            loader = build_loaders(DataConfig(dir=str(data_dir), loader=kind, batch_size=batch_size),
                                   device=device, splits=("train",))["train"]
            count = len(loader) * batch_size
            results[name] = {"images_per_s": _images_per_second(lambda loader=loader: loader, count, epochs, device)}

    print("timing the per-item pipeline...", file=sys.stderr, flush=True)
    held = build_loaders(DataConfig(dir=str(data_dir), loader="memory", batch_size=batch_size),
                         splits=("train",))["train"]
    per_item = DataLoader(PerItemLabDataset(stored_rgb(held), held.labels.numpy()),
                          batch_size=batch_size, shuffle=True, drop_last=True,
                          num_workers=os.cpu_count(), persistent_workers=True)
    count = len(per_item) * batch_size
    results["per_item"] = {"images_per_s": _images_per_second(lambda: per_item, count, epochs)}
    return {"loaders": results, "batch_size": batch_size, "machine": machine_description()}


def format_loader_table(result: Dict) -> str:
    loaders = result["loaders"]
    base = loaders["per_item"]["images_per_s"]
    lines = [f"{'loader':<12}{'images/s':>12}{'vs per-item':>14}"]
    for name, figures in loaders.items():
        rate = figures["images_per_s"]
        lines.append(f"{name:<12}{rate:>12,.0f}{rate / base:>13.1f}x")
    lines.append(f"batch size {result['batch_size']}; {result['machine']}")
    return "\n".join(lines)
