import json

from conftest import run_cli


def test_loader_benchmark_reports_every_loader(small_dir):
    result = run_cli("bench", "loader", "--data", small_dir, "--batch-size", "16", "--epochs", "1", "--json")
    figures = json.loads(result.stdout)
    assert set(figures["loaders"]) == {"ffcv", "memory", "per_item"}
    assert all(f["images_per_s"] > 0 for f in figures["loaders"].values())
    assert "cores" in figures["machine"]
    table = run_cli("bench", "loader", "--data", small_dir, "--batch-size", "16", "--epochs", "1").stdout
    assert table.splitlines()[0].split() == ["loader", "images/s", "vs", "per-item"]
