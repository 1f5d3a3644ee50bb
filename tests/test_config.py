import pytest
from conftest import REPO, run_cli

from colorize.config import flat_settings, load_config, save_config
from colorize.errors import ConfigError
from colorize.settings import CHOICES


def _setting(config, key):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _both_ways(tmp_path, key, text):
    """The config with ``key: text`` read from a YAML file, and from a ``key=text`` override."""
    section, name = key.split(".")
    path = tmp_path / "typed.yaml"
    path.write_text(f"{section}:\n  {name}: {text}\n")
    return load_config(str(path)), load_config(None, [f"{key}={text}"])


def test_recipes_load_with_the_documented_values():
    reference = load_config(str(REPO / "configs" / "reference.yaml"))
    assert (reference.data.batch_size, reference.optim.lr, reference.loss.huber_delta) == (512, 1e-3, 1.0)
    assert reference.loss.class_weight == 1.0 and reference.train.epochs == 30 and reference.data.hflip
    smoke = load_config(str(REPO / "configs" / "smoke.yaml"))
    assert smoke.train.epochs <= 2 and smoke.data.train_limit


def test_the_accurate_recipe_is_the_averaged_one_on_unet_fusion_with_batches_of_128_for_40_epochs_and_shifts_averaged():
    averaged, accurate = (flat_settings(load_config(str(REPO / "configs" / f"{name}.yaml")))
                          for name in ("averaged", "accurate"))
    changed = {key: accurate[key] for key in accurate if accurate[key] != averaged.get(key)}
    assert changed == {"run.name": "accurate", "model.name": "unet_fusion", "model.shift_average": True,
                       "data.batch_size": 128, "train.ema": 0.99925, "train.epochs": 40, "train.patience": 40}


