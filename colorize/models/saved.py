"""Trained models on disk, loadable without any training code: a folder with ``config.json``
(the registered name and settings that rebuild the network, class names, resolution, the
colour scaling it was trained with), ``model.safetensors`` and, for exported models, a model
card ``README.md``. The layout of Hugging Face Hub models, so ``huggingface_hub.upload_folder``
can publish one as it is."""
import contextlib
import functools
import importlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from colorize.core.color import AB_SCALE, L_CENTER, L_HALF_RANGE
from colorize.errors import ColorizeError
from colorize.io import read_json_object, replace_directory, staging_directory
from colorize.models.factory import MODELS, create_model
from colorize.models.head import BIN_CENTRES, set_shift_average, set_temperature

MODEL_CONFIG, MODEL_WEIGHTS, MODEL_CARD = "config.json", "model.safetensors", "README.md"
COLOUR_SCALING = {"l_center": L_CENTER, "l_half_range": L_HALF_RANGE, "ab_scale": AB_SCALE}


class SavedModelError(ColorizeError):
    """A saved-model folder is missing, incomplete or unreadable."""


def write_model(model: torch.nn.Module, folder: Path, classes: List[str], card: Optional[str] = None,
                epoch: Optional[int] = None) -> None:
    """Write the files of ``model`` (made by :func:`~colorize.models.factory.create_model`) for
    ``classes`` into the existing empty ``folder``; ``epoch``: the training epoch it is from (a
    run's ``best/`` records it)."""
    folder = Path(folder)
    state = {key: tensor.detach().contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(folder / MODEL_WEIGHTS))
    config = {"name": model.name, "module": type(model).__module__, "settings": asdict(model.settings),
              "classes": list(classes), "resolution": model.resolution, "colour_scaling": COLOUR_SCALING}
    if epoch is not None:
        config["epoch"] = epoch
    (folder / MODEL_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    if card is not None:
        (folder / MODEL_CARD).write_text(card)


def save_model(model: torch.nn.Module, folder: Path, classes: List[str], card: Optional[str] = None) -> None:
    """Write ``model`` to ``folder`` (built beside it, then renamed into place)."""
    staging = staging_directory(folder)
    write_model(model, staging, classes, card)
    replace_directory(staging, Path(folder))


def is_saved_model(folder) -> bool:
    """Whether ``folder`` holds a saved model's weights and config."""
    folder = Path(folder)
    return (folder / MODEL_WEIGHTS).is_file() and (folder / MODEL_CONFIG).is_file()


def load_model(folder, device="cpu", temperature: Optional[float] = None,
               trust_code: bool = False, shift_average: Optional[bool] = None) -> torch.nn.Module:
    """The network saved in ``folder``, on ``device``, in eval mode, with what it was saved with as
    attributes: ``name`` (registered), ``settings``, ``classes`` and ``resolution``. A network
    with a bin head decodes at ``temperature``, and predictions are averaged over one-pixel
    shifts if ``shift_average`` (defaults: its recipe's). A network colorize does not know is
    registered by importing the module its config names, which runs that module's code: only
    with ``trust_code``."""
    folder = Path(folder)
    if not is_saved_model(folder):
        raise SavedModelError(f"{folder} is not a saved model (it needs {MODEL_CONFIG} and {MODEL_WEIGHTS}); a run "
                              f"keeps its best model in RUN_DIR/best, and colorize export writes one")
    try:
        config = read_json_object(folder / MODEL_CONFIG)
        if config["colour_scaling"] != COLOUR_SCALING:
            raise SavedModelError(f"{folder} was trained with colour scaling {config['colour_scaling']}, "
                                  f"this version uses {COLOUR_SCALING}")
        package = str(config["module"] or "").partition(".")[0]
        if config["name"] not in MODELS.names() and package not in ("", "colorize"):
            _import_trusted(folder, config["module"], trust_code)  # colorize's own are imported already
        settings = MODELS.entry(config["name"]).settings(**config["settings"])
        state = load_file(str(folder / MODEL_WEIGHTS))
        build = functools.partial(create_model, config["name"], settings, len(config["classes"]),
                                  config["resolution"], bins=state.get(BIN_CENTRES))
        # shapes first, on the meta device: a config that describes a huge network takes no memory
        with contextlib.suppress(RuntimeError, NotImplementedError), torch.device("meta"):
            _check_weights_fit(folder, build(), state)
        model = build()
        _check_weights_fit(folder, model, state)  # a network that computes while it is built: checked here
        model.load_state_dict(state)
        model.classes = list(config["classes"])
    except KeyError as missing:
        raise SavedModelError(f"cannot load the model in {folder}: its {MODEL_CONFIG} lacks {missing}") from None
    except (OSError, ValueError, TypeError, RuntimeError, ImportError, SafetensorError) as error:
        raise SavedModelError(f"cannot load the model in {folder}: {error}") from None
    if temperature is not None:
        set_temperature(model, temperature)
    if shift_average is not None:
        set_shift_average(model, shift_average)
    return model.to(torch.device(device)).eval()


def _check_weights_fit(folder: Path, model: torch.nn.Module, state: Dict[str, torch.Tensor]) -> None:
    """Raise, in one line, if the weights ``state`` are not those of ``model``, the network that
    the folder's config describes."""
    expected = model.state_dict()
    reshaped = [f"{name} {list(state[name].shape)} (the network has {list(expected[name].shape)})"
                for name in expected.keys() & state.keys() if state[name].shape != expected[name].shape]
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if not (reshaped or missing or unexpected):
        return
    found = [f"{len(reshaped)} of another shape, such as {min(reshaped)}"] if reshaped else []
    found += [f"{len(missing)} missing, such as {missing[0]}"] if missing else []
    found += [f"{len(unexpected)} unknown to it, such as {unexpected[0]}"] if unexpected else []
    raise SavedModelError(f"cannot load the model in {folder}: its {MODEL_WEIGHTS} does not fit the network its "
                          f"{MODEL_CONFIG} describes ({'; '.join(found)}); both must come from the same save")


def _import_trusted(folder: Path, module: str, trust_code: bool) -> None:
    """Import ``module``, which registers the network of the model in ``folder``, if ``trust_code``."""
    if not trust_code:
        raise SavedModelError(f"{folder} holds a network from module {module}; loading it imports that "
                              f"module, which runs its code: pass --trust-code (trust_code=True in Python) "
                              f"if you trust it")
    importlib.import_module(module)


