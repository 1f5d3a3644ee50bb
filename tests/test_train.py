"""End-to-end training on real images from the shared CIFAR-10 copy."""
import json

import pytest
from safetensors.torch import load_file

from colorize.config import load_config
from colorize.engine.trainer import train
from conftest import REPO, run_cli

pytestmark = pytest.mark.slow


def smoke_config(data_dir, run_dir, *overrides):
    return load_config(str(REPO / "configs" / "smoke.yaml"),
                       [f"data.dir={data_dir}", f"run.dir={run_dir}", *overrides])


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_epochs(cifar_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "two"
    train(smoke_config(cifar_dir, run_dir))
    return run_dir


def test_smoke_run_trains_and_writes_a_complete_run_dir(two_epochs):
    metrics = metrics_of(two_epochs)
    first, second = metrics["history"]
    assert second["train"]["loss"] < first["train"]["loss"]
    assert second["val"]["ab_l1"] < first["val"]["ab_l1"]
    assert metrics["epochs_run"] == 2 and metrics["world_size"] == 1
    assert metrics["test"]["images"] == 512 and 0 < metrics["test"]["ab_l1"] < 15
    assert metrics["train_images_per_s"] > 0 and first["train"]["images"] == 2048
    for name in ("model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl"):
        assert (two_epochs / "last" / name).is_file()
    spec = json.loads((two_epochs / "best" / "model.json").read_text())
    assert spec["name"] == "fusion" and len(spec["classes"]) == 10
    weights = load_file(str(two_epochs / "best" / "model.safetensors"))
    assert "classifier.weight" in weights
    assert load_config(str(two_epochs / "config.yaml")).run.name == "smoke"
    assert not list(two_epochs.glob(".*"))  # no staging leftovers


def test_resumed_run_matches_an_uninterrupted_one(cifar_dir, two_epochs, tmp_path):
    run_dir = tmp_path / "resumed"
    run_cli("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={cifar_dir}",
            f"run.dir={run_dir}", "train.epochs=1")
    assert metrics_of(run_dir)["epochs_run"] == 1
    run_cli("train", "--resume", run_dir, "train.epochs=2")
    resumed, uninterrupted = metrics_of(run_dir), metrics_of(two_epochs)
    assert resumed["history"][1]["val"] == uninterrupted["history"][1]["val"]
    assert resumed["history"][1]["train"]["loss"] == uninterrupted["history"][1]["train"]["loss"]
    assert resumed["test"] == uninterrupted["test"]


def test_starting_over_an_existing_run_is_refused(cifar_dir, two_epochs):
    result = run_cli("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={cifar_dir}",
                     f"run.dir={two_epochs}", check=False)
    assert result.returncode == 1 and "already holds a run" in result.stderr


def test_early_stopping_stops_when_val_stops_improving(cifar_dir, tmp_path):
    # with min_delta huge, only the first epoch counts as an improvement
    config = smoke_config(cifar_dir, tmp_path / "early", "train.epochs=10", "train.patience=2",
                          "train.min_delta=1000", "data.train_limit=512")
    metrics = train(config)
    assert metrics["epochs_run"] == 3 and metrics["stopped_early"] and metrics["best_epoch"] == 1


def test_diverging_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(cifar_dir, two_epochs, tmp_path):
    import shutil

    run_dir = tmp_path / "diverge"
    shutil.copytree(two_epochs, run_dir)
    result = run_cli("train", "--resume", run_dir, "train.epochs=4", "optim.lr=1e30", check=False)
    assert result.returncode == 1, result.stderr
    assert "training loss became" in result.stderr and "Traceback" not in result.stderr
    assert metrics_of(run_dir)["epochs_run"] == 2  # the last good checkpoint is untouched
    assert (run_dir / "last" / "model.safetensors").is_file()


def test_gradient_accumulation_takes_one_step_per_group_of_batches(cifar_dir, tmp_path):
    config = smoke_config(cifar_dir, tmp_path / "accum", "train.epochs=1", "train.grad_accum=2",
                          "data.train_limit=512")
    metrics = train(config)
    assert metrics["history"][0]["step"] == 4  # 8 batches of 64, two per optimizer step
    assert metrics["history"][0]["train"]["images"] == 512
