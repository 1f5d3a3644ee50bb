import json

import numpy as np
import pytest
import torch
from conftest import run_cli

from colorize.bench.loader import format_loader_table
from colorize.bench.prepare import format_prepare_table
from colorize.bench.profile import profile_step
from colorize.bench.report_pipeline import stored_rgb
from colorize.bench.train import format_train_table, matmul_sizes
from colorize.data.loaders import build_loaders
from colorize.data.prepare import PrepareSettings, prepare
from colorize.settings import DataConfig


def test_loader_benchmark_reports_every_loader(small_dir):
    result = run_cli("bench", "loader", "--data", small_dir, "--batch-size", "16", "--epochs", "1", "--json")
    figures = json.loads(result.stdout)
    assert set(figures["loaders"]) == {"ffcv", "memory", "per_item"}
    assert all(f["images_per_s"] > 0 for f in figures["loaders"].values())
    assert "cores" in figures["machine"]
    assert format_loader_table(figures).splitlines()[0].split() == ["loader", "images/s", "vs", "per-item"]


@pytest.mark.slow
def test_training_benchmark_measures_every_entry_against_the_peak(small_dir):
    # one colorize train entry is enough here: they differ only in the command that starts them
    result = run_cli("bench", "train", "--data", small_dir, "--steps", "1", "--batch-size", "16", "--json",
                     "--skip", "fp32", "bf16", "--set", "model.decoder_groups=1")
    figures = json.loads(result.stdout)
    entries = figures["entries"]
    assert list(entries) == ["report", "make_train", "cpu_ddp"]  # no GPU
    assert entries["make_train"]["processes"] == 1 and entries["cpu_ddp"]["processes"] == 2
    assert entries["make_train"]["precision"] == entries["cpu_ddp"]["precision"] == \
        ("bf16" if figures["native_bf16"] else "fp32")
    ours = entries["make_train"]["gflop_per_image"]  # of the ungrouped decoder that --set asked for
    assert figures["overrides"] == ["model.decoder_groups=1"]
    assert 0.11 < ours < 0.15 and entries["report"]["gflop_per_image"] > 1.2 * ours  # encoder twice
    for entry in entries.values():
        assert entry["images_per_s"] > 0 and 0 <= entry["data_wait_fraction"] < 1
        peak = figures["matmul_peak_gflop_per_s"][entry["precision"]]
        assert entry["utilization"] == pytest.approx(entry["images_per_s"] * entry["gflop_per_image"] / peak)
    table = format_train_table(figures).splitlines()
    assert [line.split()[0] for line in table[1:len(entries) + 1]] == list(entries)
    assert "matmul peak" in table[-2] and "cores" in table[-1]


def test_the_peaks_are_measured_on_products_that_fill_the_device():
    assert matmul_sizes(torch.device("cuda"), native_bf16=True) == {"fp32": 8192, "bf16": 8192}
    assert matmul_sizes(torch.device("cpu"), native_bf16=True) == {"fp32": 2048, "bf16": 2048}
    assert matmul_sizes(torch.device("cpu"), native_bf16=False) == {"fp32": 2048, "bf16": 512}


def test_the_training_benchmark_measures_a_network_with_a_bin_head(small_dir):
    result = run_cli("bench", "train", "--data", small_dir, "--steps", "1", "--batch-size", "16", "--json",
                     "--skip", "fp32", "bf16", "cpu_ddp", "--set", "model.head=bins", "loss.name=bins_class")
    ours = json.loads(result.stdout)["entries"]["make_train"]
    assert ours["images_per_s"] > 0 and ours["gflop_per_image"] > 0.12  # the bin scores cost more than ab (0.110)


def test_a_mistyped_benchmark_setting_fails_before_any_timing(small_dir):
    result = run_cli("bench", "train", "--data", small_dir, "--set", "train.compiled=true", check=False)
    assert result.returncode != 0 and "train.compiled" in result.stderr and "timing" not in result.stderr


def test_the_loader_benchmark_names_a_folder_that_is_not_prepared_data_before_any_timing(tmp_path):
    result = run_cli("bench", "loader", "--data", tmp_path, check=False)
    assert result.returncode != 0 and "timing" not in result.stderr
    assert f"{tmp_path} is not a prepared data directory" in result.stderr


@pytest.mark.parametrize("precision, label", [("no", "fp32"), ("bf16", "bf16")])
def test_profile_names_the_costliest_operators_in_the_precision_asked_for(small_dir, precision, label):
    table = profile_step(small_dir, batch_size=8, top=5,
                         overrides=["train.channels_last=false", f"train.mixed_precision={precision}"]).splitlines()
    assert len(table) == 1 + 5 + 2 and any("aten::" in line for line in table[1:6])
    shares = [float(line.split()[0].rstrip("%")) for line in table[1:6]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 100
    assert "the optimizer step" in table[-2] and f"per step of 8 images, {label}," in table[-1]


def test_prepare_benchmark_measures_speed_and_peak_memory_of_the_prepare_command(tmp_path):
    result = run_cli("bench", "prepare", "--images", "200", "--size", "48", "--resolutions", "16",
                     "--folder", tmp_path / "photos", "--json")
    figures = json.loads(result.stdout)
    (run,) = figures["runs"]
    assert run["resolution"] == 16 and run["images"] == 200 and run["images_per_s"] > 0
    assert 100 < run["peak_memory_mb"] < 4000  # python, torch and FFCV's writer processes at least
    assert len(list((tmp_path / "photos").glob("class*/*.jpg"))) == 200 and "cores" in figures["machine"]
    assert format_prepare_table(figures).splitlines()[1].split()[:2] == ["16", "200"]


def test_per_item_images_from_float16_storage_match_float32(small_source, small_dir, tmp_path):
    half_dir = tmp_path / "half"
    prepare(str(small_source), half_dir, PrepareSettings(dtype="float16"))
    half, full = (stored_rgb(build_loaders(DataConfig(dir=str(d), loader="memory", batch_size=16),
                                           splits=("train",))["train"]) for d in (half_dir, small_dir))
    assert half.shape == full.shape == (108, 32, 32, 3)
    assert np.abs(half.astype(int) - full.astype(int)).max() <= 1
