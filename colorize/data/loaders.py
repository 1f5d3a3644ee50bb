"""Loaders of prepared splits: batches of (L, ab, label) on the training device.

Two interchangeable kinds, chosen by ``data.loader`` (``auto``: :func:`loader_kind`):

- ``ffcv``: FFCV reads the ``.beton`` file (random order for train, sequential for eval,
  ``distributed=True`` under several processes);
- ``memory``: the whole split lives as one tensor on the device; a batch is one indexing op.

Both visit samples in exactly FFCV's order (a seeded permutation per epoch, or PyTorch's
``DistributedSampler`` rule under several processes), so they yield the same batches. Each
batch says which samples are the duplicates that distributed sampling pads with, so metrics
can count every sample exactly once.
"""
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from colorize.data import manifest as mf
from colorize.data.augment import Augmentation
from colorize.data.staging import PinnedStaging
from colorize.data.threads import keep_torch_threads
from colorize.errors import ConfigError
from colorize.settings import LOADERS, DataConfig


@dataclass
class Batch:
    l: torch.Tensor  # (B, 1, R, R) float32, L in [0, 100]
    ab: torch.Tensor  # (B, 2, R, R) float32, ab units
    label: torch.Tensor  # (B,) int64
    index: torch.Tensor  # (B,) int64, each sample's position in its split
    valid: torch.Tensor  # (B,) bool, False for padding duplicates of distributed sampling


@dataclass(frozen=True)
class LoaderSpec:
    """Everything one process's loader of one split needs to know."""

    path: Path
    count: int  # samples in the split (after any limit)
    batch_size: int  # per process
    train: bool  # random order, augmentation, drop the last partial batch
    storage_dtype: str
    seed: int = 0
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    hflip: bool = True
    shift: int = 0
    num_workers: int = 1
    os_cache: bool = True


