"""FFCV sets torch's thread count when it is imported, when a loader is built and at every
epoch; this keeps the process's own setting around those calls."""
import contextlib

import torch


@contextlib.contextmanager
def keep_torch_threads():
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
