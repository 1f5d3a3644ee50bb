"""W&B tracking for real: the mode decided before a run starts (against local stand-ins for the
W&B server), offline runs, and the colour grids."""
import http.server
import json
import shlex
import socket
import threading
import time
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch
import wandb
from accelerate import Accelerator
from conftest import REPO, run_cli
from PIL import Image
from wandb_offline import OfflineRun, offline_runs

from colorize.config import load_config
from colorize.settings import TrackingConfig
from colorize.show import grids, tracking
from colorize.show.tracking import RunTracker, Tracking, TrackingUnavailable, resolve_tracking


@pytest.fixture
def wandb_home(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # the stand-in servers are reached directly
    return tmp_path


@pytest.fixture
def unreachable_wandb(wandb_home, monkeypatch) -> str:
    """W&B credentials, and a W&B server address where nothing listens; returns that address."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("WANDB_API_KEY", "fake")
    monkeypatch.setenv("WANDB_BASE_URL", url)
    return url


@pytest.fixture
def wandb_server(wandb_home, monkeypatch) -> str:
    """A stand-in W&B server that answers GET (the reachability probe) but never answers wandb's
    API calls (POST); WANDB_BASE_URL points at it. Returns its host:port."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()

        def do_POST(self):
            release.wait(60)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_port}"
    monkeypatch.setenv("WANDB_BASE_URL", f"http://{address}")
    yield address
    release.set()
    server.shutdown()
    server.server_close()


def test_auto_mode_follows_credentials_and_the_server(wandb_home, wandb_server):
    offline = resolve_tracking(TrackingConfig())
    assert offline.mode == "offline" and "no W&B credentials" in offline.reason
    (wandb_home / ".netrc").write_text(f"machine {wandb_server}\n  login user\n  password abc\n")
    (wandb_home / ".netrc").chmod(0o600)
    assert resolve_tracking(TrackingConfig()) == Tracking("online")
    assert resolve_tracking(TrackingConfig(mode="online")) == Tracking("online")
    assert resolve_tracking(TrackingConfig(mode="disabled")).log_with is None
    assert resolve_tracking(TrackingConfig(backend="none", mode="online")) == Tracking("disabled")


def test_unreachable_server_is_offline_in_auto_mode_and_an_error_online(unreachable_wandb, monkeypatch):
    start = time.monotonic()
    fallback = resolve_tracking(TrackingConfig())
    assert fallback.mode == "offline" and fallback.log_with == "wandb"
    assert f"the W&B server {unreachable_wandb} cannot be reached" in fallback.reason
    with pytest.raises(TrackingUnavailable, match=r"^tracking.mode=online, but the W&B server .* "
                                                  r"cannot be reached .*set tracking.mode=offline"):
        resolve_tracking(TrackingConfig(mode="online"))
    monkeypatch.setenv("WANDB_MODE", "online")  # auto mode does what WANDB_MODE asks
    with pytest.raises(TrackingUnavailable, match="^WANDB_MODE=online, but"):
        resolve_tracking(TrackingConfig())
    assert time.monotonic() - start < 5


def test_online_without_credentials_fails_in_one_line(wandb_home):
    with pytest.raises(TrackingUnavailable, match="^tracking.mode=online, but no W&B credentials") as failure:
        resolve_tracking(TrackingConfig(mode="online"))
    assert "wandb login" in str(failure.value)


def test_the_wait_for_the_server_is_bounded(wandb_home, monkeypatch):
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("WANDB_API_KEY", "fake")
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}")
        monkeypatch.setattr(tracking, "PROBE_TIMEOUT_S", 0.5)
        start = time.monotonic()
        fallback = resolve_tracking(TrackingConfig())
    assert fallback.mode == "offline" and "timed out" in fallback.reason
    assert time.monotonic() - start < 3


@pytest.mark.parametrize("api_key, wandb_error", [("fake", "WANDB_API_KEY invalid"),
                                                  ("k" * 40, "Failed to get resume status")])
def test_an_online_run_that_wandb_cannot_start_fails_in_one_line(wandb_server, tmp_path, monkeypatch,
                                                                 api_key, wandb_error):
    """The server answers the probe, then wandb rejects the key, or the server hangs: wandb's
    wait is bounded (INIT_TIMEOUT_S, here 1 s) and its error ends in one line."""
    monkeypatch.setenv("WANDB_API_KEY", api_key)
    monkeypatch.delenv("WANDB_INIT_TIMEOUT", raising=False)
    monkeypatch.setattr(tracking, "INIT_TIMEOUT_S", 1)
    wandb.teardown()  # wandb keeps the settings of its first use in a process, the server address among them
    online = resolve_tracking(TrackingConfig(mode="online"))
    accelerator = Accelerator(cpu=True, log_with=online.log_with)
    start = time.monotonic()
    with pytest.raises(TrackingUnavailable) as failure:
        RunTracker(load_config(None, []), online, accelerator, tmp_path, None)
    message = str(failure.value)
    assert message.startswith(f"W&B could not start the run in online mode ({wandb_error}")
    assert "\n" not in message and "tracking.mode=offline" in message
    assert time.monotonic() - start < 40  # wandb's own wait is 90 s


@pytest.mark.parametrize("credentials", ["none", "unreachable server"])
def test_online_training_fails_before_reading_data(unreachable_wandb, tmp_path, monkeypatch, credentials):
    if credentials == "none":
        monkeypatch.delenv("WANDB_API_KEY")
    result = run_cli("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={tmp_path / 'absent'}",
                     f"run.dir={tmp_path / 'run'}", "tracking.mode=online", check=False)
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("colorize train: error: tracking.mode=online, but ")
    assert "Traceback" not in result.stderr and "absent" not in result.stderr
    assert not (tmp_path / "run").exists()


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
    np.testing.assert_array_equal(truth, grids.lab_to_uint8(l[:1], ab_true[:1])[0])


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
def test_offline_run_logs_metrics_grids_and_resumes_the_same_run(cifar_dir, tmp_path, unreachable_wandb):
    """Auto mode with credentials but no W&B server falls back to offline, and says so."""
    run_dir = tmp_path / "tracked"
    env = {"WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_CONFIG_DIR": str(tmp_path / "config"),
           "WANDB_DATA_DIR": str(tmp_path / "data")}
    first = run_cli("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={cifar_dir}",
                    f"run.dir={run_dir}", "train.epochs=1", "tracking.mode=auto", "data.train_limit=256",
                    env=env)
    [offline_line] = [line for line in first.stdout.splitlines() if line.startswith("W&B is offline")]
    assert f"as the W&B server {unreachable_wandb} cannot be reached" in offline_line
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
