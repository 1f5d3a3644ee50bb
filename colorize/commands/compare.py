"""``colorize compare RUN_DIR... --out FILE``: the same validation images colourized by the best
model of each run, in one picture (grey input, one row per run, truth)."""
import contextlib
from pathlib import Path
from typing import Optional, Sequence

from colorize.config import load_run_config
from colorize.data.loaders import build_loaders
from colorize.data.manifest import read_manifest
from colorize.errors import ConfigError
from colorize.models.head import has_bin_head
from colorize.models.saved import load_model
from colorize.run_dir import distinct_runs, model_folder
from colorize.settings import DataConfig
from colorize.show import grids


def compare_runs(run_dirs: Sequence[Path], out: Path, per_class: int = 1, data_dir: Optional[str] = None,
                 temperatures: Sequence[float] = (), trust_code: bool = False) -> Path:
    """Draw the comparison of ``run_dirs`` on the first ``per_class`` validation images of each
    class of ``data_dir`` (default: the first run's data) into the PNG ``out``, a row per run
    labelled with its name (and its folder, when runs share a name). A run whose network has a
    bin head gets a row per one of ``temperatures`` (default: one, its own; they are refused
    when no run has a bin head). The runs' ``imports:`` and their models' modules are imported
    only with ``trust_code``."""
    runs = distinct_runs(run_dirs)
    configs = [load_run_config(run, trust_code=trust_code) for run in runs]
    data_dir = data_dir or configs[0].data.dir
    classes = read_manifest(Path(data_dir))["classes"]
    names = [config.run.name for config in configs]
    models = {}
    for run, name in zip(runs, names):
        label = name if names.count(name) == 1 else f"{name} ({run})"  # runs of one name keep a row each
        model = load_model(model_folder(run), trust_code=trust_code)
        if model.classes != classes:
            raise ConfigError(f"{run} was trained on classes {model.classes}, but {data_dir} has {classes}")
        if temperatures and has_bin_head(model):
            for temperature in temperatures:
                models[f"{label} T={temperature:g}"] = load_model(
                    model_folder(run), temperature=temperature, trust_code=trust_code)
        else:
            models[label] = model
    if temperatures and not any(map(has_bin_head, models.values())):
        raise ConfigError(f"--temperatures applies to networks with a bin head (model.head=bins); none of "
                          f"{', '.join(map(str, runs))} has one: leave it out")
    val = build_loaders(DataConfig(dir=str(data_dir), loader="memory"), splits=("val",))["val"]
    samples = grids.pick_per_class(val, len(classes), per_class)
    grids.save_png(grids.comparison_grid(models, samples, classes, contextlib.nullcontext), Path(out))
    return Path(out)
