"""Vivid colours end to end: the prior written by prepare, a bin-head network trained with the
rebalanced loss, and the temperature chosen at use time."""
import json
import os
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import run_cli, smoke_config, trained_run
from PIL import Image
from skimage.color import rgb2lab

from colorize.core.ab_bins import BinLookup, gamut_bins, soft_encode
from colorize.core.color import rgb_to_lab
from colorize.core.metrics import MetricSums
from colorize.data.manifest import DataError
from colorize.data.prior import PRIOR_FILE, AbPrior, read_prior, rebalancing_weights
from colorize.engine.evaluate import evaluate_run
from colorize.engine.trainer import train
from colorize.errors import ColorizeError, ConfigError
from colorize.losses import BinsClassSettings, RebalancedBinLoss
from colorize.models import MODELS, create_model
from colorize.models.prediction import Prediction
from colorize.models.saved import load_model, save_model

BINS = ("model.head=bins", "loss.name=bins_class")


def vivid_config(data_dir, run_dir, *overrides):
    return smoke_config(data_dir, run_dir, "data.batch_size=16", *BINS, *overrides)


@pytest.fixture(scope="module")
def vivid_run(small_dir, tmp_path_factory):
    return trained_run(tmp_path_factory, "vivid", lambda run_dir: vivid_config(small_dir, run_dir))


def test_prepare_records_the_prior_and_its_checksum(small_dir):
    manifest = json.loads((small_dir / "manifest.json").read_text())
    entry = manifest["prior"]
    assert entry["file"] == PRIOR_FILE and len(entry["sha256"]) == 64
    prior = read_prior(small_dir, manifest)
    assert prior.centres.shape == (entry["bins"], 2) and prior.prior.shape == (entry["bins"],)
    assert prior.prior.sum().item() == pytest.approx(1.0, rel=1e-5)
    # the synthetic images are mostly red, green or blue: those bins are the likeliest
    assert prior.prior.max() > 5 / entry["bins"]


def test_a_directory_without_the_prior_is_refused_by_name_and_rebuilt_by_prepare(small_source, small_dir, tmp_path):
    out = tmp_path / "old"
    shutil.copytree(small_dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    expected = manifest.pop("prior")
    (out / "manifest.json").write_text(json.dumps(manifest))
    (out / PRIOR_FILE).unlink()
    with pytest.raises(DataError, match="names no ab prior.*colorize prepare.*again"):
        train(vivid_config(out, tmp_path / "run"))
    result = run_cli("prepare", "--data", small_source, "--out", out)
    assert "names no ab prior; rebuilding" in result.stdout
    assert json.loads((out / "manifest.json").read_text())["prior"] == expected  # the same numbers


def test_a_damaged_prior_is_refused_by_name_and_rebuilt_by_prepare(small_source, small_dir, tmp_path):
    out = tmp_path / "damaged"
    shutil.copytree(small_dir, out)
    with open(out / PRIOR_FILE, "r+b") as file:
        file.seek(-20, os.SEEK_END)
        file.write(b"\xff" * 4)
    with pytest.raises(DataError, match=f"{PRIOR_FILE} is damaged.*colorize prepare"):
        train(vivid_config(out, tmp_path / "run"))
    result = run_cli("prepare", "--data", small_source, "--out", out)
    assert f"{PRIOR_FILE} is damaged" in result.stdout
    read_prior(out, json.loads((out / "manifest.json").read_text()))


@pytest.mark.parametrize("head, loss", [("ab", "bins_class"), ("bins", "huber_class")])
def test_a_loss_for_another_head_is_refused_before_training_says_what_to_set(small_dir, tmp_path, head, loss):
    scored = "bins" if loss == "bins_class" else "ab"
    with pytest.raises(ConfigError, match=f"loss.name={loss} .* set model.head={scored}"):
        train(vivid_config(small_dir, tmp_path / "run", f"model.head={head}", f"loss.name={loss}"))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", MODELS.names())
def test_every_network_takes_a_bin_head(name):
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, -10.0]])
    settings = MODELS.entry(name).settings(head="bins")
    model = create_model(name, settings, num_classes=3, resolution=32, bins=centres)
    l = torch.rand(2, 1, 32, 32) * 100
    training = model.train()(l)
    assert training.ab_scores.shape == (2, 3, 16, 16) and training.ab is None  # the loss scores the bins
    prediction = model.eval()(l)
    assert prediction.ab_scores.shape == (2, 3, 16, 16) and prediction.ab.shape == (2, 2, 32, 32)
    assert prediction.ab.abs().max() <= 10


