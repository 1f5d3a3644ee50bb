"""``colorize report RUN_DIR...``: run directories as a Markdown results table. Runs whose
settings differ only in ``train.seed`` and in where and how they were computed
(``colorize.settings.INCIDENTAL``) are one recipe: the mean of each figure, +- its standard
deviation over the seeds. ``--per-class`` tabulates each
class's test figures per recipe instead, and ``--plot`` draws the frontier of colourfulness
against error."""
import json
import os
import re
import statistics
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from colorize.config import flat_settings, load_run_config
from colorize.engine.runtime import precision_label
from colorize.errors import ColorizeError
from colorize.io import atomic_path
from colorize.models.base import gflop_per_image, parameter_count
from colorize.models.saved import load_model
from colorize.run_dir import METRICS, check_run_dir, distinct_runs, model_folder, read_metrics
from colorize.settings import INCIDENTAL, is_setting_among

# Runs whose settings differ only in these are seeds of one recipe.
_NOT_THE_RECIPE = (*INCIDENTAL, "train.seed")

# (column, how to read it from metrics.json, format)
_FIGURES = (
    ("epochs", lambda m: m["epochs_run"], "{:.0f}"),
    ("wall time (min)", lambda m: m["wall_time_s"] / 60, "{:.1f}"),
    ("train images/s", lambda m: m["train_images_per_s"], "{:,.0f}"),
    ("test ab L1", lambda m: m["test"]["ab_l1"], "{:.3f}"),
    ("PSNR (dB)", lambda m: m["test"]["psnr"], "{:.2f}"),
    ("colourfulness ratio", lambda m: m["test"]["colorfulness_ratio"], "{:.3f}"),
    ("ab AUC", lambda m: m["test"]["ab_auc"], "{:.3f}"),
    ("accuracy", lambda m: m["test"]["accuracy"], "{:.3f}"),
)


def _recipe_key(settings: dict) -> str:
    return json.dumps({k: v for k, v in settings.items() if not is_setting_among(k, _NOT_THE_RECIPE)}, sort_keys=True)


def _recipe_name(names: List[str]) -> str:
    """The run names' common beginning, without a trailing separator ("ref-s0", "ref-s1" -> "ref")."""
    if len(names) == 1:
        return names[0]
    return re.sub(r"[-_.]+(seed|s)?$", "", os.path.commonprefix(names)) or names[0]


def _spread(values: List[float], fmt: str) -> str:
    if len(values) == 1:
        return fmt.format(values[0])
    return f"{fmt.format(statistics.mean(values))} +- {fmt.format(statistics.stdev(values))}"


def _network(run_dir: Path, settings: dict, trust_code: bool) -> Dict[str, str]:
    model = load_model(model_folder(run_dir), trust_code=trust_code)
    # settings that are off, and the bin head's with an ab head, say nothing of the network
    regression = settings.get("model.head", "ab") == "ab"
    shown = {k: v for k, v in settings.items() if k.startswith("model.") and k != "model.name"
             and v is not False and not (regression and k in ("model.head", "model.temperature"))}
    name = settings["model.name"] + "".join(f", {k[6:]}={v}" for k, v in shown.items())
    return {"network": name, "parameters": f"{parameter_count(model):,}",
            "GFLOP/image": f"{gflop_per_image(model, model.resolution):.3f}"}


Run = Tuple[Path, dict, dict]  # run directory, its flat settings, its metrics


def recipes(run_dirs: Sequence[Path], trust_code: bool = False) -> Dict[str, List[Run]]:
    """``run_dirs`` grouped by recipe, named as :func:`report_table` shows them, in the order first
    seen (a run given twice counts once); the runs' ``imports:`` are imported only with ``trust_code``."""
    groups: Dict[str, List[Run]] = {}
    for run_dir in map(check_run_dir, distinct_runs(run_dirs)):
        metrics = read_metrics(run_dir)
        if "test" not in metrics:
            raise ColorizeError(f"{run_dir} has no test metrics yet (its {METRICS} is written "
                                f"when training ends); finish it with colorize train --resume {run_dir}")
        settings = flat_settings(load_run_config(run_dir, trust_code=trust_code))
        groups.setdefault(_recipe_key(settings), []).append((run_dir, settings, metrics))
    return {_recipe_name([s["run.name"] for _, s, _ in runs]): runs for runs in groups.values()}


