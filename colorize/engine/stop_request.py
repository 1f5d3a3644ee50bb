"""Stopping a run cleanly when the system asks it to with SIGTERM (a scheduler's time limit or
preemption, ``kill``, ``timeout``, a launcher shutting down): the signal is noted when it
arrives; every process asks at each log line whether any of them received it, so that all
agree on where to stop; the trainer then saves ``last/`` at the end of that optimizer step, or
at the end of the epoch it is validating, and stops. ``colorize train --resume`` goes on from
there as if nothing had happened."""
import signal
import threading

import torch
from accelerate import Accelerator

from colorize.errors import Stopped


class StopRequest:
    """While entered, SIGTERM sets :attr:`received` instead of ending the process; leaving puts
    back the handler that was there. Outside the main thread, where signals cannot be caught,
    it changes nothing."""

    SIGNAL = signal.SIGTERM

    def __init__(self):
        self.received = False  # by this process
        self.agreed = False  # by every process: some process received it
        self._previous = None

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(self.SIGNAL, self._note)
            signal.siginterrupt(self.SIGNAL, False)  # system calls the signal interrupts go on
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(self.SIGNAL, self._previous)
            self._previous = None

    def _note(self, signal_number, frame) -> None:
        self.received = True

    def poll(self, accelerator: Accelerator) -> bool:
        """Whether any process has received the signal (every process calls this at the same
        point); once True, it stays True."""
        if self.agreed:
            return True
        if accelerator.num_processes == 1:  # its own flag: no device work, no wait for the device
            self.agreed = self.received
        else:
            self.agreed = bool(accelerator.gather(torch.tensor([int(self.received)], device=accelerator.device)).any())
        return self.agreed

    def stopped(self, where: str, run_dir) -> Stopped:
        """What ends a run stopped ``where`` (e.g. "after epoch 3"), with ``last/`` saved there."""
        return Stopped(
            f"stopped by {self.SIGNAL.name} {where}, with {run_dir}/last saved there; go on with "
            f"colorize train --resume {run_dir}", self.SIGNAL)
