"""``colorize prepare``: a data source -> ``train`` / ``val`` / ``test`` FFCV files of LAB images.

The source is listed first (keys and labels, no pixels). The validation split is a
class-stratified hold-out from train (used for early stopping); the test split is the
source's own, or a stratified hold-out when the source has none. FFCV's writer processes then
decode, resize and convert the images to LAB a block at a time and write them, so memory does
not grow with the number of images. An image that cannot be decoded is named in the manifest
and its split written again without it. The train split's ab prior (``prior.py``) is counted
while its images are written. Files are written under temporary names and renamed; a second
run on unchanged input with unchanged settings only verifies the files.
"""
import contextlib
import functools
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional

import numpy as np
import torch

from colorize import __version__
from colorize.core.color import rgb8_to_lab
from colorize.core.images import DECODING_VERSION, UnreadableImage
from colorize.data import manifest as mf
from colorize.data.listing import SourceError, SourceListing, SplitItems
from colorize.data.prior import SharedBinCounts, prior_problem, write_prior
from colorize.data.sources import open_source
from colorize.data.threads import keep_torch_threads
from colorize.errors import ConfigError
from colorize.io import atomic_path, remove_stale_temporaries, removed_if_left_empty, sha256_file, temporary_path
from colorize.models.factory import check_resolution

STORAGE_DTYPES = ("float32", "float16")
# the array type each storage dtype is written as: FFCV cannot read float16, so its bits go as int16
_WRITTEN_AS = {"float32": np.float32, "float16": np.int16}
_BLOCK = 64  # images a writer process decodes and converts to LAB together
_CHUNK = 8 * _BLOCK  # images a writer process takes from FFCV's queue at a time


@dataclass(frozen=True)
class PrepareSettings:
    resolution: int = 32
    val_fraction: float = 0.1
    test_fraction: float = 0.1  # only for sources without a test split
    seed: int = 0
    dtype: str = "float32"  # storage dtype of LAB values

    def check(self) -> None:
        if self.resolution < 8:
            raise ConfigError(f"--resolution must be at least 8, got {self.resolution}")
        check_resolution(self.resolution)
        for name in ("val_fraction", "test_fraction"):
            if not 0 < getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be between 0 and 1")
        if self.dtype not in STORAGE_DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(STORAGE_DTYPES)}")


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int):
    """Indices (kept, held out): ``fraction`` of every class, rounded, chosen at random."""
    rng = np.random.default_rng(seed)
    held = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held.append(members[: int(round(len(members) * fraction))])
    held = np.sort(np.concatenate(held))
    return np.setdiff1d(np.arange(len(labels)), held), held


def _take(split: SplitItems, indices: np.ndarray) -> SplitItems:
    return SplitItems(split.keys[indices], split.labels[indices])


_EMPTY_SPLIT_FIX = {"train": "a smaller --val-fraction and --test-fraction",
                    "val": "a larger --val-fraction", "test": "a larger --test-fraction"}


def _refuse_empty(splits: Dict[str, SplitItems], source: SourceListing) -> None:
    """Raise ConfigError naming the splits that would be empty, and what to change."""
    empty = [name for name, split in splits.items() if len(split.labels) == 0]
    if empty:
        counts = np.bincount(source.splits["train"].labels, minlength=len(source.classes))
        per_class = ", ".join(f"{name} {count}" for name, count in zip(source.classes, counts))
        raise ConfigError(
            f"the {' and '.join(empty)} split{'s' if len(empty) > 1 else ''} would be empty (images "
            f"per class to split: {per_class}); each split takes a rounded fraction of every class: "
            f"add images to every class, or use {' and '.join(_EMPTY_SPLIT_FIX[n] for n in empty)}"
        )


