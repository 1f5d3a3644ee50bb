"""The training step on a CUDA GPU: precision chosen from the GPU, deterministic training,
SyncBatchNorm, the step captured in a CUDA graph, and batches staged through pinned memory.
Skipped without a GPU; the training data are tensors on the device."""
import threading
import time

import pytest
import torch
from accelerate.utils import set_seed

from colorize.config import load_config
from colorize.data.loaders import LoaderSpec, TensorLoader
from colorize.engine.build import build_training
from colorize.engine.runtime import create_accelerator, run_scope
from colorize.engine.trainer import train_epoch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

MANIFEST = {"classes": [str(i) for i in range(10)], "resolution": 32}


def weights(model):
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def train_one_epoch(tmp_path, *overrides):
    """A training of one epoch of 8 batches of 64 random images from seed 0: the training, the
    epoch's figures and the weights it started from."""
    config = load_config(None, [f"run.dir={tmp_path}", "tracking.mode=disabled", "train.log_every=4",
                                *overrides])
    with run_scope():  # as colorize train: the deterministic mode ends with the run
        accelerator, precision = create_accelerator(config.train)
        set_seed(0, deterministic=config.train.deterministic)
        data = torch.Generator().manual_seed(1)
        lab = torch.cat((torch.rand(512, 1, 32, 32, generator=data) * 100,
                         torch.randn(512, 2, 32, 32, generator=data) * 20), dim=1)
        labels = torch.randint(0, 10, (512,), generator=data)
        spec = LoaderSpec(path=tmp_path, count=512, batch_size=64, train=True, storage_dtype="float32",
                          device=accelerator.device)
        loader = TensorLoader(spec, lab.to(accelerator.device), labels.to(accelerator.device))
        training = build_training(config, accelerator, precision, {"train": loader}, MANIFEST)
        initial = weights(training.plain_model)
        return training, train_epoch(training, epoch=0), initial


def test_auto_trains_in_bf16_on_a_gpu_with_it(tmp_path):
    training, values, _ = train_one_epoch(tmp_path)
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert training.precision.name == ("bf16" if native else "no")
    assert values["samples_seen_once"] == 512 and values["loss"] < 1e3
    assert next(training.model.parameters()).is_cuda


def test_deterministic_training_repeats_exactly(tmp_path):
    first, _, _ = train_one_epoch(tmp_path, "train.deterministic=true")
    second, _, _ = train_one_epoch(tmp_path, "train.deterministic=true")
    again = weights(second.plain_model)
    for name, tensor in weights(first.plain_model).items():
        assert torch.equal(again[name], tensor), name


def test_sync_batchnorm_trains(tmp_path):
    training, values, _ = train_one_epoch(tmp_path, "train.sync_batchnorm=true", "train.grad_accum=3")
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in training.model.modules())
    assert values["samples_seen_once"] == 512


def relative_difference(trained, reference, initial):
    """|trained's updates - reference's| / |reference's|, over every floating-point tensor."""
    difference = update = 0.0
    for name, start in initial.items():
        if start.is_floating_point():
            moved = reference[name].double() - start.double()
            difference += (trained[name].double() - start.double() - moved).square().sum().item()
            update += moved.square().sum().item()
    assert update > 0
    return (difference / update) ** 0.5


def test_a_captured_step_trains_as_the_eager_one(tmp_path):
    """The step captured in a CUDA graph trains as the eager one, within bf16 rounding: the model's
    updates, the weight average's and the losses. The learning rate falls from 0.01 to 0 over the
    epoch's 8 steps: a graph that froze it, or left out the optimizer step or the average, would
    move the weights far from the eager step's."""
    settings = ("train.epochs=1", "optim.lr=0.01", "schedule.name=cosine", "schedule.warmup=0",
                "train.ema=0.9", "train.deterministic=true")
    eager, eager_values, initial = train_one_epoch(tmp_path / "eager", "train.cuda_graphs=off", *settings)
    captured, values, captured_initial = train_one_epoch(tmp_path / "captured", "train.cuda_graphs=on", *settings)
    assert captured.step.graph is not None and captured.step_mode.captured
    assert all(torch.equal(captured_initial[name], tensor) for name, tensor in initial.items())
    assert values["loss"] == pytest.approx(eager_values["loss"], rel=0.02)
    for model in (lambda training: training.plain_model, lambda training: training.evaluated_model):
        trained, reference = weights(model(captured)), weights(model(eager))
        assert relative_difference(trained, reference, initial) < 0.1
        assert all(torch.equal(trained[name], tensor) for name, tensor in reference.items()
                   if not tensor.is_floating_point())  # BatchNorm's batch counts


