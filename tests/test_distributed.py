"""Real two-process DDP runs on CPU (gloo) through `accelerate launch --config_file launch/cpu-ddp.yaml`."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from colorize.engine.evaluate import evaluate_run
from colorize.engine.trainer import train
from conftest import REPO, smoke_config

pytestmark = pytest.mark.slow
ACCELERATE = Path(sys.executable).parent / "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, env=None, timeout=600) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file launch/cpu-ddp.yaml -m colorize ARGS``; fails on error."""
    command = [str(ACCELERATE), "launch", "--config_file", str(REPO / "launch" / "cpu-ddp.yaml"),
               "--main_process_port", str(free_port()), "-m", "colorize", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    if result.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def smoke(data_dir, run_dir, *overrides):
    return ("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={data_dir}",
            f"run.dir={run_dir}", *overrides)


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def wandb_env(tmp_path_factory):
    home = tmp_path_factory.mktemp("wandb")
    return {"HOME": str(home), "WANDB_CACHE_DIR": str(home / "cache"),
            "WANDB_CONFIG_DIR": str(home / "config"), "WANDB_DATA_DIR": str(home / "data")}


@pytest.fixture(scope="module")
def ddp_run(cifar_dir, tmp_path_factory, wandb_env):
    run_dir = tmp_path_factory.mktemp("ddp") / "run"
    result = launch(*smoke(cifar_dir, run_dir, "tracking.mode=offline"), env=wandb_env)
    return run_dir, result


def test_two_processes_form_one_job(ddp_run):
    run_dir, _ = ddp_run
    metrics = metrics_of(run_dir)
    assert metrics["world_size"] == 2 and metrics["batch_size_per_process"] == 32
    for epoch in metrics["history"]:
        # every training sample exactly once per epoch across the ranks
        assert (epoch["train"]["samples_seen_once"], epoch["train"]["samples_unseen"],
                epoch["train"]["samples_repeated"]) == (1024, 0, 0)
        first, second = epoch["model_checksums"]
        assert first == second  # identical parameters on both ranks
    assert metrics["test"]["images"] == 512


def test_only_the_main_process_writes(ddp_run):
    run_dir, result = ddp_run
    assert sorted(p.name for p in (run_dir / "last").iterdir()) == [
        "custom_checkpoint_0.pkl", "model.safetensors", "optimizer.bin", "random_states_0.pkl",
        "random_states_1.pkl", "scheduler.bin"]
    assert sorted(p.name for p in (run_dir / "grids").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert result.stdout.count("W&B is offline") == 1
    assert result.stdout.count("test of best epoch") == 1


def test_resuming_a_two_process_run_matches_an_uninterrupted_one(cifar_dir, ddp_run, tmp_path):
    run_dir = tmp_path / "resumed"
    launch(*smoke(cifar_dir, run_dir, "train.epochs=1"))
    launch("train", "--resume", run_dir, "train.epochs=2")
    resumed, uninterrupted = metrics_of(run_dir), metrics_of(ddp_run[0])
    assert resumed["world_size"] == 2 and resumed["epochs_run"] == 2
    assert resumed["history"][1]["val"] == uninterrupted["history"][1]["val"]
    assert resumed["test"] == uninterrupted["test"]


def test_early_stopping_is_agreed_by_both_processes(cifar_dir, tmp_path):
    run_dir = tmp_path / "early"
    # also fp32 typed as `no`, and accumulation over 3, 3 and 2 of the 8 batches per process
    result = launch(*smoke(cifar_dir, run_dir, "train.epochs=10", "train.patience=2", "train.min_delta=1000",
                           "data.train_limit=512", "train.mixed_precision=no", "train.grad_accum=3"))
    metrics = metrics_of(run_dir)
    assert metrics["epochs_run"] == 3 and metrics["mixed_precision"] == "no"
    assert [h["step"] for h in metrics["history"]] == [3, 6, 9]
    for rank in (0, 1):
        assert f"[process {rank}] stopping early after epoch 3" in result.stdout


def test_two_process_evaluation_counts_each_sample_once(small_dir, tmp_path):
    run_dir = tmp_path / "small"
    train(smoke_config(small_dir, run_dir, "train.epochs=1", "data.batch_size=16"))
    single = evaluate_run(run_dir)
    double = json.loads(launch("evaluate", "--checkpoint", run_dir, "--json").stdout)
    assert (single["processes"], double["processes"]) == (1, 2)
    assert single["images"] == double["images"] == 33  # odd: the sampler pads one duplicate
    for name in ("ab_l1", "psnr", "colorfulness_pred", "colorfulness_true", "ab_auc", "accuracy"):
        assert double[name] == pytest.approx(single[name], rel=1e-5), name
    on_train = evaluate_run(run_dir, split="train")
    assert on_train["images"] == 108  # all of it, in order: not the shuffled, truncated training view


def test_processes_that_are_not_distributed_are_refused(monkeypatch):
    from accelerate import Accelerator

    from colorize.engine.runtime import NotDistributedError, check_distributed

    accelerator = Accelerator(cpu=True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(NotDistributedError, match="not distributed"):
        check_distributed(accelerator)
