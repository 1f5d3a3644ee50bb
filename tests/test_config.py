import pytest

from colorize.config import ConfigError, load_config, save_config
from conftest import REPO, run_cli


def test_recipes_load_with_the_documented_values():
    reference = load_config(str(REPO / "configs" / "reference.yaml"))
    assert (reference.data.batch_size, reference.optim.lr, reference.loss.huber_delta) == (512, 1e-3, 1.0)
    assert reference.loss.class_weight == 1.0 and reference.train.epochs == 30 and reference.data.hflip
    smoke = load_config(str(REPO / "configs" / "smoke.yaml"))
    assert smoke.train.epochs <= 2 and smoke.data.train_limit


def test_overrides_and_the_run_dir():
    config = load_config(None, ["data.dir=elsewhere", "run.name=x", "tracking.tags=[a,b]"])
    assert config.data.dir == "elsewhere" and str(config.run.path) == "runs/x"
    assert config.tracking.tags == ["a", "b"]
    assert str(load_config(None, ["run.dir=/tmp/r"]).run.path) == "/tmp/r"


@pytest.mark.parametrize("overrides, message", [
    (["optim.lrr=0.1"], "unknown setting 'optim.lrr'.*did you mean optim.lr"),
    (["train.epochs=ten"], "bad value for 'train.epochs'"),
    (["data.loader=disk"], "data.loader must be one of ffcv, memory"),
    (["train.mixed_precision=fp8"], "train.mixed_precision must be one of"),
    (["data.batch_size=0"], "data.batch_size must be positive"),
    (["epochs"], "must look like key=value"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match=f"unknown setting 'train.epoch' in {path}"):
        load_config(str(path))


def test_saved_config_loads_back_identically(tmp_path):
    config = load_config(None, ["optim.lr=0.02", "tracking.tags=[x]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == config


def test_cli_reports_a_bad_key_without_traceback():
    result = run_cli("train", "--config", REPO / "configs" / "smoke.yaml", "train.epochz=1", check=False)
    assert result.returncode == 1
    assert "unknown setting 'train.epochz'" in result.stderr and "Traceback" not in result.stderr
