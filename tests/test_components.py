"""Components by name: the registry, your own network, loss and schedule in files of their own,
optimizers, schedules and their exact resume."""
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from functools import partial

import pytest
import torch
from conftest import REPO, run_cli
from safetensors.torch import load_file
from torch import nn

from colorize import optim
from colorize.config import load_config
from colorize.errors import ConfigError
from colorize.models import MODELS, create_model
from colorize.optim import (
    CosineSettings,
    OneCycleSettings,
    SGDSettings,
    build_optimizer,
    build_schedule,
    cosine,
    one_cycle,
    parameter_groups,
)
from colorize.registry import Registry

PLUGINS = {
    "tiny_net.py": '''
        """A network of two convolutions, without a class head."""
        from dataclasses import dataclass

        from torch import nn

        from colorize.models import Colorizer, Prediction
        from colorize.models import MODELS


        @dataclass
        class TinySettings:
            channels: int = 8


        @MODELS.register("tiny", TinySettings)
        class Tiny(Colorizer):
            def __init__(self, settings, num_classes, resolution):
                super().__init__()
                self.body = nn.Sequential(nn.Conv2d(1, settings.channels, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(settings.channels, 2, 3, padding=1))

            def forward(self, l):
                return Prediction(self.body(l / 50 - 1) * 110)
    ''',
    "tiny_loss.py": '''
        """L1 on ab, in two named parts."""
        from colorize.losses import LOSSES


        @LOSSES.register("l1_parts")
        class L1Parts:
            def __init__(self, settings):
                pass

            def __call__(self, prediction, batch):
                error = (prediction.ab.float() - batch.ab.float()).abs()
                a, b = error[:, 0].mean(), error[:, 1].mean()
                return {"total": (a + b) / 2, "a": a, "b": b}
    ''',
    "tiny_schedule.py": '''
        """The learning rate halved every ``every`` optimizer steps."""
        from dataclasses import dataclass

        from colorize.optim import SCHEDULES


        @dataclass
        class HalvingSettings:
            every: int = 10


        @SCHEDULES.register("halving", HalvingSettings)
        def halving(settings, step, total):
            return 0.5 ** (step // settings.every)
    ''',
}


def smoke_args(data_dir, run_dir, *overrides):
    return ["train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={data_dir}", f"run.dir={run_dir}",
            "data.train_limit=256", "data.eval_limit=128", *overrides]


def metrics_of(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def learned(metrics):
    """Per epoch: the step, the learning rate and every loss part, and the val metrics."""
    return [(h["step"], {k: v for k, v in h["train"].items() if k == "lr" or k.startswith("loss")}, h["val"])
            for h in metrics["history"]]


def test_a_duplicate_name_is_refused_and_an_unknown_one_suggests_the_nearest():
    registry = Registry("thing", "thing")
    registry.register("one")(lambda settings: None)
    with pytest.raises(ValueError, match="thing 'one' is already registered"):
        registry.register("one")(lambda settings: None)
    with pytest.raises(ConfigError, match="model.name='fusoin' is not a known model; did you mean fusion"):
        load_config(None, ["model.name=fusoin"])


def test_settings_belong_to_the_component_named():
    config = load_config(str(REPO / "configs" / "reference.yaml"), ["optim.name=sgd", "optim.momentum=0.8"])
    assert config.optim.name == "sgd" and config.optim.lr == 1e-3 and config.optim.momentum == 0.8
    with pytest.raises(ConfigError, match="unknown setting 'optim.momentum'.*optim.name=adam"):
        load_config(None, ["optim.momentum=0.8"])
    with pytest.raises(ConfigError, match="model.widht.*did you mean model.width"):
        load_config(None, ["model.widht=8"])
    with pytest.raises(ConfigError, match="schedule.warmup must be in"):
        load_config(None, ["schedule.name=cosine", "schedule.warmup=1.5"])
    with pytest.raises(ConfigError, match="scale_lr_with_world_size=true needs data.batch_size_scope=process"):
        load_config(None, ["optim.scale_lr_with_world_size=true", "data.batch_size_scope=global"])


def test_list_shows_every_component_and_the_models_cost():
    listing = run_cli("list").stdout
    for name in ("fusion", "huber_class", "adam", "adamw", "sgd", "constant", "one_cycle", "cosine"):
        assert f"  {name} " in listing
    assert "1,989,580 parameters, 0.110 GFLOP/image at 32x32" in listing


def test_no_weight_decay_on_norms_and_biases():
    model = create_model("fusion")
    config = load_config(None, ["optim.name=adamw", "optim.weight_decay=0.05"])
    optimizer = build_optimizer("adamw", config.optim.settings, model, lr=1e-3)
    decayed, kept = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and kept["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in kept["params"])
    assert len(decayed["params"]) + len(kept["params"]) == len(list(model.parameters()))


def small_network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))