def trains_eagerly(tmp_path, capsys, cause):
    """The training of :func:`train_one_epoch` with ``train.cuda_graphs=on``, whose capture fails
    with ``cause`` and which trains on eagerly over the whole epoch."""
    training, values, _ = train_one_epoch(tmp_path, "train.cuda_graphs=on")
    out = capsys.readouterr().out
    assert f"cannot be captured in a CUDA graph ({cause}" in out, out
    assert not training.step_mode.captured and values["samples_seen_once"] == 512
    return training


def test_a_step_that_cannot_be_captured_trains_eagerly(tmp_path, capsys, monkeypatch):
    from colorize import losses

    original = losses.HuberClassLoss.__call__

    def synchronising(self, prediction, batch):
        parts = original(self, prediction, batch)
        parts["total"].item()  # a host wait: not allowed while capturing
        return parts

    monkeypatch.setattr(losses.HuberClassLoss, "__call__", synchronising)
    trains_eagerly(tmp_path, capsys, "RuntimeError: called a synchronizing CUDA operation")


def test_an_optimizer_with_its_step_counts_on_the_host_trains_eagerly(tmp_path, capsys, monkeypatch):
    from colorize.engine import build

    def foreach_adam(name, settings, model, lr, device):
        return torch.optim.Adam(model.parameters(), lr=lr, foreach=True)  # step counts on the CPU

    monkeypatch.setattr(build, "build_optimizer", foreach_adam)
    training = trains_eagerly(tmp_path, capsys, "AssertionError")
    assert training.optimizer.state[next(training.plain_model.parameters())]["step"] == 8


def test_the_step_is_captured_while_another_thread_calls_cuda(tmp_path):
    """A loader's thread (FFCV's) goes on calling CUDA while the step is captured: here, events
    recorded on a stream of its own and queried, which a capture that minded every thread would
    refuse (``capture_error_mode="global"``)."""
    stop, errors = threading.Event(), []

    def loader_thread():
        try:
            stream = torch.cuda.Stream()
            while not stop.is_set():
                event = torch.cuda.Event()
                event.record(stream)
                event.query()
                time.sleep(0.0005)
        except Exception as error:  # reported below
            errors.append(error)

    thread = threading.Thread(target=loader_thread, daemon=True)
    thread.start()
    try:
        training, values, _ = train_one_epoch(tmp_path, "train.cuda_graphs=on")
    finally:
        stop.set()
        thread.join()
    assert training.step.graph is not None and training.step_mode.captured, training.step_mode.reason
    assert not errors and values["samples_seen_once"] == 512


def test_pinned_staging_delivers_every_batch_intact():
    from colorize.data.staging import PinnedStaging

    staging, host, delivered = PinnedStaging(torch.device("cuda"), slots=2), torch.empty(256, 3), []
    for value in range(20):
        host.fill_(value)  # the source changes as soon as a batch is handed over, as FFCV's buffers do
        delivered.append(staging((host,))[0] * 1)
    torch.cuda.synchronize()
    assert [int(batch.unique().item()) for batch in delivered] == list(range(20))


def test_ffcv_batches_on_the_gpu_equal_the_memory_loaders(small_dir):
    from colorize.data.loaders import build_loaders
    from colorize.settings import DataConfig

    def batches(kind):
        loader = build_loaders(DataConfig(dir=str(small_dir), loader=kind, batch_size=16, shift=2),
                               device=torch.device("cuda"), splits=("train",))["train"]
        loader.set_epoch(1)
        return [(batch.l.cpu(), batch.ab.cpu(), batch.label.cpu()) for batch in loader]

    for ffcv, memory in zip(batches("ffcv"), batches("memory"), strict=True):
        for a, b in zip(ffcv, memory):
            assert torch.equal(a, b)


def test_the_matmul_peak_is_measured_on_products_large_enough_for_the_gpu():
    from colorize.bench.machine import matmul_peak
    from colorize.bench.train import matmul_sizes

    device = torch.device("cuda")
    size = matmul_sizes(device, native_bf16=True)["bf16"]
    assert matmul_peak(torch.bfloat16, device, size, rounds=2) > matmul_peak(torch.bfloat16, device, 1024, rounds=2)
