"""Real two-process DDP runs on CPU (gloo) through `accelerate launch --config_file launch/cpu-ddp.yaml`,
and through `launch/cpu-multi-machine.yaml` as two machines of one process each."""
import json
import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, sigterm_at_batch, smoke_config

from colorize.engine.evaluate import evaluate_run
from colorize.engine.trainer import train

# one pytest worker runs the module, so its two-process runs (module fixtures) train once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]
ACCELERATE = Path(sys.executable).parent / "accelerate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, env=None, timeout=600, machines=1, check=True) -> subprocess.CompletedProcess:
    """``accelerate launch --config_file launch/cpu-ddp.yaml -m colorize ARGS``; with ``machines``
    > 1, one launch of ``launch/cpu-multi-machine.yaml`` per machine rank, all at once on this
    machine and meeting at 127.0.0.1, as separate machines would at machine 0's address.
    Fails if any fails (with ``check``); returns their output joined, machine 0's first, and the
    highest exit status."""
    if machines == 1:
        options = [["--config_file", REPO / "launch" / "cpu-ddp.yaml"]]
    else:
        options = [["--config_file", REPO / "launch" / "cpu-multi-machine.yaml", "--num_machines", machines,
                    "--num_processes", machines, "--machine_rank", rank, "--main_process_ip", "127.0.0.1"]
                   for rank in range(machines)]
    port = free_port()
    commands = [[str(ACCELERATE), "launch", *map(str, machine), "--main_process_port", str(port),
                 "-m", "colorize", *map(str, args)] for machine in options]
    env = {**os.environ, **(env or {})}
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda command: subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=env), commands))
    for command, result in zip(commands, results):
        if check and result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return subprocess.CompletedProcess(commands, max(r.returncode for r in results),
                                       "".join(r.stdout for r in results), "".join(r.stderr for r in results))


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


@pytest.fixture(scope="module")
def two_machine_run(cifar_dir, tmp_path_factory, wandb_env):
    """The run of ``ddp_run`` on two machines of one process each, writing to one run directory
    as on a shared file system; each process takes half the cores, as in ``ddp_run``, since both
    share this machine's."""
    run_dir = tmp_path_factory.mktemp("machines") / "run"
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    result = launch(*smoke(cifar_dir, run_dir, "tracking.mode=offline", f"train.threads={threads}"),
                    env=wandb_env, machines=2)
    return run_dir, result


both_layouts = pytest.mark.parametrize("layout", ["ddp_run", "two_machine_run"])


@both_layouts
def test_two_processes_form_one_job(layout, request):
    run_dir, _ = request.getfixturevalue(layout)
    metrics = metrics_of(run_dir)
    assert metrics["world_size"] == 2 and metrics["batch_size_per_process"] == 32
    for epoch in metrics["history"]:
        # every training sample exactly once per epoch across the ranks
        assert (epoch["train"]["samples_seen_once"], epoch["train"]["samples_unseen"],
                epoch["train"]["samples_repeated"]) == (1024, 0, 0)
        first, second = epoch["model_checksums"]
        assert first == second  # identical parameters on both ranks
    assert metrics["test"]["images"] == 512


@both_layouts
def test_only_the_main_process_writes(layout, request):
    run_dir, result = request.getfixturevalue(layout)
    assert sorted(p.name for p in (run_dir / "last").iterdir()) == [
        "model.safetensors", "optimizer.bin", "random_states_0.pkl", "random_states_1.pkl", "scheduler.bin",
        "trainer_state.json", "trainer_state.safetensors"]
    assert sorted(p.name for p in (run_dir / "grids").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert len(list((run_dir / "wandb").glob("offline-run-*"))) == 1
    assert result.stdout.count("W&B is offline") == 1
    assert result.stdout.count("test of best epoch") == 1


def test_two_machines_train_as_one_machine_does(ddp_run, two_machine_run):
    one, two = metrics_of(ddp_run[0]), metrics_of(two_machine_run[0])
    for name in ("val", "model_checksums"):
        assert [h[name] for h in two["history"]] == [h[name] for h in one["history"]], name
    assert two["test"] == one["test"]


def test_resuming_a_two_process_run_matches_an_uninterrupted_one(cifar_dir, ddp_run, tmp_path):
    run_dir = tmp_path / "resumed"
    launch(*smoke(cifar_dir, run_dir, "train.epochs=1"))
    launch("train", "--resume", run_dir, "train.epochs=2")
    resumed, uninterrupted = metrics_of(run_dir), metrics_of(ddp_run[0])
    assert resumed["world_size"] == 2 and resumed["epochs_run"] == 2
    assert resumed["history"][1]["val"] == uninterrupted["history"][1]["val"]
    assert resumed["test"] == uninterrupted["test"]


def test_sigterm_to_one_process_stops_both_at_one_step_saved_to_resume_exactly(cifar_dir, ddp_run, tmp_path):
    # process 1 alone receives SIGTERM, at its 5th batch; both agree at the log line of batch 8
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        'import os\nif os.environ.get("RANK") == "1":\n    import sigterm_at_batch\n')
    env = sigterm_at_batch(5)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    run_dir = tmp_path / "stopped"
    result = launch(*smoke(cifar_dir, run_dir), env=env, check=False)
    assert result.returncode != 0
    assert f"stopped by SIGTERM in epoch 1 after step 8, with {run_dir}/last saved there" in result.stderr
    saved = json.loads((run_dir / "last" / "trainer_state.json").read_text())["train"]
    assert (saved["epoch"], saved["step"], saved["progress"]["batches"], saved["progress"]["world"]) == (0, 8, 8, 2)

    assert f"{run_dir}: resuming epoch 1 at batch 9 of 16" in launch("train", "--resume", run_dir).stdout
    resumed, uninterrupted = metrics_of(run_dir), metrics_of(ddp_run[0])
    for name in ("val", "model_checksums"):
        assert [h[name] for h in resumed["history"]] == [h[name] for h in uninterrupted["history"]], name
    assert [h["train"]["loss"] for h in resumed["history"]] == [h["train"]["loss"] for h in uninterrupted["history"]]
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
