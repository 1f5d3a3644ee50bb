"""The ab-bin prior of a prepared directory's training split (Zhang, Isola and Efros 2016),
computed once by ``colorize prepare`` and stored beside the ``.beton`` files in
``ab_prior.safetensors``, its checksum in the manifest; and the rebalancing weights a loss
derives from it (:func:`rebalancing_weights`)."""
import multiprocessing
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from colorize.core.ab_bins import SIGMA, BinLookup, gamut_bins
from colorize.data import manifest as mf
from colorize.io import atomic_path, sha256_file

PRIOR_FILE = "ab_prior.safetensors"
MIX = 0.5  # lambda: the uniform's default share in the prior that rebalancing weights invert (Zhang et al.)


class AbPrior(NamedTuple):
    centres: torch.Tensor  # (Q, 2) float32, the bins' ab centres
    prior: torch.Tensor  # (Q,) float32, the smoothed share of training pixels in each bin


def smoothed_prior(counts: torch.Tensor, centres: torch.Tensor, sigma: float = SIGMA) -> AbPrior:
    """Pixel counts per bin -> the prior, smoothed by a Gaussian of ``sigma`` ab units over the
    bin centres."""
    empirical = counts.double() / counts.sum()
    distances = torch.cdist(centres.double(), centres.double())
    prior = torch.exp(-distances.square() / (2 * sigma**2)) @ empirical
    return AbPrior(centres.float(), (prior / prior.sum()).float())


def rebalancing_weights(prior: torch.Tensor, mix: float = MIX) -> torch.Tensor:
    """Each bin's weight, proportional to 1 / ((1 - mix) prior + mix / Q) and normalised so that
    its mean under ``prior`` is 1: rare colours weigh more, the less so the larger ``mix``
    (1 weighs every bin alike)."""
    weights = 1 / ((1 - mix) * prior + mix / len(prior))
    return weights / (prior * weights).sum()


def count_bins(ab_batches: Iterable[torch.Tensor], lookup: BinLookup) -> torch.Tensor:
    """Pixels of every ab batch (N, 2, H, W) whose nearest bin is each of ``lookup``'s bins."""
    counts = torch.zeros(lookup.bins, dtype=torch.float64)
    for ab in ab_batches:
        counts += torch.bincount(lookup.nearest_index(ab).flatten(), minlength=len(counts))
    return counts


class SharedBinCounts:
    """Pixels per gamut bin, counted by several processes (shared memory; create it before
    they start) from the ab batches each of them sees."""

    def __init__(self):
        self.lookup = BinLookup(gamut_bins(), 1)
        self._counts = multiprocessing.Array("d", self.lookup.bins)

    def add(self, ab: torch.Tensor) -> None:
        counts = count_bins([ab], self.lookup).numpy()
        with self._counts.get_lock():
            np.frombuffer(self._counts.get_obj())[:] += counts

    def total(self) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(self._counts.get_obj()).copy())


def write_prior(data_dir: Path, counts: torch.Tensor) -> dict:
    """Write the prior of the training split's pixel ``counts`` per gamut bin to ``data_dir``
    and return its manifest entry."""
    centres = gamut_bins()
    prior = smoothed_prior(counts, centres)
    path = Path(data_dir) / PRIOR_FILE
    with atomic_path(path) as staged:
        tensors = {name: tensor.contiguous() for name, tensor in prior._asdict().items()}
        # one metadata key: safetensors writes several in a random order, which would change the checksum
        save_file(tensors, str(staged), metadata={"made_with": f"sigma={SIGMA}"})
        entry = {"file": PRIOR_FILE, "bins": len(centres), "bytes": staged.stat().st_size,
                 "sha256": sha256_file(staged)}
    return entry


def prior_problem(data_dir: Path, manifest: dict) -> str:
    """Why the prior file does not match the manifest, or '' when it does."""
    entry = manifest.get("prior")
    if entry is None:
        return f"the manifest of {data_dir} names no ab prior"
    return mf.file_problem(Path(data_dir) / entry["file"], entry)


def read_prior(data_dir: Path, manifest: dict) -> AbPrior:
    """The prior of the prepared directory ``data_dir``, checked against its manifest."""
    problem = prior_problem(data_dir, manifest)
    if problem:
        raise mf.DataError(f"{problem}. Run colorize prepare --data {manifest['source']['spec']} "
                           f"--out {data_dir} again: it rebuilds the prepared files")
    path = Path(data_dir) / manifest["prior"]["file"]
    try:
        tensors = load_file(str(path))
        return AbPrior(tensors["centres"], tensors["prior"])
    except (SafetensorError, KeyError) as error:
        raise mf.DataError(f"{path} is damaged ({error}); run colorize prepare again") from None
