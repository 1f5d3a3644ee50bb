"""Evaluation: metrics of a model over a split, exact over any number of processes."""
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch
from accelerate import Accelerator
from torch import nn

from colorize.config import Config, load_run_config
from colorize.core.metrics import MetricSums
from colorize.data.loaders import SplitLoader, build_loaders
from colorize.data.manifest import read_manifest
from colorize.engine.runtime import create_accelerator, run_scope
from colorize.errors import ConfigError
from colorize.models.saved import load_model
from colorize.run_dir import model_folder


@torch.no_grad()
def evaluate(model: nn.Module, loader: SplitLoader, accelerator: Accelerator,
             classes: Optional[Sequence[str]] = None) -> Dict[str, float]:
    """Metrics of ``model`` (not DDP-wrapped) over ``loader``'s split, summed over processes;
    with ``classes`` (the split's class names), each class's too."""
    was_training = model.training
    model.eval()
    sums = MetricSums(accelerator.device, classes)
    for batch in loader:
        with accelerator.autocast():
            prediction = model(batch.l)
        sums.update(batch.l, prediction.ab, batch.ab, prediction.logits, batch.label, batch.valid)
    model.train(was_training)
    return sums.compute(lambda total: accelerator.reduce(total, reduction="sum"))


def evaluate_run(run_dir: Path, data_dir: Optional[str] = None, split: str = "test",
                 temperature: Optional[float] = None, trust_code: bool = False,
                 shift_average: Optional[bool] = None) -> Optional[Dict[str, float]]:
    """Metrics of ``run_dir``'s best model on ``split`` of ``data_dir`` (default: the run's own
    data), with the run's loader and precision settings, returned on the main process (None on
    the others); bin scores decoded at ``temperature`` and predictions averaged over one-pixel
    shifts if ``shift_average`` (defaults: the model's). The run's
    ``imports:`` and its model's module are imported only with ``trust_code``."""
    config = load_run_config(run_dir, trust_code=trust_code)
    if data_dir is not None:
        config.data.dir = str(data_dir)
    config.data.train_limit = config.data.eval_limit = None  # the whole split
    with run_scope():
        accelerator, _ = create_accelerator(config.train)
        try:
            model = load_model(model_folder(run_dir), accelerator.device, temperature, trust_code, shift_average)
            metrics = _evaluate_split(config, model, Path(run_dir), split, accelerator)
            accelerator.wait_for_everyone()
            return metrics if accelerator.is_main_process else None
        finally:
            accelerator.end_training()  # leave the process group cleanly


def _evaluate_split(config: Config, model: nn.Module, run_dir: Path, split: str,
                    accelerator: Accelerator) -> Dict[str, float]:
    classes = read_manifest(Path(config.data.dir))["classes"]
    if classes != model.classes:
        raise ConfigError(f"{config.data.dir} has classes {classes}, but {run_dir} was trained on {model.classes}")
    loader = build_loaders(config.data, rank=accelerator.process_index, world=accelerator.num_processes,
                           device=accelerator.device, splits=(split,), train_split_for_training=False)[split]
    return {**evaluate(model, loader, accelerator, classes), "split": split, "processes": accelerator.num_processes}
