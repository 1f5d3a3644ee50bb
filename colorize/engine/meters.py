"""The running loss sums and timings of training: per log window and per epoch, kept on the
device so that adding a batch never waits for it, and summed over processes when read."""
import time
from typing import Dict, List, Optional, Tuple

import torch
from accelerate import Accelerator

from colorize.data.loaders import Batch
from colorize.engine.state import EpochProgress


class LossWindow:
    """Loss sums and timings since the last log line (or the epoch's start). The sums stay on the
    device, so adding a batch never waits for it; ``read`` sums them over processes. The loss's
    parts are whatever it returns."""

    def __init__(self, device: torch.device):
        self.device = device
        self.parts: List[str] = []
        self.sums: Optional[torch.Tensor] = None
        self.images = 0
        self.wait = 0.0
        self.started = time.perf_counter()

    def add(self, parts: List[str], sums: torch.Tensor, images: int, wait: float) -> None:
        """Add a batch of ``images``: ``sums``, its loss ``parts`` times its images (float64)."""
        if self.sums is None:
            self.parts, self.sums = parts, sums.clone()
        else:
            self.sums += sums
        self.images += images
        self.wait += wait

    @classmethod
    def carried_on(cls, device: torch.device, state: dict) -> "LossWindow":
        """A window that goes on from one's :meth:`state`."""
        window = cls(device)
        window.parts, window.images, window.wait = list(state["parts"]), state["images"], state["wait"]
        if window.parts:
            window.sums = torch.tensor(state["sums"], dtype=torch.float64, device=device)
        window.started -= state["seconds"]
        return window

    def _global_sums(self, accelerator: Accelerator) -> Tuple[List[float], int]:
        """(the loss sums, the images) over all processes."""
        sums = self.sums if self.sums is not None else torch.zeros(0, dtype=torch.float64, device=self.device)
        local = torch.cat((sums, sums.new_full((1,), self.images)))
        *totals, images = accelerator.reduce(local, reduction="sum").tolist()
        return totals, int(images)

    def state(self, accelerator: Accelerator) -> dict:
        """The window so far, its sums over all processes (every process calls this)."""
        totals, images = self._global_sums(accelerator)
        return {"parts": self.parts, "sums": totals, "images": images, "wait": self.wait,
                "seconds": time.perf_counter() - self.started}

    def read(self, accelerator: Accelerator) -> Dict[str, float]:
        """Global mean losses (``loss`` and ``loss_<part>``), images/s and the fraction of time
        spent waiting for data (every process calls this)."""
        return self.values(self.state(accelerator))

    @staticmethod
    def values(state: dict) -> Dict[str, float]:
        """What :meth:`read` returns, from a window's :meth:`state`."""
        images, seconds = state["images"], state["seconds"]
        values = {"loss" if name == "total" else f"loss_{name}": total / max(images, 1)
                  for name, total in zip(state["parts"], state["sums"])}
        values.update(images=images, seconds=seconds, images_per_s=images / max(seconds, 1e-9),
                      data_wait_fraction=state["wait"] / max(seconds, 1e-9))
        return values


class EpochSums:
    """One process's running sums of an epoch: its losses (``total``), those since the last log
    line (``window``), and how often each sample was trained on. A resumed epoch's sums go on, in
    the main process only, from the sums over all processes that its checkpoint saved."""

    def __init__(self, accelerator: Accelerator, samples: int, saved: Optional[EpochProgress]):
        device = accelerator.device
        carried = saved if accelerator.is_main_process else None
        self.seen = (torch.zeros(samples, dtype=torch.int32, device=device) if carried is None
                     else carried.seen.to(device))
        self.total = LossWindow(device) if carried is None else LossWindow.carried_on(device, carried.total)
        self.window = LossWindow(device) if carried is None else LossWindow.carried_on(device, carried.window)

    def add(self, batch: Batch, losses: Dict[str, torch.Tensor], waited: float) -> None:
        """Add a batch, in a few device operations that never wait for it."""
        self.seen.index_add_(0, batch.index, torch.ones_like(batch.index, dtype=torch.int32))
        parts, images = list(losses), len(batch.l)
        sums = torch.stack([losses[name].detach() for name in parts]).double() * images
        self.window.add(parts, sums, images, waited)
        self.total.add(parts, sums, images, waited)

    def progress(self, accelerator: Accelerator, batches: int) -> EpochProgress:
        """The epoch so far, after ``batches`` batches (every process calls this)."""
        seen = accelerator.reduce(self.seen, reduction="sum").cpu()
        return EpochProgress(batches, accelerator.num_processes, seen, self.total.state(accelerator),
                             self.window.state(accelerator))

    def coverage(self, accelerator: Accelerator) -> Dict[str, int]:
        """How many samples the epoch trained on once, not at all, and more than once."""
        seen = accelerator.reduce(self.seen, reduction="sum")
        return {"samples_seen_once": int((seen == 1).sum()), "samples_unseen": int((seen == 0).sum()),
                "samples_repeated": int((seen > 1).sum())}