def test_the_bin_loss_of_coarse_scores_is_the_cross_entropy_of_each_pixel_against_the_score_covering_it():
    centres = gamut_bins()
    generator = torch.Generator().manual_seed(0)
    prior = torch.rand(len(centres), generator=generator) + 0.5
    prior = prior / prior.sum()
    weights = rebalancing_weights(prior, 0.7)
    loss = RebalancedBinLoss(BinsClassSettings(class_weight=0.0, rebalance_mix=0.7), AbPrior(centres, prior))
    ab = rgb_to_lab(torch.rand(2, 3, 8, 8, generator=generator, dtype=torch.float64))[:, 1:].float()
    batch = SimpleNamespace(ab=ab, label=torch.zeros(2, dtype=torch.long))
    coarse = torch.randn(2, len(centres), 4, 4, generator=generator)
    fine = coarse.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # each score over its 2 x 2 pixels
    targets, bins = soft_encode(ab, BinLookup(centres))
    dense = torch.zeros_like(fine).scatter_(1, bins, targets) * weights[bins[:, :1]]
    expected = -(dense * torch.log_softmax(fine, dim=1)).sum(1).mean()
    for scores in (coarse, fine):
        color = loss(Prediction(ab, torch.zeros(2, 10), scores), batch)["color"]
        assert color.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_bin_loss_trains_and_reports_every_metric(vivid_run):
    metrics = json.loads((vivid_run / "metrics.json").read_text())
    first, second = metrics["history"]
    assert second["train"]["loss"] < first["train"]["loss"]
    assert 0 < metrics["test"]["ab_auc"] < 1
    saved = json.loads((vivid_run / "best" / "config.json").read_text())
    assert saved["settings"]["head"] == "bins" and saved["settings"]["temperature"] == 0.38


def test_temperature_at_use_time_changes_the_colours(vivid_run, small_dir):
    cold, warm = evaluate_run(vivid_run, temperature=0.1), evaluate_run(vivid_run, temperature=1.0)
    assert cold["colorfulness_pred"] != warm["colorfulness_pred"]
    result = run_cli("evaluate", "--checkpoint", vivid_run, "--temperature", "0.1", "--json")
    assert json.loads(result.stdout)["colorfulness_pred"] == pytest.approx(cold["colorfulness_pred"], rel=1e-6)
    refused = run_cli("evaluate", "--checkpoint", vivid_run, "--temperature", "0", check=False)
    assert refused.returncode != 0 and "model.temperature must be positive" in refused.stderr


def test_shift_average_at_use_time_averages_the_colours_of_five_views(vivid_run):
    plain, averaged = evaluate_run(vivid_run), evaluate_run(vivid_run, shift_average=True)
    assert averaged["ab_l1"] != plain["ab_l1"]
    assert averaged["colorfulness_pred"] < plain["colorfulness_pred"]  # a mean of views is less saturated
    result = run_cli("evaluate", "--checkpoint", vivid_run, "--shift-average", "--json")
    assert json.loads(result.stdout)["ab_l1"] == pytest.approx(averaged["ab_l1"], rel=1e-6)
    result = run_cli("evaluate", "--checkpoint", vivid_run, "--no-shift-average", "--json")
    assert json.loads(result.stdout)["ab_l1"] == pytest.approx(plain["ab_l1"], rel=1e-6)


def test_colourizing_photos_of_any_size_at_a_temperature_keeps_their_l(vivid_run, tmp_path):
    photo = tmp_path / "in" / "wide.png"
    photo.parent.mkdir()
    rgb = (np.random.default_rng(0).random((45, 77, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(photo)
    outputs = {}
    for temperature in ("0.1", "1"):
        out = tmp_path / f"out-{temperature}"
        run_cli("colorize", "--checkpoint", vivid_run, photo, "--out", out, "--temperature", temperature)
        outputs[temperature] = np.asarray(Image.open(out / "wide.png"))
        assert outputs[temperature].shape == rgb.shape
        assert np.abs(rgb2lab(outputs[temperature])[..., 0] - rgb2lab(rgb)[..., 0]).max() < 0.5
    assert not np.array_equal(outputs["0.1"], outputs["1"])


def test_temperature_is_refused_for_a_network_that_regresses_ab(tmp_path):
    folder = tmp_path / "model"
    save_model(create_model("fusion"), folder, [str(i) for i in range(10)])
    with pytest.raises(ColorizeError, match="bin head"):
        load_model(folder, temperature=0.5)


def test_compare_draws_a_row_per_temperature(vivid_run, small_dir, tmp_path):
    out = tmp_path / "compare.png"
    run_cli("compare", vivid_run, "--out", out, "--temperatures", "1", "0.38")
    rows_two = Image.open(out).size[1]
    run_cli("compare", vivid_run, "--out", out)
    assert rows_two > Image.open(out).size[1]


def test_the_auc_counts_pixels_within_each_threshold():
    sums = MetricSums(torch.device("cpu"))
    true = torch.zeros(1, 2, 1, 4)
    pred = torch.tensor([[0.0, 3.0, 0.5, 200.0], [0.0, 0.0, 0.0, 0.0]]).view(1, 2, 1, 4)
    sums.update(torch.full((1, 1, 1, 4), 50.0), pred, true, None, torch.zeros(1, dtype=torch.long))
    # errors 0, 3, 0.5, 200: within t for t = 0, 1, 2, >= 3 (up to 150): 1, 2, 2, 3 of 4
    expected = (1 + 2 + 2 + 3 * 148) / 4 / 151
    assert sums.compute()["ab_auc"] == pytest.approx(expected)
