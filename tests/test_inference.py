"""Colourizing people's own photos: any size and mode, L kept, bad files reported."""
import json
import os
from pathlib import PurePath

import numpy as np
import pytest
import skimage.data
import torch
from conftest import run_cli
from PIL import Image
from safetensors.torch import save_file
from skimage.color import rgb2lab

from colorize.commands.inference import Report, _output_paths, colorize_files, expand_inputs
from colorize.core.color import lab_to_rgb_keeping_l
from colorize.models import MODELS, create_model
from colorize.models.fusion import FusionColorizer, FusionSettings
from colorize.models.saved import SavedModelError, load_model, save_model

PHOTOS = {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(),
          "chelsea": skimage.data.chelsea()}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A saved (untrained) model: enough to test the mechanics."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("run") / "model"
    model = create_model("fusion")
    with torch.no_grad():  # make the untrained decoder predict strong colours
        model.decoder[-1].bias.copy_(torch.tensor([0.4, -0.4]))
    save_model(model, path, [str(i) for i in range(10)])
    return path


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(PHOTOS["astronaut"]).save(folder / "astronaut.png")
    Image.fromarray(PHOTOS["coffee"]).save(folder / "coffee.jpg", quality=95)
    Image.fromarray(PHOTOS["chelsea"]).save(folder / "chelsea.png")
    grey = skimage.data.camera()
    Image.fromarray(grey).save(folder / "camera.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "camera16.png")  # 16-bit grey
    Image.fromarray(PHOTOS["chelsea"]).convert("P").save(folder / "palette.png")
    Image.fromarray(PHOTOS["chelsea"]).convert("RGBA").save(folder / "alpha.png")
    (folder / "broken.png").write_text("not an image")
    (folder / "notes.txt").write_text("not an image, and not named like one")
    return folder


def test_photos_keep_size_and_l_and_bad_files_are_reported(run_dir, photos, tmp_path):
    out = tmp_path / "out"
    result = run_cli("colorize", "--checkpoint", run_dir, photos, "--out", out, check=False)
    assert result.returncode == 1  # one input failed
    assert f"{photos / 'broken.png'}: not a readable image" in result.stderr and "Traceback" not in result.stderr
    assert "notes.txt" not in result.stderr
    assert (f"colourized 7 images into {out}; 1 failed; passed over 1 file whose suffix is not an image's, "
            f"such as {photos / 'notes.txt'}") in result.stdout
    written = sorted(p.name for p in out.iterdir())
    assert written == ["alpha.png", "astronaut.png", "camera.png", "camera16.png", "chelsea.png",
                       "coffee.png", "palette.png"]
    originals = {**PHOTOS, "coffee": np.asarray(Image.open(photos / "coffee.jpg")),
                 "camera16": np.repeat(skimage.data.camera()[..., None], 3, axis=2)}
    for name, original in originals.items():
        colourized = np.asarray(Image.open(out / f"{name}.png"))
        assert colourized.shape == original.shape, name
        l_error = np.abs(rgb2lab(colourized)[..., 0] - rgb2lab(original)[..., 0])
        assert l_error.max() < 0.5, name  # equal within 8-bit rounding
        assert np.abs(rgb2lab(colourized)[..., 1:]).mean() > 2, name  # and coloured


def test_shift_average_at_use_time_changes_the_colours_and_keeps_l(run_dir, photos, tmp_path):
    colours = {}
    for shift_average in (False, True):
        out = tmp_path / str(shift_average)
        colorize_files(run_dir, [photos / "chelsea.png"], out, shift_average=shift_average)
        colours[shift_average] = np.asarray(Image.open(out / "chelsea.png"))
        assert np.abs(rgb2lab(colours[shift_average])[..., 0] - rgb2lab(PHOTOS["chelsea"])[..., 0]).max() < 0.5
    assert not np.array_equal(colours[False], colours[True])


def test_an_image_over_the_pixel_limit_is_reported_and_the_others_processed(run_dir, tmp_path,
                                                                           monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(PHOTOS["chelsea"][:30, :30]).save(folder / "small.png")  # 900 pixels
    Image.fromarray(PHOTOS["chelsea"][:100, :100]).save(folder / "large.png")  # 10,000 pixels
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # decoding fails above 2,000 pixels
    report = colorize_files(run_dir, [str(folder)], tmp_path / "out", device=torch.device("cpu"))
    assert [p.name for p in report.written] == ["small.png"]
    assert len(report.failed) == 1
    assert "large.png: too large" in report.failed[0] and "10000 pixels" in report.failed[0]
    assert "2000 pixels" in report.failed[0]


def test_out_must_not_overwrite_an_input(run_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(PHOTOS["chelsea"]).save(folder / "a.jpg")
    Image.fromarray(PHOTOS["coffee"]).save(folder / "b.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = run_cli("colorize", "--checkpoint", run_dir, folder / "a.jpg", folder / "b.png",
                     "--out", tmp_path / "in" / ".." / "in", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "b.png" in result.stderr and "choose another --out" in result.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing written


def test_globs_files_and_directories(photos, tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("text")
    found = expand_inputs([str(photos / "a*.png"), str(photos / "coffee.jpg"), str(tmp_path / "none*"),
                           str(tmp_path / "empty"), str(tmp_path / "notes"), str(photos / "*.txt"),
                           str(photos / "notes.txt")])  # named: tried whatever its suffix
    assert [f.name for f in found.files] == ["alpha.png", "astronaut.png", "coffee.jpg", "notes.txt"]
    suffixes = ".png .jpg .jpeg .jpe .jfif .heic .heif .avif .webp .bmp .gif .tif .tiff .jp2 .ppm .pgm .pbm .pnm"
    assert found.errors == [f"{tmp_path / 'none*'}: no such file, directory or matching glob",
                            f"{tmp_path / 'empty'}: a directory with no image files (suffixes {suffixes})",
                            f"{tmp_path / 'notes'}: a directory with no image files (suffixes {suffixes})",
                            f"{photos / '*.txt'}: a glob with no image files (suffixes {suffixes})"]
    assert found.passed_over == [tmp_path / "notes" / "a.txt"]  # notes.txt is named too
    found = expand_inputs([str(photos)])
    assert len(found.files) == 8 and [p.name for p in found.passed_over] == ["notes.txt"]


def test_many_inputs_are_listed_in_linear_time_and_a_taken_output_is_skipped(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(1000):
        (folder / f"{i:04d}.jpg").touch()
    (folder / "0000.png").touch()  # its output is 0000.jpg's
    comparisons = 0
    equal = PurePath.__eq__

    def counting_equal(self, other):
        nonlocal comparisons
        comparisons += 1
        return equal(self, other)

    monkeypatch.setattr(PurePath, "__eq__", counting_equal)
    files = expand_inputs([str(folder), str(folder / "0001.jpg")]).files
    report = Report()
    targets = _output_paths(files, tmp_path / "out", report)
    monkeypatch.undo()
    assert len(files) == 1001 and len(targets) == 1000
    assert report.failed == [f"{folder / '0000.png'}: skipped, its output {tmp_path / 'out' / '0000.png'} "
                             f"would overwrite another input's"]
    assert comparisons <= len(files)  # not a scan of the outputs so far per input: half a million


def test_missing_checkpoint_is_explained(tmp_path, photos):
    result = run_cli("colorize", "--checkpoint", tmp_path, photos, "--out", tmp_path / "o", check=False)
    assert result.returncode == 1 and "is not a saved model" in result.stderr


def test_out_of_gamut_colours_keep_their_l():
    lab = torch.tensor([[5.0, 60.0, -70.0], [95.0, -80.0, 90.0], [50.0, 10.0, 10.0]]).T.reshape(1, 3, 3, 1)
    rgb = lab_to_rgb_keeping_l(lab)
    back = rgb2lab(rgb[0].permute(1, 2, 0).numpy().astype(np.float64))
    np.testing.assert_allclose(back[..., 0, 0], [5.0, 95.0, 50.0], atol=0.3)
    np.testing.assert_allclose(back[2, 0, 1:], [10.0, 10.0], atol=0.05)  # in gamut: unchanged


def test_a_loaded_model_is_the_network_with_what_it_was_saved_with(tmp_path):
    torch.manual_seed(0)
    model = create_model("fusion", FusionSettings(width=8), num_classes=3, resolution=32)
    save_model(model, tmp_path / "best", ["a", "b", "c"])
    loaded = load_model(tmp_path / "best")
    assert isinstance(loaded, FusionColorizer) and not loaded.training
    assert loaded.classes == ["a", "b", "c"] and loaded.resolution == 32 and loaded.name == "fusion"
    assert loaded.settings == FusionSettings(width=8)
    l = torch.rand(2, 1, 32, 32) * 100
    assert torch.equal(loaded(l).ab, model.eval()(l).ab)


def test_a_folder_without_config_json_is_refused_saying_what_a_saved_model_needs(tmp_path):
    folder = tmp_path / "best"
    folder.mkdir()
    save_file({"w": torch.zeros(1)}, str(folder / "model.safetensors"))
    (folder / "model.json").write_text("{}")
    with pytest.raises(SavedModelError, match="is not a saved model .it needs config.json and model.safetensors"):
        load_model(folder)


def test_an_out_folder_that_is_a_file_is_named_in_one_line(run_dir, photos, tmp_path):
    out = tmp_path / "file"
    out.touch()
    result = run_cli("colorize", "--checkpoint", run_dir, photos, "--out", out, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"colorize colorize: error: {out}: this is a file, not a folder"


def test_a_damaged_saved_model_is_named(tmp_path, photos):
    folder = tmp_path / "damaged"
    folder.mkdir()
    save_model(create_model("fusion"), folder, ["a"] * 10)
    (folder / "model.safetensors").write_bytes(b"nonsense")  # damaged weights
    result = run_cli("colorize", "--checkpoint", folder, photos, "--out", tmp_path / "o", check=False)
    assert result.returncode == 1 and f"cannot load the model in {folder}" in result.stderr
    assert "Traceback" not in result.stderr
    (folder / "config.json").write_text("{not json")  # a damaged config
    assert f"cannot load the model in {folder}: {folder / 'config.json'} is not valid JSON" in run_cli(
        "colorize", "--checkpoint", folder, photos, "--out", tmp_path / "o", check=False).stderr


@pytest.mark.parametrize("change, message", [
    (lambda config: [config], "{folder}/config.json is not a JSON object \\(it holds an array\\)"),
    (lambda config: {key: value for key, value in config.items() if key != "colour_scaling"},
     "its config.json lacks 'colour_scaling'"),
    (lambda config: {**config, "resolution": 1_000_000},  # the network would be fed 10^12 pixels per image
     "model 'fusion' cannot take 1000000x1000000 images: the largest it takes is 2048x2048"),
])
def test_a_saved_config_of_another_shape_is_named(tmp_path, change, message):
    folder = tmp_path / "reshaped"
    save_model(create_model("fusion", FusionSettings(width=8)), folder, ["a"] * 10)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(change(config)))
    with pytest.raises(SavedModelError, match=f"cannot load the model in {folder}: {message.format(folder=folder)}"):
        load_model(folder)


@pytest.mark.parametrize("module", ["colorize.models.fusion", "", None])
def test_an_unknown_network_in_a_module_of_colorize_is_named_without_asking_for_trust(tmp_path, module):
    folder = tmp_path / "renamed"
    save_model(create_model("fusion", FusionSettings(width=8)), folder, ["a"] * 10)
    config = json.loads((folder / "config.json").read_text())
    config["name"], config["module"] = "fusoin", module  # colorize's own module, or none named
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SavedModelError, match="model.name='fusoin' is not a known model; did you mean fusion"):
        load_model(folder)


def test_weights_that_do_not_fit_the_config_are_refused_in_one_line(tmp_path):
    folder = tmp_path / "mixed"
    save_model(create_model("fusion", FusionSettings(width=8)), folder, ["a"] * 10)
    config = json.loads((folder / "config.json").read_text())
    config["settings"]["width"] = 16  # a config from another save
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SavedModelError) as error:
        load_model(folder)
    message = str(error.value)
    assert "\n" not in message and "model.safetensors does not fit the network its config.json" in message
    assert "62 of another shape, such as decoder.0.0.bias [16] (the network has [32])" in message
    config["settings"]["width"] = 100_000  # 360 GB in one layer: compared by shape, never built
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(SavedModelError, match="does not fit the network its config.json describes"):
        load_model(folder)


def test_a_network_that_computes_while_it_is_built_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(MODELS, "_entries", dict(MODELS._entries))  # registered for this test only

    class Computing(FusionColorizer):  # reads a value while it is built: no meta tensor has one
        def __init__(self, settings, num_classes, resolution):
            super().__init__(settings, num_classes, resolution)
            self.scale = torch.ones(1).sum().item()

    MODELS.register("computing", FusionSettings)(Computing)
    save_model(create_model("computing", FusionSettings(width=8)), tmp_path / "computing", ["a"] * 10)
    assert load_model(tmp_path / "computing").scale == 1.0


def test_the_module_of_an_unknown_network_is_imported_only_when_trusted(run_dir, photos, tmp_path,
                                                                        monkeypatch):
    """A saved model whose network colorize does not know names a module that registers it;
    importing that module runs its code (here: it leaves a marker file)."""
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "probe_net.py").write_text(
        "from pathlib import Path\n"
        "from colorize.models.fusion import FusionColorizer, FusionSettings\n"
        "from colorize.models import MODELS\n"
        "Path(__file__).with_name('imported').touch()\n"
        "MODELS.register('probe', FusionSettings)(FusionColorizer)\n")
    folder = tmp_path / "probe"
    folder.mkdir()
    for name in ("model.safetensors", "config.json"):
        (folder / name).write_bytes((run_dir / name).read_bytes())
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "name": "probe", "module": "probe_net"}))
    monkeypatch.syspath_prepend(str(plugins))
    refusal = r"module probe_net; .* pass --trust-code \(trust_code=True in Python\)"
    with pytest.raises(SavedModelError, match=refusal):
        load_model(folder)
    assert not (plugins / "imported").exists()
    env = {"PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "out"
    run_cli("colorize", "--checkpoint", folder, photos / "chelsea.png", "--out", out, "--trust-code", env=env)
    assert (plugins / "imported").exists() and (out / "chelsea.png").is_file()


def test_a_run_whose_best_model_is_being_replaced_reads_the_previous_one(run_dir, photos, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("run:\n  name: r\n")
    # a save stopped between its two renames: no best/ for now
    save_model(load_model(run_dir), run / ".best.old", [str(i) for i in range(10)])
    report = colorize_files(run, [photos / "chelsea.png"], tmp_path / "out")
    assert report.written == [tmp_path / "out" / "chelsea.png"] and not (run / "best").exists()
