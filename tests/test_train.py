"""End-to-end training on real images from the shared CIFAR-10 copy."""
import json
import os
import pickle
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import skimage.data
import torch
from conftest import REPO, RUN_CLI, run_cli, sigterm_at_batch, smoke_config, trained_run
from PIL import Image
from safetensors.torch import load_file
from test_runtime import AVX2_ONLY

from colorize import io
from colorize.config import load_config
from colorize.engine.checkpoint import CheckpointError
from colorize.engine.runtime import CUBLAS_WORKSPACE
from colorize.engine.trainer import train, train_from_cli
from colorize.errors import ConfigError
from colorize.models import create_model

pytestmark = pytest.mark.slow


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def two_epochs(cifar_dir, tmp_path_factory):
    return trained_run(tmp_path_factory, "two", lambda run_dir: smoke_config(cifar_dir, run_dir))


def test_smoke_run_trains_and_writes_a_complete_run_dir(two_epochs):
    metrics = metrics_of(two_epochs)
    first, second = metrics["history"]
    assert second["train"]["loss"] < first["train"]["loss"]
    assert second["val"]["ab_l1"] < first["val"]["ab_l1"]
    assert metrics["epochs_run"] == 2 and metrics["world_size"] == 1
    assert metrics["test"]["images"] == 512 and 0 < metrics["test"]["ab_l1"] < 15
    assert metrics["train_images_per_s"] > 0 and first["train"]["images"] == 1024
    assert metrics["steady_train_images_per_s"] == pytest.approx(second["train"]["images_per_s"])
    for name in ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl",
                 "trainer_state.json", "trainer_state.safetensors"):
        assert (two_epochs / "last" / name).is_file()
    assert not list((two_epochs / "last").glob("custom_checkpoint_*"))  # nothing unpickled beyond weights
    saved = json.loads((two_epochs / "best" / "config.json").read_text())
    assert saved["name"] == "fusion" and len(saved["classes"]) == 10 and saved["settings"]["width"] == 32
    weights = load_file(str(two_epochs / "best" / "model.safetensors"))
    assert "classifier.weight" in weights
    assert load_config(str(two_epochs / "config.yaml")).run.name == "smoke"
    assert not list(two_epochs.glob(".*"))  # no staging leftovers
    modes = {str(path.relative_to(two_epochs)): stat.S_IMODE(path.stat().st_mode)
             for path in two_epochs.rglob("*") if path.is_file()}
    assert modes == dict.fromkeys(modes, io.USUAL_FILE_MODE)  # safetensors' own 0600 too: readable as any file


def test_resumed_run_matches_an_uninterrupted_one(cifar_dir, two_epochs, tmp_path):
    run_dir = tmp_path / "resumed"
    train(smoke_config(cifar_dir, run_dir, "train.epochs=1"))
    one_epoch = metrics_of(run_dir)
    assert one_epoch["epochs_run"] == 1 and one_epoch["steady_train_images_per_s"] is None
    run_cli("train", "--resume", run_dir, "train.epochs=2")  # in a new process
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


def test_a_colourfulness_floor_no_epoch_reaches_leaves_the_lowest_val_error_best(cifar_dir, tmp_path, capsys):
    config = smoke_config(cifar_dir, tmp_path / "floor", "train.min_colorfulness=100", "data.train_limit=256",
                          "data.eval_limit=128")
    metrics = train(config)
    errors = [entry["val"]["ab_l1"] for entry in metrics["history"]]
    assert metrics["best_epoch"] == 1 + errors.index(min(errors))
    assert "no epoch reached train.min_colorfulness 100.0 on val" in capsys.readouterr().out


def test_diverging_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(cifar_dir, two_epochs, tmp_path):
    run_dir = tmp_path / "diverge"
    shutil.copytree(two_epochs, run_dir)
    result = run_cli("train", "--resume", run_dir, "train.epochs=4", "optim.lr=1e30", check=False)
    assert result.returncode == 1, result.stderr
    assert "training loss became" in result.stderr and "Traceback" not in result.stderr
    assert metrics_of(run_dir)["epochs_run"] == 2  # the last good checkpoint is untouched
    assert (run_dir / "last" / "model.safetensors").is_file()


