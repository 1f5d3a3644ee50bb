"""Trained models on disk, loadable without any training code: a folder with ``config.json``
(the registered name and settings that rebuild the network, class names, resolution, the
colour scaling it was trained with), ``model.safetensors`` and, for exported models, a model
card ``README.md``. The layout of Hugging Face Hub models, so ``huggingface_hub.upload_folder``
can publish one as it is."""
import importlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, List, NamedTuple, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from colorize.color import AB_SCALE, L_CENTER, L_HALF_RANGE
from colorize.errors import ColorizeError
from colorize.io import replace_directory, staging_directory
from colorize.models.base import Colorizer
from colorize.models.head import BIN_CENTRES, set_temperature
from colorize.models.registry import create_model
from colorize.registry import MODELS
from colorize.run_dir import METRICS, check_run_dir, model_folder

CONFIG, WEIGHTS, CARD = "config.json", "model.safetensors", "README.md"
_LEGACY_CONFIG = "model.json"  # best/ of runs trained before config.json
COLOUR_SCALING = {"l_center": L_CENTER, "l_half_range": L_HALF_RANGE, "ab_scale": AB_SCALE}


class SavedModelError(ColorizeError):
    """A saved-model folder is missing, incomplete or unreadable."""


class LoadedModel(NamedTuple):
    model: Colorizer  # in eval mode
    name: str
    settings: Any  # the registered settings dataclass of ``name``
    classes: List[str]
    resolution: int


def write_model(model: Colorizer, folder: Path, name: str, settings, classes: List[str], resolution: int,
                card: Optional[str] = None, epoch: Optional[int] = None) -> None:
    """Write ``model``'s files into the existing empty ``folder``; ``epoch``: the training epoch
    it is from (a run's ``best/`` records it)."""
    folder = Path(folder)
    state = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))
    config = {"name": name, "module": type(model).__module__, "settings": asdict(settings),
              "classes": list(classes), "resolution": resolution, "colour_scaling": COLOUR_SCALING}
    if epoch is not None:
        config["epoch"] = epoch
    (folder / CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if card is not None:
        (folder / CARD).write_text(card)


def save_model(model: Colorizer, folder: Path, name: str, settings, classes: List[str], resolution: int,
               card: Optional[str] = None) -> None:
    """Write ``model`` to ``folder`` (built beside it, then renamed into place)."""
    staging = staging_directory(folder)
    write_model(model, staging, name, settings, classes, resolution, card)
    replace_directory(staging, Path(folder))


def _read_config(folder: Path) -> dict:
    if (folder / CONFIG).is_file():
        return json.loads((folder / CONFIG).read_text())
    legacy = json.loads((folder / _LEGACY_CONFIG).read_text())
    kwargs = dict(legacy["kwargs"])
    return {"name": legacy["name"], "module": None, "classes": legacy["classes"],
            "resolution": kwargs.pop("resolution"), "settings": {k: v for k, v in kwargs.items() if k != "num_classes"},
            "colour_scaling": COLOUR_SCALING}


def is_saved_model(folder) -> bool:
    """Whether ``folder`` holds a saved model's weights and config."""
    folder = Path(folder)
    return (folder / WEIGHTS).is_file() and any((folder / c).is_file() for c in (CONFIG, _LEGACY_CONFIG))


def load_model(folder, device="cpu", temperature: Optional[float] = None,
               trust_code: bool = False) -> LoadedModel:
    """The model saved in ``folder``, on ``device``, in eval mode; a network with a bin head
    decodes at ``temperature`` (default: its recipe's). A network colorize does not know is
    registered by importing the module its config names, which runs that module's code: only
    with ``trust_code``."""
    folder = Path(folder)
    if not is_saved_model(folder):
        raise SavedModelError(f"{folder} is not a saved model (it needs {CONFIG} and {WEIGHTS}); a run "
                              f"keeps its best model in RUN_DIR/best, and colorize export writes one")
    try:
        config = _read_config(folder)
        if config["colour_scaling"] != COLOUR_SCALING:
            raise SavedModelError(f"{folder} was trained with colour scaling {config['colour_scaling']}, "
                                  f"this version uses {COLOUR_SCALING}")
        if config["name"] not in MODELS.names() and config["module"]:
            _import_trusted(folder, config["module"], trust_code)
        settings = MODELS.entry(config["name"]).settings(**config["settings"])
        state = load_file(str(folder / WEIGHTS))
        model = create_model(config["name"], settings, len(config["classes"]), config["resolution"],
                             bins=state.get(BIN_CENTRES))
        model.load_state_dict(state)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, ImportError, SafetensorError) as error:
        raise SavedModelError(f"cannot load the model in {folder}: {error}") from None
    if temperature is not None:
        set_temperature(model, temperature)
    return LoadedModel(model.to(torch.device(device)).eval(), config["name"], settings, config["classes"],
                       config["resolution"])


def _import_trusted(folder: Path, module: str, trust_code: bool) -> None:
    """Import ``module``, which registers the network of the model in ``folder``, if ``trust_code``."""
    if not trust_code:
        raise SavedModelError(f"{folder} holds a network from module {module}; loading it imports that "
                              f"module, which runs its code: pass --trust-code (trust_code=True in Python) "
                              f"if you trust it")
    importlib.import_module(module)


def model_card(loaded: LoadedModel, metrics: dict) -> str:
    """A model card (README.md) naming the network, its data and its test metrics."""
    test = metrics.get("test", {})
    rows = "\n".join(f"| {name} | {value:.4f} |" for name, value in test.items() if isinstance(value, float))
    return (f"---\nlibrary_name: colorize\ntags: [image-colorization]\n---\n\n"
            f"# colorize model: {loaded.name}\n\n"
            f"Predicts the a and b channels (CIELAB) of {loaded.resolution}x{loaded.resolution} images from their "
            f"L channel, and their class among: {', '.join(loaded.classes)}.\n\n"
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
    if not is_saved_model(out) or any(path.name not in (CONFIG, WEIGHTS, CARD) for path in out.iterdir()):
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
    loaded = load_model(model_folder(run_dir), trust_code=trust_code)
    metrics = json.loads((run_dir / METRICS).read_text()) if (run_dir / METRICS).is_file() else {}
    save_model(loaded.model, out, loaded.name, loaded.settings, loaded.classes, loaded.resolution,
               card=model_card(loaded, metrics))
    return out