def make_splits(source: SourceListing, settings: PrepareSettings) -> Dict[str, SplitItems]:
    """train / val / test, each in a seeded random order; ConfigError if one would be empty."""
    train = source.splits["train"]
    test = source.splits.get("test")
    if test is None:
        kept, held = stratified_holdout(train.labels, settings.test_fraction, settings.seed + 1)
        train, test = _take(train, kept), _take(train, held)
    kept, held = stratified_holdout(train.labels, settings.val_fraction, settings.seed)
    splits = {"train": _take(train, kept), "val": _take(train, held), "test": test}
    _refuse_empty(splits, source)
    rng = np.random.default_rng(settings.seed)
    return {name: _take(s, rng.permutation(len(s.labels))) for name, s in splits.items()}


class _LabSamples:
    """The indexed dataset FFCV's writer reads in its processes: (lab, label, position) of each
    image of a split, decoded and converted to LAB a block of ``_BLOCK`` positions at a time.
    An unreadable image gives zeros, and its key and reason are appended to ``failures``. With
    ``bin_counts``, the pixels of each ab bin are counted as they are written."""

    def __init__(self, listing: SourceListing, split: SplitItems, settings: PrepareSettings, failures: Path,
                 bin_counts: Optional[SharedBinCounts]):
        self.listing, self.split, self.resolution, self.dtype = listing, split, settings.resolution, settings.dtype
        self.failures, self.bin_counts = failures, bin_counts
        self._block, self._lab = -1, None

    def __len__(self):
        return len(self.split.labels)

    def __getitem__(self, position):
        block = position // _BLOCK
        if block != self._block:
            self._lab, self._block = self._convert(block), block
        return self._lab[position % _BLOCK], int(self.split.labels[position]), position

    def _convert(self, block: int) -> np.ndarray:
        """LAB (n, 3, R, R) of the block's images, in the storage dtype, written as ``_WRITTEN_AS``."""
        torch.set_num_threads(1)  # one thread per writer process
        keys = self.split.keys[block * _BLOCK : (block + 1) * _BLOCK]
        rgb = np.zeros((len(keys), self.resolution, self.resolution, 3), dtype=np.uint8)
        for i, key in enumerate(keys):
            try:
                rgb[i] = self.listing.image(key, self.resolution)
            except UnreadableImage as error:
                with open(self.failures, "a") as log:
                    log.write(f"{key}\t{error}\n")
        lab = rgb8_to_lab(torch.from_numpy(rgb).permute(0, 3, 1, 2)).numpy().astype(self.dtype)
        if self.bin_counts is not None:
            self.bin_counts.add(torch.from_numpy(lab[:, 1:]).float())  # the values as stored
        return lab.view(_WRITTEN_AS[self.dtype])


@contextlib.contextmanager
def _named_progress(writer_module, desc: str):
    """FFCV's writer shows a bare progress bar: give it a name and count images."""
    bare = writer_module.tqdm
    writer_module.tqdm = functools.partial(bare, desc=desc, unit=" images")
    try:
        yield
    finally:
        writer_module.tqdm = bare


def _write_once(path: Path, samples: _LabSamples, name: str) -> None:
    with keep_torch_threads():
        import ffcv.writer
        from ffcv.fields import IntField, NDArrayField

    lab_dtype = np.dtype(_WRITTEN_AS[samples.dtype])
    shape = (3, samples.resolution, samples.resolution)
    fields = {"lab": NDArrayField(lab_dtype, shape), "label": IntField(), "index": IntField()}
    with keep_torch_threads(), _named_progress(ffcv.writer, f"{name}: decode, LAB, write"):
        writer = ffcv.writer.DatasetWriter(str(path), fields, num_workers=min(4, os.cpu_count() or 1))
        writer.from_indexed_dataset(samples, chunksize=_CHUNK)


class WrittenSplit(NamedTuple):
    items: SplitItems  # the images written
    skipped: List[str]  # why each image left out could not be decoded
    bin_counts: Optional[torch.Tensor]  # the pixels written in each gamut bin, when asked for