@pytest.mark.parametrize("lr, problem", [(1e30, "training loss became"), (3e38, "weights became")])
def test_a_run_that_diverges_within_an_epoch_is_never_checkpointed(cifar_dir, two_epochs, tmp_path, lr, problem):
    """At 1e30 the weights stay finite for a step, and the next batch's loss is not; at 3e38 the
    first step makes them infinite (the largest float32 is 3.4e38) after a finite loss."""
    run_dir = tmp_path / "diverge-within"
    shutil.copytree(two_epochs, run_dir)
    result = run_cli("train", "--resume", run_dir, "train.epochs=4", f"optim.lr={lr}", "train.checkpoint_every=1",
                     "train.log_every=1000", check=False)
    assert result.returncode == 1 and problem in result.stderr, result.stderr
    for name, tensor in load_file(run_dir / "last" / "model.safetensors").items():
        assert torch.isfinite(tensor).all(), name


def test_auto_chooses_fp32_when_the_cpu_kernels_are_limited_to_avx2(cifar_dir, tmp_path):
    run_dir = tmp_path / "avx2"
    result = run_cli("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={cifar_dir}",
                     f"run.dir={run_dir}", "train.epochs=1", "data.train_limit=256", env=AVX2_ONLY)
    assert "precision: fp32 (auto: the CPU (AVX2) has no native bf16" in result.stdout
    assert "step eager (no CUDA device)" in result.stdout
    metrics = metrics_of(run_dir)
    assert metrics["mixed_precision"] == "no" and metrics["cpu"] == "AVX2" and metrics["cuda_graphs"] is False
    assert metrics["history"][0]["train"]["images"] == 256


def resume(run_dir, *overrides):
    return train_from_cli(None, list(overrides), str(run_dir))


def test_extending_a_finished_run_trains_on_and_an_unchanged_resume_does_nothing(cifar_dir, tmp_path, capsys):
    run_dir = tmp_path / "finished"
    train(smoke_config(cifar_dir, run_dir, "train.epochs=10", "train.patience=1", "train.min_delta=1000",
                       "data.train_limit=256", "data.eval_limit=128"))
    assert metrics_of(run_dir)["epochs_run"] == 2 and metrics_of(run_dir)["stopped_early"]
    capsys.readouterr()

    assert resume(run_dir)["epochs_run"] == 2
    assert "the run is complete: it stopped early after epoch 2" in capsys.readouterr().out
    assert load_config(str(run_dir / "config.yaml")).train.epochs == 10

    metrics = resume(run_dir, "train.epochs=12")  # one more epoch: patience 1, min_delta 1000
    assert "training on with early stopping restarted" in capsys.readouterr().out
    assert metrics["epochs_run"] == 3 and metrics["stopped_early"] and metrics_of(run_dir) == metrics
    assert load_config(str(run_dir / "config.yaml")).train.epochs == 12

    assert resume(run_dir, "train.patience=2")["epochs_run"] == 4
    assert "train.patience is now 2" in capsys.readouterr().out

    for change in ("model.width=16", "data.train_limit=128", "train.seed=1", "train.grad_accum=2",
                   "train.min_colorfulness=0.5", "loss.huber_delta=2"):
        with pytest.raises(ConfigError, match=f"{change.split('=')[0]} cannot change when resuming"):
            resume(run_dir, "train.epochs=20", change)
    assert metrics_of(run_dir)["epochs_run"] == 4


