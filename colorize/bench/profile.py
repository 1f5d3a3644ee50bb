"""``colorize bench train --profile TOP``: the operators that take a training step's time on
the CPU, by torch.profiler."""
from pathlib import Path
from typing import Sequence

import torch

from colorize.bench.machine import machine_description
from colorize.config import load_config, recipe_path
from colorize.data.loaders import Batch
from colorize.data.manifest import read_manifest
from colorize.engine.build import build_loss, build_model, data_prior
from colorize.engine.runtime import precision_label, resolve_precision
from colorize.optim import build_optimizer


def profile_step(data_dir: Path, batch_size: int, top: int, overrides: Sequence[str] = (), steps: int = 4) -> str:
    """The ``top`` operators by time of ``steps`` training steps of the reference recipe's model
    with ``overrides``, in the precision its ``train.mixed_precision`` resolves to on this CPU, in
    this process, on random images at the data's resolution, as a table (torch.profiler)."""
    config, manifest = load_config(str(recipe_path("reference")), overrides), read_manifest(data_dir)
    precision = resolve_precision(config.train.mixed_precision, cuda=False).name
    resolution = manifest["resolution"]
    prior = data_prior(config, manifest, data_dir)
    model = build_model(config, manifest, prior)
    layout = torch.channels_last if config.train.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    optimizer = build_optimizer(config.optim.name, config.optim.settings, model, config.optim.settings.lr)
    l = (torch.rand(batch_size, 1, resolution, resolution) * 100).contiguous(memory_format=layout)
    ab = torch.randn(batch_size, 2, resolution, resolution) * 20
    label = torch.randint(0, len(manifest["classes"]), (batch_size,))
    batch = Batch(l, ab, label, index=torch.arange(batch_size), valid=torch.ones(batch_size, dtype=torch.bool))

    loss = build_loss(config, prior, torch.device("cpu"))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            prediction = model(l)
        loss(prediction, batch)["total"].backward()
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
    lines.append(f"{optimizer_time / total:>6.1%}{optimizer_time / steps / 1e3:>9.1f}  "
                 "the optimizer step, all its operators")
    lines.append(f"{total / steps / 1e3:.0f} ms per step of {batch_size} images, {precision_label(precision)}, "
                 f"{torch.get_num_threads()} threads; {machine_description()}")
    return "\n".join(lines)
