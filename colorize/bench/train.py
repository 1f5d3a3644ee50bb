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
- ``cpu_ddp``, without GPUs: the same in two DDP processes (as ``launch/cpu-ddp.yaml``), the layout
  ``make train`` is measured against.

Each entry times ``steps`` batches after ``steps`` warm-up ones (``colorize train`` entries run
two epochs of ``steps`` batches in a fresh process and keep the second). Beside them: GFLOP per
training image (forward and backward, counted by torch), achieved GFLOP/s, the machine's measured
matmul peak in fp32 and bf16, and utilization = achieved / peak of the entry's precision.
"""
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from colorize.bench.machine import machine_description, matmul_peak
from colorize.bench.report_pipeline import report_pipeline
from colorize.commands.launch import accelerate_launch, launch_command
from colorize.config import load_config, recipe_path
from colorize.data.manifest import read_manifest
from colorize.engine.build import build_model, data_prior
from colorize.engine.runtime import has_native_bf16, precision_label
from colorize.errors import ColorizeError
from colorize.models.base import gflop_per_image
from colorize.run_dir import read_metrics

RECIPE = recipe_path("reference")
DEFAULT_STEPS = {"cpu": 16, "cuda": 80}  # a GPU takes milliseconds for 16 batches: too short to time well


def matmul_sizes(device: torch.device, native_bf16: bool) -> Dict[str, int]:
    """The side of the square products that measure each precision's peak: 8192 on a GPU (smaller
    ones leave its cores idle and time kernel launches), 2048 on a CPU, and 512 for bf16 that the
    CPU emulates (so slow that 512 shows its rate in reasonable time)."""
    if device.type == "cuda":
        return {"fp32": 8192, "bf16": 8192}
    return {"fp32": 2048, "bf16": 2048 if native_bf16 else 512}


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
    metrics = read_metrics(run_dir)
    epoch = metrics["history"][1]["train"]
    return {"precision": precision_label(metrics["mixed_precision"]), "captured": metrics["cuda_graphs"],
            "processes": metrics["world_size"], "images_per_s": epoch["images_per_s"],
            "data_wait_fraction": epoch["data_wait_fraction"]}


def train_benchmark(data_dir: Path, steps: Optional[int] = None, batch_size: int = 512, skip: Sequence[str] = (),
                    overrides: Sequence[str] = ()) -> Dict:
    """Every entry of the module's docstring but those in ``skip`` (``bf16`` is skipped where
    it is not native), each timed over ``steps`` batches (default: :data:`DEFAULT_STEPS` of the
    device), with the machine's matmul peaks; ``overrides`` (``key=value`` settings) apply to the
    ``colorize train`` entries."""
    config = load_config(str(RECIPE), overrides)  # a mistyped setting fails here, not in a training run
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps = DEFAULT_STEPS[device.type] if steps is None else steps
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
        runs["cpu_ddp"] = ("auto", accelerate_launch(2), ())
    skip = set(skip) | (set() if native_bf16 else {"bf16"})
    runs = {name: run for name, run in runs.items() if name not in skip}
    with tempfile.TemporaryDirectory(prefix="colorize-bench-") as scratch:
        for name, (precision, launcher, settings) in runs.items():
            print(f"timing {name}...", file=sys.stderr, flush=True)
            entries[name] = training_run(data_dir, Path(scratch) / name, steps, batch_size, precision, launcher,
                                         [*overrides, *settings])
    ours = gflop_per_image(build_model(config, manifest, data_prior(config, manifest, data_dir)),
                           manifest["resolution"])
    sizes = matmul_sizes(device, native_bf16)
    peaks = {name: matmul_peak(dtype, device, sizes[name])
             for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    for entry in entries.values():
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
