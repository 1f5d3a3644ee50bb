"""Weights & Biases tracking through Accelerate's trackers, on the main process only.

``tracking.mode``: ``online``, ``offline`` (written under ``RUN_DIR/wandb``, uploaded later
with ``wandb sync``), ``disabled``, or ``auto``: online when W&B credentials are present,
otherwise offline. A resumed run continues the same W&B run (its id is kept in the
checkpoint); offline, each start writes its own folder, and the printed ``wandb sync`` command
names them all, oldest first. Per-epoch values (``val/*``, ``test/*``) are charted against
``epoch``.
"""
import netrc
import os
import shlex
import uuid
from pathlib import Path
from typing import Dict, List, Optional

from accelerate import Accelerator
from PIL import Image

from colorize.config import Config, TrackingConfig, to_dict

WANDB_HOST = "api.wandb.ai"


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(config: TrackingConfig) -> str:
    """``online``, ``offline`` or ``disabled``."""
    if config.backend == "none":
        return "disabled"
    if config.mode != "auto":
        return config.mode
    return os.environ.get("WANDB_MODE") or ("online" if _has_wandb_credentials() else "offline")


def accelerate_log_with(config: TrackingConfig) -> Optional[str]:
    """What to pass as ``Accelerator(log_with=...)``."""
    return None if resolve_mode(config) == "disabled" else "wandb"


class RunTracker:
    """Logs a run to W&B (when enabled) and keeps the run id for resuming."""

    def __init__(self, config: Config, accelerator: Accelerator, run_dir: Path, run_id: Optional[str]):
        self.accelerator = accelerator
        self.mode = resolve_mode(config.tracking)
        self.run_id = run_id
        if self.mode == "disabled":
            return
        self.run_id = run_id or uuid.uuid4().hex[:12]
        tracking = config.tracking
        accelerator.init_trackers(
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
            }},
        )
        if accelerator.is_main_process:
            run = self._run()
            run.define_metric("epoch")
            for pattern in ("val/*", "test/*"):
                run.define_metric(pattern, step_metric="epoch")
            if self.mode == "offline":
                print(self._offline_message(), flush=True)

    @property
    def enabled(self) -> bool:
        return self.mode != "disabled"

    def _run(self):
        return self.accelerator.get_tracker("wandb", unwrap=True)

    def _offline_message(self) -> str:
        """Each start of the run, resumed ones included, writes its own folder: sync them all."""
        wandb_dir = Path(self._run().settings.sync_dir).parent
        folders = sorted(f.parent for f in wandb_dir.glob(f"offline-run-*/run-{self.run_id}.wandb"))
        return (f"W&B is offline: the run is written under {wandb_dir}; upload it later with: "
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
