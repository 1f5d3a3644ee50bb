"""``colorize export RUN_DIR OUT``: a run's best model as a folder that loads anywhere (a saved
model, :mod:`colorize.models.saved`, with a model card). An export deletes nothing it did not write."""
from pathlib import Path

import torch

from colorize.errors import ColorizeError
from colorize.models.saved import MODEL_CARD, MODEL_CONFIG, MODEL_WEIGHTS, is_saved_model, load_model, save_model
from colorize.run_dir import check_run_dir, model_folder, read_metrics


def model_card(model: torch.nn.Module, metrics: dict) -> str:
    """A model card (README.md) naming the network, its data and its test metrics."""
    test = metrics.get("test", {})
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in test.items() if isinstance(value, float))
    return (f"---\nlibrary_name: colorize\ntags: [image-colorization]\n---\n\n"
            f"# colorize model: {model.name}\n\n"
            f"Predicts the a and b channels (CIELAB) of {model.resolution}x{model.resolution} images from their "
            f"L channel, and their class among: {', '.join(model.classes)}.\n\n"
            f"Run `{metrics.get('run', '?')}`: best epoch {metrics.get('best_epoch', '?')} of "
            f"{metrics.get('epochs_run', '?')}, on {metrics.get('device', '?')} ({metrics.get('cpu', '?')}).\n\n"
            f"| test metric | value |\n|---|---|\n{rows}\n\n"
            "Load it with `colorize.load_model(FOLDER)` or `FusionColorizer.from_pretrained(FOLDER)`, or "
            "colourize photos with `colorize colorize --checkpoint FOLDER PHOTOS --out OUT`.\n")


def _check_export_target(run_dir: Path, out: Path, replace: bool) -> None:
    """Refuse an ``out`` that overlaps ``run_dir`` or holds anything but an earlier export (which
    only ``replace`` lets an export overwrite): an export deletes nothing it did not write."""
    run, target = run_dir.resolve(), out.resolve()
    overlap = ("is" if target == run else "lies inside" if run in target.parents
               else "contains" if target in run.parents else None)
    if overlap:
        raise ColorizeError(f"{out} {overlap} the run directory {run_dir}; export to a folder outside it")
    if not (out.exists() or out.is_symlink()):
        return
    ours = (MODEL_CONFIG, MODEL_WEIGHTS, MODEL_CARD)
    if not is_saved_model(out) or any(path.name not in ours for path in out.iterdir()):
        raise ColorizeError(f"{out} already exists and is not an earlier export; export to a new folder, or "
                            f"move {out} away first")
    if not replace:
        raise ColorizeError(f"{out} already holds a saved model; pass --replace (replace=True in Python) "
                            f"to overwrite it")


def export_run(run_dir, out, replace: bool = False, trust_code: bool = False) -> Path:
    """Write ``run_dir``'s best model to the new folder ``out`` as a saved model with a model
    card; ``replace``: overwrite an earlier export there."""
    run_dir, out = check_run_dir(run_dir), Path(out)
    _check_export_target(run_dir, out, replace)
    model = load_model(model_folder(run_dir), trust_code=trust_code)
    metrics = read_metrics(run_dir)
    save_model(model, out, model.classes, card=model_card(model, metrics))
    return out