def test_accumulation_ends_with_the_epoch_and_resumes_exactly(cifar_dir, tmp_path):
    # 7 batches of 64 with grad_accum=2: steps after batches 2, 4, 6 and 7 of each epoch
    settings = ("train.grad_accum=2", "data.train_limit=448", "data.eval_limit=128",
                "train.deterministic=true")
    whole = tmp_path / "whole"
    train(smoke_config(cifar_dir, whole, *settings))
    split = tmp_path / "split"
    train(smoke_config(cifar_dir, split, "train.epochs=1", *settings))
    resume(split, "train.epochs=2")
    assert [h["step"] for h in metrics_of(whole)["history"]] == [4, 8]
    assert metrics_of(split)["history"][1]["val"] == metrics_of(whole)["history"][1]["val"]
    uninterrupted = load_file(str(whole / "last" / "model.safetensors"))
    resumed = load_file(str(split / "last" / "model.safetensors"))
    for name, tensor in uninterrupted.items():
        assert torch.equal(resumed[name], tensor), name


# `python -c STOP_AT_VALIDATION train ...` is colorize train that stops itself (SIGSTOP) when it
# first validates: the first epoch's batches are all trained, and its end is not saved yet
STOP_AT_VALIDATION = """
import os, signal
import colorize.engine.trainer
colorize.engine.trainer.evaluate = lambda *args: os.kill(os.getpid(), signal.SIGSTOP)
""" + RUN_CLI


def wait_until_stopped(process: subprocess.Popen, output: Path) -> None:
    """Wait until ``process`` stops itself; fail with its output if it ends instead."""
    while process.poll() is None:
        if Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
            return
        time.sleep(0.1)
    pytest.fail(f"the run ended instead of stopping:\n{output.read_text()}")


def test_a_run_killed_within_an_epoch_resumes_at_its_next_batch_exactly(cifar_dir, two_epochs, tmp_path):
    # the smoke run, 16 steps an epoch, with last/ also every 2 steps: when the process stops,
    # last/ is from step 14, and batches 15 and 16 have been trained since; it is killed there
    run_dir, output = tmp_path / "killed", tmp_path / "output.txt"
    command = [sys.executable, "-c", STOP_AT_VALIDATION, "train", "--config", REPO / "configs" / "smoke.yaml",
               f"data.dir={cifar_dir}", f"run.dir={run_dir}", "train.checkpoint_every=2"]
    with open(output, "w") as out:
        process = subprocess.Popen(list(map(str, command)), stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_stopped(process, output)
        saved = json.loads((run_dir / "last" / "trainer_state.json").read_text())
        assert (saved["train"]["epoch"], saved["train"]["step"], saved["train"]["progress"]["batches"]) == (0, 14, 14)
    finally:
        process.kill()
        process.wait()

    other_world = tmp_path / "other-world"  # the same checkpoint, as if 2 processes had written it
    shutil.copytree(run_dir, other_world)
    saved["train"]["progress"]["world"] = 2
    (other_world / "last" / "trainer_state.json").write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="within epoch 1 by 2 processes.*resume it with 2 processes"):
        resume(other_world)

    result = run_cli("train", "--resume", run_dir)  # in a new process, as after a crash
    assert f"{run_dir}: resuming epoch 1 at batch 15 of 16" in result.stdout
    resumed, uninterrupted = metrics_of(run_dir), metrics_of(two_epochs)
    assert resumed["epochs_run"] == uninterrupted["epochs_run"] == 2
    for again, whole in zip(resumed["history"], uninterrupted["history"]):
        counts = ("samples_seen_once", "samples_unseen", "samples_repeated")
        assert [again["train"][count] for count in counts] == [1024, 0, 0]
        assert again["train"]["loss"] == whole["train"]["loss"] and again["val"] == whole["val"]
    assert resumed["test"] == uninterrupted["test"]
    for folder in ("last", "best"):
        weights = load_file(str(run_dir / folder / "model.safetensors"))
        for name, tensor in load_file(str(two_epochs / folder / "model.safetensors")).items():
            assert torch.equal(weights[name], tensor), f"{folder}/{name}"




