"""The progress of a run that every ``last/`` checkpoint keeps: epochs and steps done, the
history, early stopping, the W&B run, and how far into an epoch a mid-epoch checkpoint is."""
from dataclasses import asdict, dataclass, field
from typing import List, Optional

import torch

from colorize.engine.early_stopping import EarlyStopping


@dataclass
class EpochProgress:
    """How far into an epoch a mid-epoch checkpoint is: the batches trained on, and the epoch's
    running sums so far, over all processes."""

    batches: int  # of the epoch, trained on
    world: int  # the processes that trained them (each one's share of the epoch depends on their number)
    seen: torch.Tensor  # (samples,) int32 on the CPU: how often each training sample was trained on
    total: dict  # the epoch's loss sums (LossWindow.state)
    window: dict  # those since the last log line


@dataclass
class TrainState:
    """Progress saved in every ``last/`` checkpoint."""

    early_stopping: EarlyStopping
    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    history: List[dict] = field(default_factory=list)
    tracking_id: Optional[str] = None  # the W&B run to continue
    progress: Optional[EpochProgress] = None  # how far into epoch ``epoch``: in mid-epoch checkpoints only

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "step": self.step, "history": self.history,
                "early_stopping": self.early_stopping.state_dict(), "tracking_id": self.tracking_id,
                "progress": None if self.progress is None else asdict(self.progress)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.step, self.history = state["epoch"], state["step"], state["history"]
        self.early_stopping.load_state_dict(state["early_stopping"])
        self.tracking_id = state["tracking_id"]
        progress = state["progress"]
        self.progress = None if progress is None else EpochProgress(**progress)