def write_split(path: Path, listing: SourceListing, split: SplitItems, name: str, settings: PrepareSettings,
                count_bins: bool = False) -> WrittenSplit:
    """Write ``split`` to the ``.beton`` file ``path``, counting the pixels in each gamut bin
    if ``count_bins``."""
    failures = temporary_path(path.with_name(f"{name}-unreadable.txt"))
    skipped = []
    try:
        while True:
            failures.unlink(missing_ok=True)
            counter = SharedBinCounts() if count_bins else None
            _write_once(path, _LabSamples(listing, split, settings, failures, counter), name)
            if not failures.exists():
                return WrittenSplit(split, skipped, None if counter is None else counter.total())
            lines = [line.split("\t", 1) for line in failures.read_text().splitlines()]
            skipped += [reason for _, reason in lines]
            for _, reason in lines:
                print(f"skipped {reason}")
            split = _take(split, ~np.isin(split.keys, [int(key) for key, _ in lines]))
            if not len(split.labels):
                raise SourceError(f"no image of the {name} split could be decoded: {skipped[0]}")
    finally:
        failures.unlink(missing_ok=True)


def _split_entry(split: SplitItems, path: Path, file_name: str, classes) -> dict:
    counts = np.bincount(split.labels, minlength=len(classes))
    return {
        "file": file_name,
        "count": int(len(split.labels)),
        "per_class": {name: int(n) for name, n in zip(classes, counts)},
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
    }


def _up_to_date(out_dir: Path, fingerprint: str, settings: PrepareSettings) -> Optional[dict]:
    """The existing manifest if the directory already holds exactly this preparation."""
    try:
        manifest = mf.read_manifest(out_dir)
    except mf.DataError:
        return None
    same = (
        manifest.get("settings") == asdict(settings)
        and manifest.get("source", {}).get("fingerprint") == fingerprint
    )
    if not same:
        print(f"{out_dir}: the source or settings changed since the last prepare; rebuilding")
        return None
    if manifest.get("decoding") != DECODING_VERSION:
        print(f"{out_dir} was prepared by a colorize that reads images differently; rebuilding")
        return None
    damaged = [*mf.problems(out_dir, manifest), prior_problem(out_dir, manifest)]
    damaged = [problem for problem in damaged if problem]
    for problem in damaged:
        print(f"{problem}; rebuilding")
    return None if damaged else manifest


def prepare(data: str, out_dir: Path, settings: PrepareSettings = PrepareSettings(),
            cache_dir: Optional[Path] = None) -> dict:
    """Build (or verify) the prepared directory ``out_dir`` from ``data``; returns the manifest."""
    settings.check()
    out_dir = Path(out_dir)
    remove_stale_temporaries(out_dir)  # left by a prepare that was killed
    source = open_source(data, cache_dir)
    fingerprint = source.fingerprint
    existing = _up_to_date(out_dir, fingerprint, settings)
    if existing is not None:
        print(f"{out_dir} is up to date with {data}")
        return existing

    # a compressed archive is copied into out_dir first: a failure leaves no empty folder behind
    with removed_if_left_empty(out_dir), source.listed(scratch_dir=out_dir) as listing:
        splits = make_splits(listing, settings)
        entries, skipped = {}, list(listing.skipped)
        with contextlib.ExitStack() as stack:
            for name, split in splits.items():
                staged = stack.enter_context(atomic_path(out_dir / f"{name}.beton"))
                written = write_split(staged, listing, split, name, settings, count_bins=name == "train")
                entries[name] = _split_entry(written.items, staged, f"{name}.beton", listing.classes)
                skipped += written.skipped
                if name == "train":
                    train_bin_counts = written.bin_counts
            (out_dir / mf.MANIFEST).unlink(missing_ok=True)  # no manifest while files change
    manifest = {
        "format": 1,
        "colorize_version": __version__,
        "decoding": DECODING_VERSION,
        "source": {"spec": data, "kind": source.kind, "fingerprint": fingerprint},
        "settings": asdict(settings),
        "resolution": settings.resolution,
        "dtype": settings.dtype,
        "classes": listing.classes,
        "splits": entries,
        "skipped": skipped,
    }
    return _record_prior(out_dir, manifest, train_bin_counts)


def _record_prior(out_dir: Path, manifest: dict, bin_counts: torch.Tensor) -> dict:
    manifest = dict(manifest, prior=write_prior(out_dir, bin_counts))
    mf.write_manifest(out_dir, manifest)
    return manifest