@pytest.mark.parametrize("batch, stopped, resumed", [
    # the smoke run logs every 8 of its 16 batches an epoch: the stop is agreed at batch 8
    (5, "in epoch 1 after step 8", "resuming epoch 1 at batch 9 of 16"),
    # agreed at the epoch's last batch: the epoch ends, validated and saved, before the stop
    (16, "after epoch 1 (step 16)", "resuming after epoch 1 of 2"),
])
def test_sigterm_stops_a_run_at_the_next_log_line_saved_to_resume_exactly(cifar_dir, two_epochs, tmp_path,
                                                                         batch, stopped, resumed):
    run_dir = tmp_path / "stopped"
    command = [sys.executable, "-c", f"import sigterm_at_batch\n{RUN_CLI}", "train", "--config",
               REPO / "configs" / "smoke.yaml", f"data.dir={cifar_dir}", f"run.dir={run_dir}"]
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, timeout=600,
                            env={**os.environ, **sigterm_at_batch(batch)})
    assert result.returncode == 128 + signal.SIGTERM, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"colorize train: stopped by SIGTERM {stopped}, with {run_dir}/last saved there; go on with "
        f"colorize train --resume {run_dir}")

    result = run_cli("train", "--resume", run_dir)
    assert f"{run_dir}: {resumed}" in result.stdout
    again, uninterrupted = metrics_of(run_dir), metrics_of(two_epochs)
    assert [h["train"]["loss"] for h in again["history"]] == [h["train"]["loss"] for h in uninterrupted["history"]]
    assert [h["val"] for h in again["history"]] == [h["val"] for h in uninterrupted["history"]]
    assert again["test"] == uninterrupted["test"]


def test_a_batch_larger_than_the_training_split_or_a_run_folder_that_cannot_be_made_is_named(cifar_dir, tmp_path):
    (tmp_path / "file").touch()
    for setting, message in [("data.batch_size=257", "data.batch_size: a batch of 257 images per process"),
                             (f"run.dir={tmp_path / 'file' / 'run'}",
                              f"{tmp_path / 'file' / 'run'}: a part of this path is a file, not a folder")]:
        result = run_cli("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={cifar_dir}",
                         f"run.dir={tmp_path / 'run'}", "data.train_limit=256", setting, check=False)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_a_negative_checkpoint_interval_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"train.checkpoint_every must be 0 \(off\) or a number of"):
        load_config(None, ["train.checkpoint_every=-1"])


def test_the_weight_average_is_validated_saved_as_best_and_resumed_exactly(cifar_dir, tmp_path):
    settings = ("train.ema=0.9", "data.train_limit=256", "data.eval_limit=128", "train.patience=5")
    whole, split = tmp_path / "whole", tmp_path / "split"
    train(smoke_config(cifar_dir, whole, *settings))
    train(smoke_config(cifar_dir, split, "train.epochs=1", *settings))
    average = load_file(split / "last" / "trainer_state.safetensors")
    assert average["average.n_averaged"].item() == 4  # one update per optimizer step
    best = load_file(str(split / "best" / "model.safetensors"))  # best epoch: the only one
    trained = load_file(str(split / "last" / "model.safetensors"))
    assert all(torch.equal(tensor, average[f"average.module.{name}"]) for name, tensor in best.items())
    assert not torch.equal(best["classifier.weight"], trained["classifier.weight"])
    resume(split, "train.epochs=2")
    assert metrics_of(split)["history"][1]["val"] == metrics_of(whole)["history"][1]["val"]
    assert metrics_of(split)["test"] == metrics_of(whole)["test"]
    with pytest.raises(ConfigError, match="train.ema cannot change when resuming"):
        resume(split, "train.epochs=3", "train.ema=0.5")


def test_resume_uses_the_previous_last_when_it_was_being_replaced(two_epochs, tmp_path, capsys):
    run_dir = tmp_path / "swapping"
    shutil.copytree(two_epochs, run_dir)
    (run_dir / "last").rename(run_dir / ".last.old")  # killed between the two renames
    assert resume(run_dir, "train.epochs=3")["epochs_run"] == 3
    assert "the run stopped while saving; last/ was being replaced: the previous one is back" in capsys.readouterr().out
    assert (run_dir / "last").is_dir() and not (run_dir / ".last.old").exists()


