"""Early stopping on a metric that should fall (val ab L1), optionally among epochs that meet a
condition (the vivid recipe's floor on colourfulness)."""
import math


class EarlyStopping:
    """Stop after ``patience`` epochs in a row without an improvement larger than ``min_delta``.
    An epoch that is not ``eligible`` can be the best only while no eligible one has been seen,
    and an eligible epoch always improves on an ineligible best."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience, self.min_delta = patience, min_delta
        self.best = math.inf
        self.best_epoch = -1
        self.best_eligible = False
        self.bad_epochs = 0

    def update(self, value: float, epoch: int, eligible: bool = True) -> bool:
        """Record ``epoch``'s value; True when it is a new best."""
        if eligible != self.best_eligible:
            improved = eligible
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.best_eligible, self.bad_epochs = value, epoch, eligible, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "best_eligible": self.best_eligible,
                "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
        self.best_eligible = state["best_eligible"]
