"""Evaluation: metrics of a model over a split, exact over any number of processes."""
from pathlib import Path
from typing import Dict, Optional

import torch
from accelerate import Accelerator
from torch import nn

from colorize.config import ConfigError, load_config
from colorize.data.loaders import SplitLoader, build_loaders
from colorize.data.manifest import read_manifest
from colorize.engine.runtime import create_accelerator
from colorize.metrics import MetricSums
from colorize.models.saved import load_model
from colorize.run_dir import BEST, CONFIG, check_run_dir


@torch.no_grad()
def evaluate(model: nn.Module, loader: SplitLoader, accelerator: Accelerator) -> Dict[str, float]:
    """Metrics of ``model`` (not DDP-wrapped) over ``loader``'s split, summed over processes."""
    was_training = model.training
    model.eval()
    sums = MetricSums(accelerator.device)
    for batch in loader:
        with accelerator.autocast():
            prediction = model(batch.l)
        sums.update(batch.l, prediction.ab, batch.ab, prediction.logits, batch.label, batch.valid)
    model.train(was_training)
    return sums.compute(lambda total: accelerator.reduce(total, reduction="sum"))


def evaluate_run(run_dir: Path, data_dir: Optional[str] = None, split: str = "test",
                 temperature: Optional[float] = None) -> Dict[str, float]:
    """Metrics of ``run_dir``'s best model on ``split`` of ``data_dir`` (default: the run's own
    data), with the run's loader and precision settings; bin scores decoded at ``temperature``
    (default: the model's)."""
    config = load_config(str(check_run_dir(run_dir) / CONFIG))
    if data_dir is not None:
        config.data.dir = str(data_dir)
    config.data.train_limit = config.data.eval_limit = None  # the whole split
    accelerator, _ = create_accelerator(config.train)
    loaded = load_model(Path(run_dir) / BEST, accelerator.device, temperature)
    classes = read_manifest(Path(config.data.dir))["classes"]
    if classes != loaded.classes:
        raise ConfigError(f"{config.data.dir} has classes {classes}, but {run_dir} was trained on {loaded.classes}")
    loader = build_loaders(config.data, rank=accelerator.process_index, world=accelerator.num_processes,
                           device=accelerator.device, splits=(split,), train_split_for_training=False)[split]
    metrics = {**evaluate(loaded.model, loader, accelerator), "split": split, "processes": accelerator.num_processes}
    accelerator.wait_for_everyone()
    accelerator.end_training()  # leave the process group cleanly
    return metrics