def test_a_compiled_run_saves_weights_an_uncompiled_model_loads(cifar_dir, tmp_path):
    run_dir = tmp_path / "compiled"
    train(smoke_config(cifar_dir, run_dir, "train.compile=true", "model.width=8", "train.epochs=1",
                       "data.train_limit=256", "data.eval_limit=256"))
    plain = load_config(str(run_dir / "config.yaml"), ["train.compile=false"])
    model = create_model("fusion", plain.model.settings, 10, 32)
    for saved in ("best", "last"):  # strict: the same names, no compile wrapper in them
        model.load_state_dict(load_file(run_dir / saved / "model.safetensors"))


def test_an_exported_model_colourizes_without_any_training_code(two_epochs, tmp_path):
    out = tmp_path / "exported"
    run_cli("export", two_epochs, out)
    card = (out / "README.md").read_text()
    assert f"{metrics_of(two_epochs)['test']['ab_l1']:.4f}" in card and "fusion" in card
    photo = tmp_path / "photo.png"
    Image.fromarray(skimage.data.chelsea()).save(photo)
    script = f"""
import sys
from colorize.models.fusion import FusionColorizer
from colorize.commands.inference import colorize_files
model = FusionColorizer.from_pretrained({str(out)!r})
assert not model.training
report = colorize_files({str(out)!r}, [{str(photo)!r}], {str(tmp_path / 'coloured')!r})
assert len(report.written) == 1, report.failed
loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('colorize', 'accelerate', 'omegaconf', 'ffcv'))
print(loaded)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    loaded = result.stdout.strip()
    for training_code in ("colorize.engine", "colorize.config", "colorize.data", "accelerate", "omegaconf", "ffcv"):
        assert f"'{training_code}" not in loaded, loaded
    for name, tensor in load_file(two_epochs / "best" / "model.safetensors").items():
        assert torch.equal(load_file(out / "model.safetensors")[name], tensor), name


RUNS_IN_ONE_PROCESS = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from conftest import smoke_config
from colorize.engine.trainer import train
threads = torch.get_num_threads()
def callers_handler(*args):
    pass
signal.signal(signal.SIGTERM, callers_handler)
torch.manual_seed(1234)
expected = torch.rand(3)
torch.manual_seed(1234)
for index, precision in enumerate(("no", "bf16", "auto", "no")):
    config = smoke_config({data!r}, f"{runs}/{{index}}", "train.epochs=1", "data.train_limit=128",
                          "data.eval_limit=64", "train.threads=1", f"train.mixed_precision={{precision}}",
                          f"train.deterministic={{str(index == 1).lower()}}")
    print("trained in", train(config)["mixed_precision"])
assert torch.get_num_threads() == threads, (torch.get_num_threads(), threads)
assert signal.getsignal(signal.SIGTERM) is callers_handler  # noted while each run trained
assert not torch.are_deterministic_algorithms_enabled()  # as before the deterministic run
assert {cublas!r} not in os.environ  # set for the deterministic run only
assert torch.equal(torch.rand(3), expected)  # the caller's random stream goes on as if no run had happened
"""


@pytest.mark.parametrize("kernels", [
    pytest.param({}, id="this-cpu"),
    pytest.param(AVX2_ONLY, id="avx2-only", marks=pytest.mark.skipif(
        torch.backends.cpu.get_cpu_capability() == "AVX2", reason="this CPU's kernels are AVX2 already: this-cpu")),
])
def test_runs_in_any_precisions_and_modes_follow_one_another_in_one_process(cifar_dir, tmp_path, kernels):
    code = RUNS_IN_ONE_PROCESS.format(tests=str(REPO / "tests"), data=str(cifar_dir), runs=str(tmp_path),
                                      cublas=CUBLAS_WORKSPACE)
    unset = {*AVX2_ONLY, CUBLAS_WORKSPACE}
    environment = {k: v for k, v in os.environ.items() if k not in unset} | kernels
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr
    trained = [line.split()[-1] for line in result.stdout.splitlines() if line.startswith("trained in")]
    assert trained[:2] == ["no", "bf16"] and trained[2] in ("no", "bf16") and trained[3:] == ["no"]


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_pickle_in_a_checkpoint_is_refused_unread(two_epochs, tmp_path):
    run_dir, marker = tmp_path / "planted", tmp_path / "code-ran"
    shutil.copytree(two_epochs, run_dir)
    with open(run_dir / "last" / "custom_checkpoint_0.pkl", "wb") as file:
        pickle.dump(_Payload(marker), file)
    with pytest.raises(CheckpointError, match="keeps the training state as a pickle.*start a new run"):
        resume(run_dir, "train.epochs=3")
    assert not marker.exists()


