"""The training step on a CUDA GPU: precision chosen from the GPU, deterministic training and
SyncBatchNorm. Skipped without a GPU; the data are tensors on the device (no FFCV needed)."""
import pytest
import torch
from accelerate.utils import set_seed

from colorize.config import load_config
from colorize.data.loaders import LoaderSpec, TensorLoader
from colorize.engine.runtime import create_accelerator
from colorize.engine.trainer import build, train_epoch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

MANIFEST = {"classes": [str(i) for i in range(10)], "resolution": 32}


def train_one_epoch(tmp_path, *overrides):
    """Weights after one epoch of 8 batches of 64 random images, trained from seed 0."""
    config = load_config(None, [f"run.dir={tmp_path}", "tracking.mode=disabled", "train.log_every=4",
                                *overrides])
    accelerator, precision = create_accelerator(config.train)
    set_seed(0, deterministic=config.train.deterministic)
    data = torch.Generator().manual_seed(1)
    lab = torch.cat((torch.rand(512, 1, 32, 32, generator=data) * 100,
                     torch.randn(512, 2, 32, 32, generator=data) * 20), dim=1)
    labels = torch.randint(0, 10, (512,), generator=data)
    spec = LoaderSpec(path=tmp_path, count=512, batch_size=64, train=True, storage_dtype="float32",
                      device=accelerator.device)
    loader = TensorLoader(spec, lab.to(accelerator.device), labels.to(accelerator.device))
    training = build(config, accelerator, precision, {"train": loader}, MANIFEST)
    values = train_epoch(training, epoch=0)
    weights = {k: v.detach().clone() for k, v in training.plain_model.state_dict().items()}
    return precision, values, weights, training.model


def test_auto_trains_in_bf16_on_a_gpu_with_it(tmp_path):
    precision, values, _, model = train_one_epoch(tmp_path)
    assert precision.name == ("bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "no")
    assert values["samples_seen_once"] == 512 and values["loss"] < 1e3
    assert next(model.parameters()).is_cuda


def test_deterministic_training_repeats_exactly(tmp_path):
    first = train_one_epoch(tmp_path, "train.deterministic=true")[2]
    second = train_one_epoch(tmp_path, "train.deterministic=true")[2]
    for name, tensor in first.items():
        assert torch.equal(second[name], tensor), name


def test_sync_batchnorm_trains(tmp_path):
    _, values, _, model = train_one_epoch(tmp_path, "train.sync_batchnorm=true", "train.grad_accum=3")
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())
    assert values["samples_seen_once"] == 512