def trained(model: nn.Module, optimizer: torch.optim.Optimizer) -> list:
    """``model``'s parameters after 5 steps on fixed random images."""
    generator = torch.Generator().manual_seed(1)
    for _ in range(5):
        model(torch.randn(8, 1, 8, 8, generator=generator)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return [parameter.detach() for parameter in model.parameters()]


@pytest.mark.parametrize("name, plain", [
    ("adam", partial(torch.optim.Adam, foreach=False)), ("adamw", partial(torch.optim.AdamW, foreach=False)),
    ("sgd", partial(torch.optim.SGD, momentum=0.9, nesterov=True, foreach=False))])
def test_on_the_cpu_the_optimizers_step_exactly_as_torchs_loop(name, plain):
    settings = load_config(None, [f"optim.name={name}", "optim.weight_decay=0.05"]).optim.settings
    built = build_optimizer(name, settings, model := small_network(), 1e-2, torch.device("cpu"))
    assert built.defaults["foreach"] and not built.defaults["fused"]
    reference = small_network()
    expected = trained(reference, plain(parameter_groups(reference, 0.05), lr=1e-2))
    assert all(torch.equal(a, b) for a, b in zip(trained(model, built), expected))


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_on_cuda_the_optimizers_are_fused(name):
    settings = load_config(None, [f"optim.name={name}"]).optim.settings
    optimizer = build_optimizer(name, settings, small_network(), 1e-3, torch.device("cuda"))
    assert optimizer.defaults["fused"] and not optimizer.defaults["foreach"]


def test_an_optimizer_factory_without_a_device_is_built(monkeypatch):
    registry = Registry("optimizer", "optim")
    registry.register("plain_sgd", SGDSettings)(lambda settings, groups, lr: torch.optim.SGD(groups, lr))
    monkeypatch.setattr(optim, "OPTIMIZERS", registry)
    optimizer = build_optimizer("plain_sgd", SGDSettings(), small_network(), 0.1, torch.device("cuda"))
    assert optimizer.defaults["lr"] == 0.1 and not optimizer.defaults["fused"]


def test_schedules_rise_peak_and_fall_as_documented():
    settings = OneCycleSettings()
    factors = [one_cycle(settings, step, 100) for step in range(100)]
    assert factors[0] == pytest.approx(1 / 25) and factors[30] == pytest.approx(1.0)
    assert max(factors) == pytest.approx(1.0) and factors[-1] == pytest.approx(1e-4)
    warm = [cosine(CosineSettings(warmup=0.1), step, 100) for step in range(100)]
    assert warm[0] < warm[5] < warm[10] == pytest.approx(1.0) and warm[-1] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(warm[10:], warm[11:]))
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    schedule = build_schedule("one_cycle", settings, optimizer, total_steps=100)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 / 25)
    for _ in range(30):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


@pytest.mark.slow
def test_a_network_loss_and_schedule_of_your_own_train_and_resume(cifar_dir, tmp_path):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    for name, source in PLUGINS.items():
        (plugins / name).write_text(textwrap.dedent(source))
    env = {"PYTHONPATH": os.pathsep.join([str(plugins), os.environ.get("PYTHONPATH", "")])}
    mine = ["imports=[tiny_net,tiny_loss,tiny_schedule]", "model.name=tiny", "model.channels=4",
            "loss.name=l1_parts", "schedule.name=halving", "schedule.every=3"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    run_cli(*smoke_args(cifar_dir, whole, *mine), env=env)
    run_cli(*smoke_args(cifar_dir, split, *mine, "train.epochs=1"), env=env)
    refused = run_cli("train", "--resume", split, "train.epochs=2", env=env, check=False)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert "imports tiny_net, tiny_loss, tiny_schedule, which would run their code: pass --trust-code" in refused.stderr
    run_cli("train", "--resume", split, "train.epochs=2", "--trust-code", env=env)
    uninterrupted, resumed = metrics_of(whole), metrics_of(split)
    first, second = uninterrupted["history"]
    assert {"loss", "loss_a", "loss_b"} <= set(first["train"])  # the loss's own parts, logged
    assert first["train"]["lr"] == pytest.approx(1e-3 * 0.5)  # 4 steps: halved once after 3
    assert second["train"]["lr"] == pytest.approx(1e-3 * 0.5 ** 2)
    assert math.isnan(first["val"]["accuracy"])  # no class head
    assert learned(resumed) == learned(uninterrupted) and resumed["test"] == uninterrupted["test"]
    saved = json.loads((whole / "best" / "config.json").read_text())
    assert saved["name"] == "tiny" and saved["module"] == "tiny_net" and saved["settings"] == {"channels": 4}


@pytest.mark.slow
def test_a_killed_run_resumes_on_the_same_schedule_to_the_same_weights(cifar_dir, tmp_path):
    settings = ["train.epochs=3", "data.train_limit=512", "data.eval_limit=128", "schedule.name=one_cycle",
                "model.width=8"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    run_cli(*smoke_args(cifar_dir, whole, *settings))
    command = [sys.executable, "-m", "colorize", *map(str, smoke_args(cifar_dir, killed, *settings))]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while process.poll() is None and not (killed / "metrics.json").is_file():
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = metrics_of(killed)["epochs_run"]
    assert 1 <= done < 3, "the run ended before it could be killed"
    resumed = run_cli("train", "--resume", killed).stdout
    assert f"resuming after epoch {done} of 3" in resumed
    assert learned(metrics_of(killed)) == learned(metrics_of(whole))
    for name, tensor in load_file(whole / "last" / "model.safetensors").items():
        assert torch.equal(load_file(killed / "last" / "model.safetensors")[name], tensor), name


def test_the_fusion_network_is_registered_with_its_settings():
    entry = MODELS.entry("fusion")
    assert entry.settings().width == 32 and entry.factory.resolution_multiple == 8
