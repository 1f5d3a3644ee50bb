"""Imported, makes this process receive SIGTERM while it trains batch ``$SIGTERM_AT_BATCH`` of a
run (counted from the first batch it trains)."""
import os
import signal

from colorize.engine import meters

_add, _batches = meters.EpochSums.add, []


def _add_and_signal(self, *args):
    _batches.append(None)
    if len(_batches) == int(os.environ["SIGTERM_AT_BATCH"]):
        os.kill(os.getpid(), signal.SIGTERM)
    _add(self, *args)


meters.EpochSums.add = _add_and_signal
