import json

import numpy as np

from colorize.bench import stored_rgb
from colorize.config import DataConfig
from colorize.data.loaders import build_loaders
from colorize.data.prepare import PrepareSettings, prepare
from conftest import run_cli


def test_loader_benchmark_reports_every_loader(small_dir):
    result = run_cli("bench", "loader", "--data", small_dir, "--batch-size", "16", "--epochs", "1", "--json")
    figures = json.loads(result.stdout)
    assert set(figures["loaders"]) == {"ffcv", "memory", "per_item"}
    assert all(f["images_per_s"] > 0 for f in figures["loaders"].values())
    assert "cores" in figures["machine"]
    table = run_cli("bench", "loader", "--data", small_dir, "--batch-size", "16", "--epochs", "1").stdout
    assert table.splitlines()[0].split() == ["loader", "images/s", "vs", "per-item"]


def test_per_item_images_from_float16_storage_match_float32(small_source, small_dir, tmp_path):
    half_dir = tmp_path / "half"
    prepare(str(small_source), half_dir, PrepareSettings(dtype="float16"))
    half, full = (stored_rgb(build_loaders(DataConfig(dir=str(d), loader="memory"),
                                           splits=("train",))["train"]) for d in (half_dir, small_dir))
    assert half.shape == full.shape == (108, 32, 32, 3)
    assert np.abs(half.astype(int) - full.astype(int)).max() <= 1