def _figure(read, run_dir: Path, metrics: dict) -> float:
    try:
        return read(metrics)
    except KeyError as missing:
        raise ColorizeError(f"{run_dir}/{METRICS} lacks {missing}: it was written by another version of "
                            f"colorize; train the run again to report it") from None


def report_table(run_dirs: Sequence[Path], trust_code: bool = False) -> str:
    """The Markdown table of ``run_dirs``, one row per recipe, in the order first seen; the
    runs' ``imports:`` and their models' modules are imported only with ``trust_code``."""
    columns = ["recipe", "network", "parameters", "GFLOP/image", *(c for c, _, _ in _FIGURES), "seeds", "machine"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for recipe, runs in recipes(run_dirs, trust_code).items():
        first_dir, settings, _ = runs[0]
        row = {"recipe": recipe, **_network(first_dir, settings, trust_code)}
        for column, read, fmt in _FIGURES:
            row[column] = _spread([_figure(read, run_dir, m) for run_dir, _, m in runs], fmt)
        row["seeds"] = ", ".join(str(s["train.seed"]) for _, s, _ in runs)
        machines = sorted({f"{m['device']} ({m['cpu']}), {m['world_size']} process"
                           f"{'es' if m['world_size'] > 1 else ''}, {precision_label(m['mixed_precision'])}"
                           for _, _, m in runs})
        row["machine"] = "; ".join(machines)
        lines.append("| " + " | ".join(row[c] for c in columns) + " |")
    return "\n".join(lines)


def per_class_table(run_dirs: Sequence[Path], trust_code: bool = False) -> str:
    """A Markdown table of each class's test ab L1 and colourfulness ratio (mean +- spread over
    seeds), one pair of columns per recipe, hardest class (highest error of the first recipe) first."""
    groups = recipes(run_dirs, trust_code)
    for runs in groups.values():
        for run_dir, _, metrics in runs:
            if "per_class" not in metrics["test"]:
                raise ColorizeError(f"{run_dir}'s test metrics have no per-class figures; measure them with "
                                    f"colorize evaluate {run_dir} --json")
    first = next(iter(groups.values()))
    classes = sorted(first[0][2]["test"]["per_class"], key=lambda name: -statistics.mean(
        m["test"]["per_class"][name]["ab_l1"] for _, _, m in first))
    header = ["class", *(f"{recipe}: {figure}" for recipe in groups for figure in ("ab L1", "colourfulness"))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in classes:
        cells = [name]
        for runs in groups.values():
            figures = [m["test"]["per_class"][name] for _, _, m in runs]
            cells += [_spread([f["ab_l1"] for f in figures], "{:.3f}"),
                      _spread([f["colorfulness_ratio"] for f in figures], "{:.3f}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _deviation(values: List[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def plot_frontier(run_dirs: Sequence[Path], out: Path, trust_code: bool = False) -> None:
    """Draw test colourfulness ratio against test ab L1 to ``out`` (a PNG): a dot per run and, per
    recipe, its mean with error bars of one standard deviation over the seeds."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5), dpi=150)
    for recipe, runs in recipes(run_dirs, trust_code).items():
        errors = [m["test"]["ab_l1"] for _, _, m in runs]
        ratios = [m["test"]["colorfulness_ratio"] for _, _, m in runs]
        line = axes.errorbar(statistics.mean(errors), statistics.mean(ratios), xerr=_deviation(errors),
                             yerr=_deviation(ratios), fmt="o", markersize=7, capsize=3,
                             label=f"{recipe} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        axes.scatter(errors, ratios, s=12, color=line[0].get_color(), alpha=0.5)
    axes.set_xlabel("test ab L1 (lower is better)")
    axes.set_ylabel("test colourfulness ratio (1: as colourful as the photos)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    with atomic_path(Path(out)) as temporary:
        figure.savefig(temporary, format="png")
    pyplot.close(figure)