def epoch_order(count: int, epoch: int, shuffle: bool, seed: int, rank: int, world: int) -> np.ndarray:
    """Positions this process visits in ``epoch``, in order: FFCV's own rule."""
    if world == 1:
        return np.random.default_rng(seed + epoch).permutation(count) if shuffle else np.arange(count)
    sampler = DistributedSampler(range(count), world, rank, shuffle=shuffle, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    return np.fromiter(sampler, dtype=np.int64, count=len(sampler))


def decode_lab(lab: torch.Tensor, storage_dtype: str) -> torch.Tensor:
    """Stored LAB values (float16 is stored as its int16 bit patterns) -> float32."""
    if storage_dtype == "float16":
        lab = lab.view(torch.float16)
    return lab.float()


class SplitLoader:
    """Batches of one split for this process. ``set_epoch`` before iterating, as with
    ``DistributedSampler`` (it can also start the epoch at a later batch); the last partial
    batch is dropped for training only.

    A batch is valid until the next one is requested (FFCV reuses its buffers): clone what
    you keep."""

    def __init__(self, spec: LoaderSpec):
        self.spec = spec
        self.epoch = 0
        self.first_batch = 0
        per_process = math.ceil(spec.count / spec.world)
        self._batches = (per_process // spec.batch_size if spec.train
                         else math.ceil(per_process / spec.batch_size))
        if not self._batches:
            raise ConfigError(f"data.batch_size: a batch of {spec.batch_size} images per process is more than the "
                              f"{per_process} training images each of {spec.world} process(es) gets from "
                              f"{spec.path}, so an epoch would have no batch; pick a smaller data.batch_size")
        self._real = len(range(spec.rank, spec.count, spec.world))  # the rest is padding

    def __len__(self) -> int:
        return self._batches

    @property
    def num_samples(self) -> int:
        """Real samples of the split, over all processes."""
        return self.spec.count

    def set_epoch(self, epoch: int, first_batch: int = 0) -> None:
        """Iterate ``epoch``'s batches next, from batch ``first_batch`` (counted from 0) on: the
        same batches, augmented the same way, as the whole epoch's from there."""
        self.epoch, self.first_batch = epoch, first_batch

    def _visited(self, order: np.ndarray) -> np.ndarray:
        """The positions of the epoch's ``order`` that the iteration yields: its batches from
        ``first_batch`` on (whole ones only, for training)."""
        size = self.spec.batch_size
        return order[self.first_batch * size:len(self) * size]

    def _raw_batches(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(lab in storage dtype, label, index) batches, in this epoch's order."""
        raise NotImplementedError

    def _on_device(self, tensors: Tuple[torch.Tensor, ...]) -> Tuple[torch.Tensor, ...]:
        """A raw batch on the training device (where the in-memory loader's already are)."""
        return tensors

    def __iter__(self) -> Iterator[Batch]:
        spec = self.spec
        augment = (Augmentation(spec.hflip, spec.shift, spec.seed, self.epoch, spec.rank, spec.device)
                   if spec.train else None)
        if augment is not None:
            augment.skip(self.first_batch, spec.batch_size)
        start = self.first_batch * spec.batch_size
        for raw in self._raw_batches():
            lab, label, index = self._on_device(raw)
            lab = decode_lab(lab, spec.storage_dtype)
            if augment is not None:
                lab = augment(lab)
            positions = torch.arange(start, start + len(lab), device=spec.device)
            start += len(lab)
            yield Batch(
                l=lab[:, :1],
                ab=lab[:, 1:],
                label=label.view(-1),
                index=index.view(-1),
                valid=positions < self._real,
            )


def _ffcv_loader(spec: LoaderSpec):
    """FFCV's loader of the split: random order and whole batches for training, sequential and
    complete otherwise."""
    with keep_torch_threads():
        import ffcv.fields.basics
        import ffcv.fields.ndarray
        import ffcv.loader
        import ffcv.transforms

        return ffcv.loader.Loader(
            str(spec.path),
            batch_size=spec.batch_size,
            num_workers=spec.num_workers,
            os_cache=spec.os_cache,
            order=ffcv.loader.OrderOption.RANDOM if spec.train else ffcv.loader.OrderOption.SEQUENTIAL,
            distributed=spec.world > 1,
            seed=spec.seed,
            indices=np.arange(spec.count),
            drop_last=spec.train,
            pipelines={
                "lab": [ffcv.fields.ndarray.NDArrayDecoder(), ffcv.transforms.ToTensor()],
                "label": [ffcv.fields.basics.IntDecoder(), ffcv.transforms.ToTensor()],
                "index": [ffcv.fields.basics.IntDecoder(), ffcv.transforms.ToTensor()],
            },
        )


class FfcvLoader(SplitLoader):
    """Reads the split's ``.beton`` file with FFCV, batch by batch: the positions of FFCV's own
    order of the epoch (as ``ffcv.loader.Loader`` iterates them) that the iteration visits.
    On a GPU, batches go to it through pinned buffers (:class:`PinnedStaging`): FFCV refills
    its own buffers as soon as the next batch is asked for."""

    def __init__(self, spec: LoaderSpec):
        super().__init__(spec)
        self.loader = _ffcv_loader(spec)
        self.staging = PinnedStaging(spec.device) if spec.device.type == "cuda" else None

    def _raw_batches(self):
        from ffcv.loader.epoch_iterator import EpochIterator

        order = self._visited(self.loader.traversal_order.sample_order(self.epoch))
        with keep_torch_threads():
            return EpochIterator(self.loader, order)

    def _on_device(self, tensors):
        return tensors if self.staging is None else self.staging(tensors)


class TensorLoader(SplitLoader):
    """A split held as tensors on the device (LAB in storage dtype, labels); batches are index
    operations."""

    def __init__(self, spec: LoaderSpec, lab: torch.Tensor, labels: torch.Tensor):
        super().__init__(spec)
        self.lab, self.labels = lab, labels

    def _raw_batches(self):
        spec = self.spec
        order = epoch_order(spec.count, self.epoch, spec.train, spec.seed, spec.rank, spec.world)
        order = torch.from_numpy(self._visited(order)).to(spec.device)
        for indices in order.split(spec.batch_size):
            yield self.lab[indices], self.labels[indices], indices


def free_memory(device: torch.device) -> int:
    """Bytes free on ``device``: the GPU's free memory, or the host's available memory."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    import psutil

    return psutil.virtual_memory().available


def check_split_fits(spec: LoaderSpec, sample_bytes: int) -> None:
    """Raise ConfigError when ``spec``'s split would not fit in its device's free memory."""
    needed, free = spec.count * sample_bytes, free_memory(spec.device)
    if needed > free:
        raise ConfigError(
            f"data.loader=memory would hold {spec.path.name} ({spec.count:,} images, {needed / 2**20:,.1f} MiB) "
            f"on {spec.device}, which has {free / 2**20:,.1f} MiB free; use data.loader=ffcv, which reads "
            f"batches from the file as training needs them")


def read_split(spec: LoaderSpec) -> Tuple[np.ndarray, np.ndarray]:
    """The first ``spec.count`` samples of the split's ``.beton`` file: LAB in its storage dtype
    and the labels, read with FFCV's file reader (a loader would compile its pipeline first)."""
    with keep_torch_threads():
        from ffcv.reader import Reader

    reader = Reader(str(spec.path))
    metadata = reader.metadata[:spec.count]
    columns = dict(zip(reader.field_names, metadata.dtype.names))
    lab_field = reader.handlers["lab"]
    size = int(lab_field.element_size)
    check_split_fits(spec, size + np.dtype(np.int64).itemsize)
    file = np.memmap(spec.path, np.uint8, mode="r")
    lab = np.empty((spec.count, size), np.uint8)
    for sample, pointer in zip(lab, metadata[columns["lab"]].tolist()):  # where each sample's bytes start
        sample[:] = file[pointer:pointer + size]
    return lab.view(lab_field.dtype).reshape(spec.count, *lab_field.shape), metadata[columns["label"]].astype(np.int64)


class MemoryLoader(TensorLoader):
    """Reads the split's ``.beton`` file once into tensors on the device, if they fit."""

    def __init__(self, spec: LoaderSpec):
        lab, labels = read_split(spec)
        super().__init__(spec, torch.from_numpy(lab).to(spec.device), torch.from_numpy(labels).to(spec.device))


LOADER_CLASSES = dict(zip(LOADERS, (FfcvLoader, MemoryLoader)))
AUTO_MEMORY_SHARE = 0.5  # data.loader=auto holds a split in memory if it takes at most this share of what is free


def _split_bytes(manifest: dict, count: int) -> int:
    """Bytes a split of ``count`` samples takes in memory: LAB in its storage dtype, and labels."""
    lab = 3 * manifest["resolution"] ** 2 * np.dtype(manifest["dtype"]).itemsize
    return count * (lab + np.dtype(np.int64).itemsize)


def loader_kind(requested: str, device: torch.device, manifest: dict, count: int) -> str:
    """``data.loader`` for a split of ``count`` samples: ``auto`` is the in-memory loader where
    the split fits in its share of the device's free memory (on the host, shared by this machine's
    processes), as it is the fastest on GPUs and CPUs alike (``colorize bench loader``), and FFCV
    otherwise."""
    if requested != "auto":
        return requested
    free = free_memory(device)
    if device.type == "cpu":
        free //= int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return "memory" if _split_bytes(manifest, count) <= AUTO_MEMORY_SHARE * free else "ffcv"


def per_process_batch_size(data: DataConfig, world: int) -> int:
    if data.batch_size_scope == "process":
        return data.batch_size
    if data.batch_size % world:
        raise ConfigError(
            f"data.batch_size={data.batch_size} is global (data.batch_size_scope=global) but does "
            f"not divide by the {world} processes; pick a multiple of {world}"
        )
    return data.batch_size // world


def build_loaders(data: DataConfig, *, seed: int = 0, rank: int = 0, world: int = 1,
                  device: torch.device = torch.device("cpu"), splits: Sequence[str] = mf.SPLITS,
                  train_split_for_training: bool = True) -> Dict[str, SplitLoader]:
    """One loader per split of the prepared directory ``data.dir``, checked against its manifest.
    The train split is read for training (random order, augmentation, no partial batch) unless
    ``train_split_for_training`` is False; the others are read in order, completely.

    Under several processes, call this after the process group exists (create the Accelerator).
    """
    data_dir = Path(data.dir)
    manifest = mf.read_manifest(data_dir)
    if data.shift >= manifest["resolution"]:
        raise ConfigError(f"data.shift={data.shift} moves the {manifest['resolution']}-pixel images of "
                          f"{data_dir} by more than their size; pick a shift below {manifest['resolution']}")
    loaders = {}
    for split in splits:
        path = mf.verified_path(data_dir, manifest, split)
        count = manifest["splits"][split]["count"]
        limit = data.train_limit if split == "train" else data.eval_limit
        spec = LoaderSpec(
            path=path,
            count=min(count, limit or count),
            batch_size=per_process_batch_size(data, world),
            train=split == "train" and train_split_for_training,
            storage_dtype=manifest["dtype"],
            seed=seed,
            rank=rank,
            world=world,
            device=device,
            hflip=data.hflip,
            shift=data.shift,
            num_workers=data.num_workers,
            os_cache=data.os_cache,
        )
        loaders[split] = LOADER_CLASSES[loader_kind(data.loader, device, manifest, spec.count)](spec)
    return loaders
