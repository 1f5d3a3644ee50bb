"""``colorize prepare``: a data source -> ``train`` / ``val`` / ``test`` FFCV files of LAB images.

The validation split is a class-stratified hold-out from train (used for early stopping); the
test split is the source's own, or a stratified hold-out when the source has none. LAB is
computed in vectorised batches. The train split's ab prior (``prior.py``) is computed from its
written file. Files are written under temporary names and renamed; a second run on unchanged
input with unchanged settings only verifies the files (and adds the prior if it is missing).
"""
import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch
from tqdm import tqdm

from colorize import __version__
from colorize.color import rgb_to_lab
from colorize.config import ConfigError, DataConfig
from colorize.data import manifest as mf
from colorize.data.loaders import build_loaders
from colorize.data.prior import prior_problem, write_prior
from colorize.data.sources import SourceImages, SplitImages, open_source
from colorize.data.threads import keep_torch_threads
from colorize.io import atomic_path, remove_stale_temporaries, sha256_file
from colorize.models.registry import check_resolution

STORAGE_DTYPES = ("float32", "float16")
_LAB_BATCH = 4096


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


def _take(split: SplitImages, indices: np.ndarray) -> SplitImages:
    return SplitImages(split.images[indices], split.labels[indices])


_EMPTY_SPLIT_FIX = {"train": "a smaller --val-fraction and --test-fraction",
                    "val": "a larger --val-fraction", "test": "a larger --test-fraction"}


def _refuse_empty(splits: Dict[str, SplitImages], source: SourceImages) -> None:
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


def make_splits(source: SourceImages, settings: PrepareSettings) -> Dict[str, SplitImages]:
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


def lab_batches(images: np.ndarray, desc: str):
    """(N, R, R, 3) uint8 RGB -> (N, 3, R, R) float32 LAB, computed a batch at a time."""
    out = np.empty((len(images), 3) + images.shape[1:3], dtype=np.float32)
    for start in tqdm(range(0, len(images), _LAB_BATCH), desc=desc, unit=" batches"):
        rgb = torch.from_numpy(images[start : start + _LAB_BATCH]).permute(0, 3, 1, 2)
        out[start : start + _LAB_BATCH] = rgb_to_lab(rgb.float() / 255).numpy()
    return out


class _Samples:
    """The indexed dataset FFCV's writer reads: (lab, label, index) per sample."""

    def __init__(self, lab: np.ndarray, labels: np.ndarray):
        self.lab, self.labels = lab, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.lab[i], int(self.labels[i]), i


def write_beton(path: Path, lab: np.ndarray, labels: np.ndarray, dtype: str) -> None:
    with keep_torch_threads():
        from ffcv.fields import IntField, NDArrayField
        from ffcv.writer import DatasetWriter

    if dtype == "float16":  # FFCV cannot read float16 arrays: store their bits as int16
        lab = lab.astype(np.float16).view(np.int16)
    fields = {"lab": NDArrayField(lab.dtype, lab.shape[1:]), "label": IntField(), "index": IntField()}
    with keep_torch_threads():
        writer = DatasetWriter(str(path), fields, num_workers=min(4, os.cpu_count() or 1))
        writer.from_indexed_dataset(_Samples(lab, labels), chunksize=1000)


def _split_entry(split: SplitImages, path: Path, file_name: str, classes) -> dict:
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
    damaged = mf.problems(out_dir, manifest)
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
        problem = prior_problem(out_dir, existing)
        if not problem:
            print(f"{out_dir} is up to date with {data}")
            return existing
        print(f"{problem}; computing it from the train split")
        return _add_prior(out_dir, existing)

    images = source.read(settings.resolution)
    splits = make_splits(images, settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    with contextlib.ExitStack() as stack:
        for name, split in splits.items():
            lab = lab_batches(split.images, desc=f"LAB {name}")
            staged = stack.enter_context(atomic_path(out_dir / f"{name}.beton"))
            write_beton(staged, lab, split.labels, settings.dtype)
            entries[name] = _split_entry(split, staged, f"{name}.beton", images.classes)
        (out_dir / mf.MANIFEST).unlink(missing_ok=True)  # no manifest while files change
    manifest = {
        "format": 1,
        "colorize_version": __version__,
        "source": {"spec": data, "kind": source.kind, "fingerprint": fingerprint},
        "settings": asdict(settings),
        "resolution": settings.resolution,
        "dtype": settings.dtype,
        "classes": images.classes,
        "splits": entries,
        "skipped": images.skipped,
    }
    mf.write_manifest(out_dir, manifest)
    return _add_prior(out_dir, manifest)


def _add_prior(out_dir: Path, manifest: dict) -> dict:
    """Compute the train split's ab prior from its ``.beton`` and record it in the manifest."""
    train = build_loaders(DataConfig(dir=str(out_dir), batch_size=1024), splits=("train",),
                          train_split_for_training=False)["train"]
    manifest = dict(manifest, prior=write_prior(out_dir, (batch.ab for batch in train)))
    mf.write_manifest(out_dir, manifest)
    return manifest