@pytest.mark.parametrize("name, damage", [
    ("model.safetensors", "truncated"), ("optimizer.bin", "truncated"), ("scheduler.bin", "truncated"),
    ("random_states_0.pkl", "truncated"), ("random_states_0.pkl", "missing"),
    ("trainer_state.json", "[]"), ("trainer_state.json", '{"x": 1}'),
])
def test_a_damaged_checkpoint_is_named_and_not_resumed(two_epochs, tmp_path, name, damage):
    run_dir = tmp_path / "damaged"
    shutil.copytree(two_epochs, run_dir)
    if damage == "missing":
        (run_dir / "last" / name).unlink()
    elif damage == "truncated":
        os.truncate(run_dir / "last" / name, 100)
    else:
        (run_dir / "last" / name).write_text(damage)
    with pytest.raises(CheckpointError, match=f"{run_dir / 'last'} is not a complete checkpoint .*cannot be resumed"):
        resume(run_dir, "train.epochs=3")
    assert metrics_of(run_dir)["epochs_run"] == 2


class _Crash(BaseException):
    """A power loss, as far as the run directory can tell."""


_CHECKPOINT_NAMES = {"last", "best", ".last.old", ".best.old", ".last.partial", ".best.partial"}


def _crash_at(monkeypatch, step: int) -> None:
    """Make the ``step``-th flush, rename or removal of a checkpoint folder crash the run."""
    count = 0

    def counted(operation, skip_if_missing=False):
        def wrapper(*paths):
            nonlocal count
            touched = [Path(p) for p in paths if Path(p).name in _CHECKPOINT_NAMES]
            if touched and not (skip_if_missing and not touched[0].exists()):
                count += 1
                if count == step:
                    raise _Crash(f"{operation.__name__}{paths}")
            return operation(*paths)
        return wrapper

    monkeypatch.setattr(io, "publish_tree", counted(io.publish_tree))
    monkeypatch.setattr(io, "rename", counted(io.rename))
    monkeypatch.setattr(io, "remove", counted(io.remove, skip_if_missing=True))


def test_a_crash_at_any_step_of_a_save_resumes_to_the_same_result(cifar_dir, tmp_path, monkeypatch):
    settings = ("data.train_limit=256", "data.eval_limit=128")
    whole, first = tmp_path / "whole", tmp_path / "first"
    train(smoke_config(cifar_dir, whole, *settings))
    train(smoke_config(cifar_dir, first, "train.epochs=1", *settings))
    assert metrics_of(whole)["best_epoch"] == 2  # the second epoch's save replaces best/ too
    step = 0
    while True:
        step += 1
        run_dir = tmp_path / f"crash-{step}"
        shutil.copytree(first, run_dir)
        with monkeypatch.context() as patches:
            _crash_at(patches, step)
            try:
                resume(run_dir, "train.epochs=2")
            except _Crash:
                pass
            else:
                break  # every step has crashed once
        resume(run_dir, "train.epochs=2")
        recovered, uninterrupted = metrics_of(run_dir), metrics_of(whole)
        assert [h["val"] for h in recovered["history"]] == [h["val"] for h in uninterrupted["history"]], step
        assert recovered["test"] == uninterrupted["test"], step
        for folder in ("last", "best"):
            weights = load_file(run_dir / folder / "model.safetensors")
            for name, tensor in load_file(whole / folder / "model.safetensors").items():
                assert torch.equal(weights[name], tensor), (step, folder, name)
        assert not list(run_dir.glob(".*")), step
    assert step > 8  # the save of last/ and of best/, step by step
