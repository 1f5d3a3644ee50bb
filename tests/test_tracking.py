"""W&B tracking in offline mode, for real, and the colour grids."""
import json
import shlex
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
from PIL import Image

from colorize import grids
from colorize.config import TrackingConfig
from colorize.tracking import resolve_mode
from conftest import REPO, run_cli
from wandb_offline import OfflineRun, offline_runs


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    return tmp_path


def test_auto_mode_follows_credentials(wandb_home, monkeypatch):
    assert resolve_mode(TrackingConfig()) == "offline"
    (wandb_home / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    (wandb_home / ".netrc").chmod(0o600)
    assert resolve_mode(TrackingConfig()) == "online"
    assert resolve_mode(TrackingConfig(mode="disabled")) == "disabled"
    assert resolve_mode(TrackingConfig(backend="none", mode="online")) == "disabled"


def test_grid_layout(tmp_path):
    torch.manual_seed(0)
    l = torch.rand(12, 1, 32, 32) * 100
    ab_true, ab_pred = torch.randn(12, 2, 32, 32) * 20, torch.randn(12, 2, 32, 32) * 20
    rows = {"grey": torch.zeros_like(ab_true), "pred": ab_pred, "true": ab_true}
    image = grids.render_grid(l, rows, [f"c{i}\n1.0" for i in range(12)])
    expected = (grids.LABEL_WIDTH + 10 * 66, 2 * (3 * 66 + grids.CAPTION_HEIGHT))
    assert image.size == grids.grid_size(12, 32) == expected
    pixels = np.asarray(image)
    tile = 32 * grids.SCALE + grids.PAD
    grey = pixels[0:64, grids.LABEL_WIDTH:grids.LABEL_WIDTH + 64]
    assert np.abs(grey.astype(int) - grey[..., :1]).max() <= 1  # R = G = B up to rounding
    truth = pixels[2 * tile:2 * tile + 64:2, grids.LABEL_WIDTH:grids.LABEL_WIDTH + 64:2]
    np.testing.assert_array_equal(truth, grids.to_uint8(l[:1], ab_true[:1])[0])


def test_extremes_keep_the_worst_and_best_images():
    extremes = grids.Extremes(2)
    for offset in (0.0, 10.0):
        truth = torch.zeros(4, 2, 2, 2)
        errors = torch.tensor([1.0, 4.0, 2.0, 3.0]) + offset
        extremes.add(torch.zeros(4, 1, 2, 2), truth, errors.view(4, 1, 1, 1).expand(4, 2, 2, 2),
                     torch.arange(4), torch.arange(4))
    assert extremes.worst["error"].tolist() == [14.0, 13.0]
    assert extremes.best["error"].tolist() == [1.0, 2.0]


def sync_folders(stdout: str) -> List[Path]:
    """The folders that the printed ``wandb sync`` command uploads."""
    command = shlex.split(stdout.split("upload it later with: ")[1].splitlines()[0])
    assert command[:2] == ["wandb", "sync"]
    return [Path(folder) for folder in command[2:]]


@pytest.mark.slow
def test_offline_run_logs_metrics_grids_and_resumes_the_same_run(cifar_dir, tmp_path, wandb_home):
    run_dir = tmp_path / "tracked"
    env = {"WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
           "WANDB_DATA_DIR": str(tmp_path / "data")}
    first = run_cli("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={cifar_dir}",
                    f"run.dir={run_dir}", "train.epochs=1", "tracking.mode=auto", "data.train_limit=256",
                    env=env)
    assert "W&B is offline" in first.stdout
    [first_folder] = sync_folders(first.stdout)
    resumed = run_cli("train", "--resume", run_dir, "train.epochs=2", env=env)

    folders = sync_folders(resumed.stdout)  # the resumed run writes a second folder: both are named
    assert len(folders) == 2 and folders[0] == first_folder
    assert set(folders) == {run.directory for run in offline_runs(run_dir)}
    runs = [OfflineRun(folder) for folder in folders]
    assert runs[0].run_id == runs[1].run_id  # resumed, not a new run
    for run in runs:
        assert run.step_metrics == {"epoch": "", "val/*": "epoch", "test/*": "epoch"}
    history = [row for run in runs for row in run.history]
    assert [row["epoch"] for row in history if "val/ab_l1" in row] == [1, 2]
    for key in ("train/loss", "train/loss_color", "train/loss_class", "train/lr", "train/images_per_s",
                "train/data_wait_fraction", "val/ab_l1", "val/psnr", "val/accuracy"):
        assert any(key in row for row in history), key
    grid_rows = [row for row in history if "val/grid/path" in row]
    assert [row["epoch"] for row in grid_rows] == [1, 2]
    assert all(len(run.media("grid_*.png")) == 1 for run in runs)
    logged = Image.open(runs[1].media("grid_*.png")[0])
    expected_size = grids.grid_size(40, 32)
    assert logged.size == expected_size

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert runs[1].summary["test/ab_l1"] == pytest.approx(metrics["test"]["ab_l1"])
    table = json.loads(runs[1].media("extremes_*.table.json")[0].read_text())
    assert table["columns"][1:4] == ["class", "predicted", "error"] and len(table["data"]) == 16
    errors = [row[3] for row in table["data"]]
    assert min(errors[:8]) >= max(errors[8:])  # worst first, then best

    for epoch in (1, 2):
        png = Image.open(run_dir / "grids" / f"epoch_{epoch:03d}.png")
        assert png.size == expected_size
    assert any(r.WhichOneof("record_type") == "config" for r in runs[0].records)