def test_a_file_builds_on_the_recipe_its_base_names_under_its_own_settings_and_the_overrides(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: averaged\ndata:\n  batch_size: 64\noptim:\n  lr: 0.001\n")
    config = load_config(str(mine), ["optim.lr=0.0005"])
    averaged = load_config(str(REPO / "configs" / "averaged.yaml"))
    assert (config.data.batch_size, config.optim.lr) == (64, 0.0005)
    assert (config.data.shift, config.train.ema, config.optim.weight_decay) == (4, 0.9985, 0.05)
    assert config.model == averaged.model and config.run.name == "averaged"


def test_a_base_that_colorize_does_not_ship_is_refused_by_name(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: ../../etc/passwd\n")
    with pytest.raises(ConfigError, match=r"base: '../../etc/passwd' in config file .*mine.yaml .*averaged"):
        load_config(str(mine))


def test_overrides_and_the_run_dir():
    config = load_config(None, ["data.dir=elsewhere", "run.name=x", "tracking.tags=[a,b]"])
    assert config.data.dir == "elsewhere" and str(config.run.path) == "runs/x"
    assert config.tracking.tags == ["a", "b"]
    assert str(load_config(None, ["run.dir=/tmp/r"]).run.path) == "/tmp/r"


@pytest.mark.parametrize("key, value", [(key, value) for key, values in CHOICES.items() for value in values])
def test_every_documented_choice_can_be_typed(tmp_path, key, value):
    for config in _both_ways(tmp_path, key, value):
        assert _setting(config, key) == value


@pytest.mark.parametrize("key, text", [
    ("run.name", "01"), ("run.name", "0x10"), ("run.name", "no"), ("run.name", "1e3"),
    ("tracking.entity", "no"), ("tracking.group", "off"), ("tracking.run_name", "yes"), ("data.dir", "on"),
])
def test_text_settings_keep_what_was_typed(tmp_path, key, text):
    for config in _both_ways(tmp_path, key, text):
        assert _setting(config, key) == text
        save_config(config, tmp_path / "saved.yaml")
        assert _setting(load_config(str(tmp_path / "saved.yaml")), key) == text


@pytest.mark.parametrize("override, value", [
    ("run.name=exp #3", "exp #3"), ("data.dir=runs/x # y", "runs/x # y"), ("tracking.group=lr: 3e-4", "lr: 3e-4"),
    ("run.dir= runs/a ", "runs/a"), ('run.name="[a] b"', "[a] b"), ("tracking.tags=[a, b]", ["a", "b"]),
    ("tracking.entity=", None),
])
def test_an_override_keeps_its_text_whole_unless_it_is_a_yaml_list_quote_or_null(override, value):
    key = override.partition("=")[0]
    assert _setting(load_config(None, [override]), key) == value


@pytest.mark.parametrize("key, text, value", [
    ("data.hflip", "no", False), ("data.hflip", "on", True), ("data.os_cache", "false", False),
    ("train.epochs", "05", 5), ("optim.lr", "1e-3", 1e-3), ("train.threads", "null", None),
    ("tracking.entity", "~", None), ("tracking.tags", "[no, 01]", ["no", "01"]),
])
def test_booleans_numbers_and_null_are_typed_by_the_setting(tmp_path, key, text, value):
    for config in _both_ways(tmp_path, key, text):
        assert _setting(config, key) == value


@pytest.mark.parametrize("overrides, message", [
    (["optim.lrr=0.1"], "unknown setting 'optim.lrr'.*did you mean optim.lr"),
    (["train.epochs=ten"], "bad value for 'train.epochs'"),
    (["data.loader=disk"], "data.loader must be one of auto, ffcv, memory"),
    (["train.mixed_precision=fp8"], "train.mixed_precision must be one of"),
    (["data.batch_size=0"], "data.batch_size must be positive"),
    (["loss.name=bins_class", "loss.rebalance_mix=0"], r"loss.rebalance_mix must be in \(0, 1\]"),
    (["train.min_colorfulness=-0.5"], "train.min_colorfulness must be at least 0"),
    (["optim.lr=1e39"], "optim.lr=1e[+]?39 is beyond float32"),
    (["optim.lr=nan"], "optim.lr must be a finite number, got nan"),
    (["train.min_delta=-inf"], "train.min_delta must be a finite number, got -inf"),
    (["train.min_delta=-0.1"], "train.min_delta must be at least 0"),
    (["optim.beta1=1.5"], r"optim.beta1 must be in \[0, 1\), got 1.5"),
    (["optim.beta2=-0.1"], r"optim.beta2 must be in \[0, 1\), got -0.1"),
    (["optim.eps=-1"], "optim.eps must be at least 0, got -1"),
    (["optim.name=adamw", "optim.weight_decay=-0.1"], r"optim.weight_decay must be at least 0 \(0: no decay\)"),
    (["loss.class_weight=-1"], r"loss.class_weight must be at least 0 \(0: colour only\), got -1"),
    (["loss.name=bins_class", "loss.class_weight=-1"], r"loss.class_weight must be at least 0 \(0: colour only\)"),
    (["optim.name=sgd", "optim.momentum=-1"], "optim.momentum must be at least 0, got -1"),
    (["model.width=3"], "model.width=3 must be a multiple of model.decoder_groups=2"),
    (["model.name=unet_fusion", "model.width=7"], "model.width=7 must be a multiple of model.decoder_groups=2"),
    (["epochs"], "must look like key=value"),
    (["run.name=.."], r"run.name='..' must name a folder inside runs/ \(such as lr3e-4 or sweep/lr3e-4\); for a run"),
    (["run.name=/tmp/x"], "run.name='/tmp/x' must name a folder inside runs/"),
    (["run.name=a/../../b"], "run.name='a/../../b' must name a folder inside runs/"),
    (["data.dir=[2024] cifar"], r"""not valid YAML: .*; for this text itself, quote it: data.dir='"\[2024\] cifar"'"""),
    (["train=5"], "train in the command line must be a section of settings, such as train: {epochs: 30}"),
    (["model=fusion"], "model in the command line must be a section of settings, such as model: {name: fusion}"),
])
def test_bad_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


_ALIASES_OF_ALIASES = "x0: &x0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 10)}]\n" for i in range(1, 8))  # 10^8 values


@pytest.mark.parametrize("text, message", [
    ("train:\n  epochs: &a [*a]\n", "nests lists or mappings more than 20 deep, or holds a YAML alias"),
    ("train:\n  epochs: " + "[" * 300 + "]" * 300 + "\n", "nests lists or mappings more than 20 deep"),
    (_ALIASES_OF_ALIASES, "holds more than 10,000 values once its YAML aliases"),
    ("train:\n  epochs: !!python/object/apply:os.system [echo]\n", "could not determine a constructor"),
])
def test_a_yaml_file_that_would_run_code_or_never_end_is_refused_by_name(tmp_path, text, message):
    path = tmp_path / "hostile.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"config file {path} .*{message}"):
        load_config(str(path))


def test_a_shipped_recipe_is_named_by_its_name_where_no_such_file_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # away from the checkout's configs/
    assert load_config("vivid") == load_config(str(REPO / "configs" / "vivid.yaml"))
    with pytest.raises(ConfigError, match="config file vivd does not exist; give a YAML file or the name of a "
                                          "recipe colorize ships: accurate, .*vivid"):
        load_config("vivd")


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


def test_a_run_directorys_imports_run_only_when_trusted(tmp_path, monkeypatch):
    from colorize.config import load_run_config

    marker = tmp_path / "imported"
    (tmp_path / "someone_elses.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("imports: [someone_elses]\nrun:\n  name: theirs\n")
    with pytest.raises(ConfigError, match="imports someone_elses, which would run their code: pass --trust-code"):
        load_run_config(run_dir)
    result = run_cli("evaluate", "--checkpoint", run_dir, check=False, env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 1 and "pass --trust-code" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists()
    assert load_run_config(run_dir, trust_code=True).imports == ["someone_elses"] and marker.exists()
