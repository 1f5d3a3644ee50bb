"""``colorize bench train``: training images/s, data loading included, measured in one run for

- ``report``: the original report's pipeline rebuilt faithfully: a per-item dataset that makes
  a PIL image, flips it and converts it with scikit-image's ``rgb2lab``, a ``DataLoader`` with
  one worker per core, fp32, and the report's network as its code ran it (the encoder run twice,
  a softmax before the cross-entropy);
- ``fp32`` and, where the device computes it natively, ``bf16``: ``colorize train`` in one process;
- ``eager`` and ``captured``, on a GPU: ``colorize train`` at ``auto`` precision in one process,
  its step run eagerly (``train.cuda_graphs=off``) or captured in a CUDA graph (``on``);
- ``make_train``: ``colorize train`` at ``auto`` precision in the process layout ``make train``
  uses (one process without GPUs, one process per GPU with them);
- ``cpu_ddp``, without GPUs: the same in two DDP processes (``launch/cpu-ddp.yaml``), the layout
  ``make train`` is measured against.

Each entry times ``steps`` batches after ``steps`` warm-up ones (``colorize train`` entries run
two epochs of ``steps`` batches in a fresh process and keep the second). Beside them: GFLOP per
training image (forward and backward, counted by torch), achieved GFLOP/s, the machine's measured
matmul peak in fp32 and bf16, and utilization = achieved / peak of the entry's precision.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader

from colorize.bench import PerItemLabDataset, machine_description, stored_rgb, synchronize
from colorize.color import normalize_l
from colorize.config import DataConfig, load_config
from colorize.data.loaders import build_loaders
from colorize.data.manifest import read_manifest
from colorize.engine.runtime import has_native_bf16, precision_label, resolve_precision
from colorize.engine.trainer import build_loss, data_prior, recipe_model
from colorize.errors import ColorizeError
from colorize.optim import build_optimizer
from colorize.run_dir import METRICS
from colorize.launch import accelerate_launch, launch_command
from colorize.models.base import Prediction, gflop_per_image
from colorize.models.fusion import FusionColorizer

class Batch(NamedTuple):
    l: torch.Tensor
    ab: torch.Tensor
    label: torch.Tensor


RECIPE = Path(__file__).resolve().parents[1] / "configs" / "reference.yaml"


class ReportColorizer(FusionColorizer):
    """The fusion network as the report's code ran it: the encoder twice per forward pass, raw
    ab out, and class probabilities (batch-normalized scores through a softmax) for the loss."""

    def __init__(self, num_classes: int, resolution: int):
        super().__init__(num_classes=num_classes, resolution=resolution)
        self.classifier = nn.Sequential(self.classifier, nn.BatchNorm1d(num_classes), nn.Softmax(dim=1))

    def forward(self, l: torch.Tensor):
        mid = self.mid(self.encoder(normalize_l(l)))
        summary = self.global_features(self.encoder(normalize_l(l)))
        tiled = summary[:, :, None, None].expand(-1, -1, *mid.shape[-2:])
        return Prediction(self.decoder(self.fusion(torch.cat((mid, tiled), dim=1))), self.classifier(summary))


def profile_step(data_dir: Path, batch_size: int, top: int, overrides: Sequence[str] = (), steps: int = 4) -> str:
    """The ``top`` operators by time of ``steps`` training steps of the reference recipe's model
    with ``overrides``, in the precision its ``train.mixed_precision`` resolves to on this CPU, in
    this process, on random images at the data's resolution, as a table (torch.profiler)."""
    config, manifest = load_config(str(RECIPE), overrides), read_manifest(data_dir)
    precision = resolve_precision(config.train.mixed_precision, cuda=False).name
    resolution = manifest["resolution"]
    prior = data_prior(config, manifest, data_dir)
    model = recipe_model(config, manifest, prior)
    layout = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = build_optimizer(config.optim.name, config.optim.settings, model, config.optim.settings.lr)
    l = (torch.rand(batch_size, 1, resolution, resolution) * 100).contiguous(memory_format=layout)
    ab = torch.randn(batch_size, 2, resolution, resolution) * 20
    label = torch.randint(0, len(manifest["classes"]), (batch_size,))

    loss = build_loss(config, prior, torch.device("cpu"))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            prediction = model(l)
        loss(prediction, Batch(l, ab, label))["total"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profiler:
        for _ in range(steps):
            step()
    events = sorted(profiler.key_averages(group_by_input_shape=True), key=lambda e: -e.self_cpu_time_total)
    total = sum(e.self_cpu_time_total for e in events)
    lines = [f"{'share':>6}{'ms/step':>9}  operator (input shapes)"]
    for event in events[:top]:
        shapes = ", ".join(str(shape) for shape in event.input_shapes[:3] if shape)
        lines.append(f"{event.self_cpu_time_total / total:>6.1%}{event.self_cpu_time_total / steps / 1e3:>9.1f}  "
                     f"{event.key} ({shapes})")
    optimizer_time = sum(e.cpu_time_total for e in events if e.key.startswith("Optimizer.step"))
    lines.append(f"{optimizer_time / total:>6.1%}{optimizer_time / steps / 1e3:>9.1f}  the optimizer step, all its operators")
    lines.append(f"{total / steps / 1e3:.0f} ms per step of {batch_size} images, {precision_label(precision)}, "
                 f"{torch.get_num_threads()} threads; {machine_description()}")
    return "\n".join(lines)


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


def _forever(loader: DataLoader) -> Iterator:
    while True:
        yield from loader


def report_pipeline(data_dir: Path, steps: int, batch_size: int, device: torch.device) -> Dict:
    """The report's pipeline: ``steps`` timed batches after ``steps`` warm-up ones."""
    manifest = read_manifest(data_dir)
    data = DataConfig(dir=str(data_dir), loader="memory", train_limit=2 * steps * batch_size)
    memory = build_loaders(data, splits=("train",))["train"]
    loader = DataLoader(PerItemLabDataset(stored_rgb(memory), memory.labels.numpy()), batch_size=batch_size,
                        shuffle=True, drop_last=True, num_workers=os.cpu_count(), persistent_workers=True)
    model = ReportColorizer(len(manifest["classes"]), manifest["resolution"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = _forever(loader)
    images, wait = 0, 0.0
    for index in range(2 * steps):
        if index == steps:
            synchronize(device)
            start = time.perf_counter()
        waited = time.perf_counter()
        l, ab, label = (t.to(device) for t in next(batches))
        waited = time.perf_counter() - waited
        prediction = model(l)  # raw ab and class probabilities, as the report's code had them
        (F.smooth_l1_loss(prediction.ab, ab) + F.cross_entropy(prediction.logits, label)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if index >= steps:
            images, wait = images + len(l), wait + waited
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"precision": "fp32", "captured": False, "processes": 1, "images_per_s": images / seconds,
            "data_wait_fraction": wait / seconds,
            "gflop_per_image": gflop_per_image(ReportColorizer(len(manifest["classes"]), manifest["resolution"]),
                                               manifest["resolution"])}


def training_run(data_dir: Path, run_dir: Path, steps: int, batch_size: int, precision: str,
                 launcher: List[str], overrides: Sequence[str] = ()) -> Dict:
    """``colorize train`` of the reference recipe, with ``overrides``, for two epochs of
    ``steps`` global batches; the second epoch's figures."""
    command = [*launcher, "-m", "colorize", "train", "--config", str(RECIPE), f"data.dir={data_dir}",
               f"run.dir={run_dir}", f"data.batch_size={batch_size}", f"data.train_limit={steps * batch_size}",
               f"data.eval_limit={batch_size}", "train.epochs=2", f"train.mixed_precision={precision}",
               f"train.log_every={steps}", "tracking.mode=disabled", *overrides]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise ColorizeError(f"the benchmark's training run failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    metrics = json.loads((run_dir / METRICS).read_text())
    epoch = metrics["history"][1]["train"]
    return {"precision": precision_label(metrics["mixed_precision"]), "captured": metrics["cuda_graphs"],
            "processes": metrics["world_size"], "images_per_s": epoch["images_per_s"],
            "data_wait_fraction": epoch["data_wait_fraction"]}


def train_benchmark(data_dir: Path, steps: int = 16, batch_size: int = 512, skip: Sequence[str] = (),
                    overrides: Sequence[str] = ()) -> Dict:
    """Every entry of the module's docstring but those in ``skip`` (``bf16`` is skipped where
    it is not native), with the machine's matmul peaks; ``overrides`` (``key=value`` settings)
    apply to the ``colorize train`` entries."""
    config = load_config(str(RECIPE), overrides)  # a mistyped setting fails here, not in a training run
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    manifest = read_manifest(data_dir)
    native_bf16 = has_native_bf16(device.type == "cuda")
    print("timing the report's pipeline...", file=sys.stderr, flush=True)
    entries = {"report": report_pipeline(data_dir, steps, batch_size, device)}
    one = [sys.executable]
    runs = {"fp32": ("no", one, ()), "bf16": ("bf16", one, ())}
    if device.type == "cuda":
        runs |= {"eager": ("auto", one, ("train.cuda_graphs=off",)),
                 "captured": ("auto", one, ("train.cuda_graphs=on",))}
    runs["make_train"] = ("auto", launch_command(), ())
    if device.type == "cpu":
        runs["cpu_ddp"] = ("auto", accelerate_launch("cpu-ddp.yaml"), ())
    skip = set(skip) | (set() if native_bf16 else {"bf16"})
    runs = {name: run for name, run in runs.items() if name not in skip}
    with tempfile.TemporaryDirectory(prefix="colorize-bench-") as scratch:
        for name, (precision, launcher, settings) in runs.items():
            print(f"timing {name}...", file=sys.stderr, flush=True)
            entries[name] = training_run(data_dir, Path(scratch) / name, steps, batch_size, precision, launcher,
                                         [*overrides, *settings])
    ours = gflop_per_image(recipe_model(config, manifest, data_prior(config, manifest, data_dir)),
                           manifest["resolution"])
    # emulated bf16 is so slow that products of 512 x 512 show its rate in reasonable time
    sizes = {"fp32": 2048, "bf16": 2048 if native_bf16 else 512}
    peaks = {name: matmul_peak(dtype, device, sizes[name])
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for name, entry in entries.items():
        entry.setdefault("gflop_per_image", ours)
        entry["gflop_per_s"] = entry["images_per_s"] * entry["gflop_per_image"]
        entry["utilization"] = entry["gflop_per_s"] / peaks[entry["precision"]]
    return {"entries": entries, "matmul_peak_gflop_per_s": peaks, "matmul_sizes": sizes,
            "native_bf16": native_bf16, "steps": steps, "batch_size": batch_size, "overrides": list(overrides),
            "machine": machine_description()}


def format_train_table(result: Dict) -> str:
    entries = result["entries"]
    base = entries["report"]["images_per_s"]
    lines = [f"{'entry':<12}{'precision':>10}{'step':>9}{'processes':>10}{'images/s':>10}{'vs report':>10}"
             f"{'GFLOP/img':>10}{'GFLOP/s':>9}{'of peak':>9}{'data wait':>10}"]
    for name, e in entries.items():
        step = "captured" if e["captured"] else "eager"
        lines.append(f"{name:<12}{e['precision']:>10}{step:>9}{e['processes']:>10}{e['images_per_s']:>10,.0f}"
                     f"{e['images_per_s'] / base:>9.2f}x{e['gflop_per_image']:>10.3f}{e['gflop_per_s']:>9.0f}"
                     f"{e['utilization']:>8.0%} {e['data_wait_fraction']:>9.1%}")
    peaks = result["matmul_peak_gflop_per_s"]
    sizes, emulated = result["matmul_sizes"], "" if result["native_bf16"] else ", emulated"
    lines.append(f"matmul peak: fp32 {peaks['fp32']:,.0f} GFLOP/s ({sizes['fp32']}x{sizes['fp32']}), "
                 f"bf16 {peaks['bf16']:,.1f} GFLOP/s ({sizes['bf16']}x{sizes['bf16']}{emulated})")
    settings = f" with {' '.join(result['overrides'])}" if result["overrides"] else ""
    lines.append(f"{result['steps']} timed batches of {result['batch_size']} per entry{settings}; {result['machine']}")
    return "\n".join(lines)
