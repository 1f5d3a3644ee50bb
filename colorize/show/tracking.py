"""Weights & Biases tracking through Accelerate's trackers, on the main process only.

``tracking.mode``: ``online``, ``offline`` (written under ``RUN_DIR/wandb``, uploaded later
with ``wandb sync``), ``disabled``, or ``auto``: online when W&B credentials are present and the
W&B server (``WANDB_BASE_URL``, by default https://api.wandb.ai) answers, otherwise offline, saying
why. The mode is decided when training starts, before any data are read: ``online`` without
credentials or server fails there, in one line. A resumed run continues the same W&B run (its id
is kept in the checkpoint); offline, each start writes its own folder, and the printed ``wandb
sync`` command names them all, oldest first. Per-epoch values (``val/*``, ``test/*``) are charted
against ``epoch``.
"""
import http.client
import netrc
import os
import shlex
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from accelerate import Accelerator
from PIL import Image

from colorize.config import Config, to_dict
from colorize.errors import ColorizeError
from colorize.settings import TrackingConfig

WANDB_URL = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 5  # the wait for the W&B server's answer when training starts
INIT_TIMEOUT_S = 30  # wandb.init's wait for the server (wandb's own default: 90 s)
_OFFLINE_ADVICE = "set tracking.mode=offline to log offline and upload the run later with wandb sync"


class TrackingUnavailable(ColorizeError):
    """W&B online was asked for, but cannot be reached or cannot start the run."""


@dataclass(frozen=True)
class Tracking:
    """How a run is tracked: ``mode`` online, offline or disabled, and why auto mode chose offline."""
    mode: str
    reason: str = ""

    @property
    def log_with(self) -> Optional[str]:
        """What to pass as ``Accelerator(log_with=...)``."""
        return None if self.mode == "disabled" else "wandb"


def resolve_tracking(config: TrackingConfig) -> Tracking:
    """How this process tracks the run; TrackingUnavailable if ``online`` cannot connect."""
    setting, mode = _requested(config)
    if mode not in ("online", "auto"):
        return Tracking(mode)
    reason = _why_not_online()
    if reason is None:
        return Tracking("online")
    if mode == "auto":
        return Tracking("offline", reason)
    raise TrackingUnavailable(f"{setting}=online, but {reason}: {_OFFLINE_ADVICE}, or use tracking.mode=auto")


def _requested(config: TrackingConfig) -> Tuple[str, str]:
    """The setting that picks the mode, and the mode it picks (``auto`` defers to WANDB_MODE)."""
    if config.backend == "none":
        return "tracking.backend", "disabled"
    if config.mode == "auto" and os.environ.get("WANDB_MODE"):
        return "WANDB_MODE", os.environ["WANDB_MODE"]
    return "tracking.mode", config.mode


def _why_not_online() -> Optional[str]:
    """Why W&B cannot be used online, or None. Only the main process (rank 0), the one that talks
    to W&B, probes the server: the others log nothing, whatever their mode."""
    url = os.environ.get("WANDB_BASE_URL") or WANDB_URL
    if not _has_credentials(urlsplit(url).netloc):
        return "no W&B credentials were found (run `wandb login`, or set WANDB_API_KEY)"
    return _unreachable(url) if os.environ.get("RANK", "0") == "0" else None


def _has_credentials(host: str) -> bool:
    """An API key in the environment, or one for ``host`` in the .netrc file that ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _unreachable(url: str) -> Optional[str]:
    """Why the W&B server at ``url`` gives no answer within PROBE_TIMEOUT_S, or None if it answers."""
    try:
        urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        pass  # an error status is an answer
    except (OSError, ValueError, http.client.HTTPException) as error:
        reason = error.reason if isinstance(error, urllib.error.URLError) else error
        return f"the W&B server {url} cannot be reached ({reason})"
    return None


class RunTracker:
    """Logs a run to W&B (when enabled) and keeps the run id for resuming."""

    def __init__(self, config: Config, tracking: Tracking, accelerator: Accelerator, run_dir: Path,
                 run_id: Optional[str]):
        """``tracking``: what :func:`resolve_tracking` decided for ``config.tracking``."""
        self.accelerator = accelerator
        self.mode = tracking.mode
        self.run_id = run_id
        if self.mode == "disabled":
            return
        self.run_id = run_id or uuid.uuid4().hex[:12]
        self._start(config, run_dir)
        if accelerator.is_main_process:
            run = self._run()
            run.define_metric("epoch")
            for pattern in ("val/*", "test/*"):
                run.define_metric(pattern, step_metric="epoch")
            if self.mode == "offline":
                print(self._offline_message(tracking.reason), flush=True)

    def _start(self, config: Config, run_dir: Path) -> None:
        """Start the W&B run; wandb's failures end in one line."""
        import wandb

        tracking = config.tracking
        # bounds the wait on a server that accepts and then hangs; WANDB_INIT_TIMEOUT, when set, wins
        init_timeout = os.environ.get("WANDB_INIT_TIMEOUT", INIT_TIMEOUT_S)
        try:
            self.accelerator.init_trackers(
                tracking.project,
                config=to_dict(config),
                init_kwargs={"wandb": {
                    "name": tracking.run_name or config.run.name,
                    "entity": tracking.entity,
                    "group": tracking.group,
                    "tags": tracking.tags or None,
                    "id": self.run_id,
                    "resume": "allow",
                    "mode": self.mode,
                    "dir": str(run_dir),
                    "settings": wandb.Settings(init_timeout=init_timeout),
                }},
            )
        except wandb.errors.Error as error:
            first_line = str(error).splitlines()[0]
            raise TrackingUnavailable(f"W&B could not start the run in {self.mode} mode ({first_line}): "
                                      f"{_OFFLINE_ADVICE}, or tracking.mode=disabled") from None

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def _run(self):
        return self.accelerator.get_tracker("wandb", unwrap=True)

    def _offline_message(self, reason: str) -> str:
        """Why W&B is offline, if it was not asked to be, and how to upload the run. Each start of
        the run, resumed ones included, writes its own folder: sync them all."""
        wandb_dir = Path(self._run().settings.sync_dir).parent
        folders = sorted(f.parent for f in wandb_dir.glob(f"offline-run-*/run-{self.run_id}.wandb"))
        why = f" as {reason}" if reason else ""
        return (f"W&B is offline{why}: the run is written under {wandb_dir}; upload it later with: "
                + shlex.join(["wandb", "sync", *map(str, folders)]))

    def log_image(self, key: str, image: Image.Image, caption: str, step: int) -> None:
        if self.enabled and self.accelerator.is_main_process:
            import wandb

            self._run().log({key: wandb.Image(image, caption=caption)}, step=step)

    def log_table(self, key: str, columns: List[str], rows: List[list], step: int) -> None:
        """Rows may hold PIL images; they become W&B images."""
        if self.enabled and self.accelerator.is_main_process:
            import wandb

            data = [[wandb.Image(v) if isinstance(v, Image.Image) else v for v in row] for row in rows]
            self._run().log({key: wandb.Table(columns=columns, data=data)}, step=step)

    def summarize(self, values: Dict[str, float]) -> None:
        if self.enabled and self.accelerator.is_main_process:
            self._run().summary.update(values)
