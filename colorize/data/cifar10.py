"""CIFAR-10 as a data source: the official python archive or its extracted folder, or a
download by torchvision into a cache directory, checksum-verified. The batches are unpickled
by a loader that accepts only numpy arrays and plain data, so no file can run code."""
import contextlib
import os
import pickle
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Iterator, Optional, Tuple

import numpy as np
from tqdm import tqdm

from colorize.core.images import square_resize
from colorize.data.listing import SourceError, SourceListing, SplitItems, path_fingerprint

# A mirror can be named in COLORIZE_CIFAR10_URL; the checksum is always verified.
CIFAR10_URL = os.environ.get("COLORIZE_CIFAR10_URL",
                             "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_MEMBERS = ("batches.meta",) + _CIFAR10_TRAIN + ("test_batch",)


def _square(image: np.ndarray, resolution: int) -> np.ndarray:
    """A square (S, S, 3) uint8 image at ``resolution``."""
    if image.shape[0] == resolution:
        return image
    from PIL import Image

    return square_resize(Image.fromarray(image), resolution)


class _CifarBatchUnpickler(pickle.Unpickler):
    """Loads only what CIFAR-10 python batches hold, numpy arrays and plain data, so that no file
    can run code; ``where`` names the file in the error."""

    _GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def __init__(self, file, where: str):
        super().__init__(file, encoding="latin1")
        self.where = where

    def find_class(self, module: str, name: str):
        if (module, name) not in self._GLOBALS:
            raise SourceError(
                f"{self.where}: not a genuine CIFAR-10 batch (its pickle calls {module}.{name}); "
                f"use the official {CIFAR10_ARCHIVE}, or --data cifar10 to download it"
            )
        return super().find_class(module, name)


class Cifar10Files:
    """The official ``cifar-10-python.tar.gz``, or its extracted ``cifar-10-batches-py/``."""

    kind = "cifar10-python"

    def __init__(self, path: Path):
        self.path = path

    @property
    def fingerprint(self) -> str:
        return path_fingerprint(self.path)

    def _batches(self) -> Iterator[Tuple[str, dict]]:
        if self.path.is_dir():
            folder = self.path / CIFAR10_FOLDER if (self.path / CIFAR10_FOLDER).is_dir() else self.path
            for name in _CIFAR10_MEMBERS:
                with open(folder / name, "rb") as file:
                    yield name, _CifarBatchUnpickler(file, str(folder / name)).load()
            return
        with tarfile.open(self.path, "r:*") as archive:
            for member in archive:
                name = PurePosixPath(member.name).name
                if member.isfile() and name in _CIFAR10_MEMBERS:
                    where = f"{member.name} in {self.path}"
                    yield name, _CifarBatchUnpickler(archive.extractfile(member), where).load()

    @contextlib.contextmanager
    def listed(self, scratch_dir: Optional[Path] = None) -> Iterator[SourceListing]:
        """The 60,000 images (32 x 32, 184 MB) are held in memory; keys index them."""
        batches = {}
        try:
            for name, content in tqdm(self._batches(), desc=f"reading {self.path.name}", total=7):
                batches[name] = content
        except (OSError, EOFError, pickle.UnpicklingError, tarfile.TarError) as error:
            raise SourceError(f"{self.path}: not a readable CIFAR-10 python archive ({error})") from None
        missing = [n for n in _CIFAR10_MEMBERS if n not in batches]
        if missing:
            raise SourceError(f"{self.path}: CIFAR-10 files missing: {', '.join(missing)}")
        order = _CIFAR10_TRAIN + ("test_batch",)
        pixels = np.concatenate([batches[n]["data"] for n in order]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        pixels = np.ascontiguousarray(pixels)
        labels = np.concatenate([batches[n]["labels"] for n in order]).astype(np.int64)
        train = len(labels) - len(batches["test_batch"]["labels"])
        keys = np.arange(len(labels))
        yield SourceListing(
            classes=list(batches["batches.meta"]["label_names"]),
            splits={"train": SplitItems(keys[:train], labels[:train]),
                    "test": SplitItems(keys[train:], labels[train:])},
            image=lambda key, resolution: _square(pixels[key], resolution),
        )


class Cifar10Download(Cifar10Files):
    """CIFAR-10 fetched by torchvision into a cache directory, checksum-verified."""

    kind = "cifar10-download"

    def __init__(self, cache_dir: Path):
        super().__init__(cache_dir / CIFAR10_ARCHIVE)
        self.cache_dir = cache_dir

    @property
    def fingerprint(self) -> str:
        return f"md5:{CIFAR10_MD5}"

    @contextlib.contextmanager
    def listed(self, scratch_dir: Optional[Path] = None) -> Iterator[SourceListing]:
        self.download()
        with super().listed(scratch_dir) as listing:
            yield listing

    def download(self) -> None:
        from torchvision.datasets.utils import check_integrity, download_url

        if check_integrity(str(self.path), CIFAR10_MD5):
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=self.cache_dir, prefix=".download-"))
        try:
            download_url(CIFAR10_URL, str(staging), CIFAR10_ARCHIVE, CIFAR10_MD5)
            if not check_integrity(str(staging / CIFAR10_ARCHIVE), CIFAR10_MD5):
                raise RuntimeError("the downloaded file does not match its MD5 checksum")
            os.replace(staging / CIFAR10_ARCHIVE, self.path)
        except Exception as error:  # network errors come in many types; all end the same way
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise SourceError(
                f"could not download CIFAR-10 from {CIFAR10_URL} ({reason}).\n"
                f"Use a local copy instead: --data path/to/{CIFAR10_ARCHIVE} (or its extracted "
                f"{CIFAR10_FOLDER}/), or an image folder or .tar.gz with train/<class>/ and "
                f"test/<class>/; or place {CIFAR10_ARCHIVE} in {self.cache_dir}."
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def is_cifar10_archive(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts  # none for the member "./"
                if parts:
                    return parts[0] == CIFAR10_FOLDER
            return False
    except (tarfile.TarError, OSError, EOFError) as error:
        raise SourceError(f"{path}: not a readable tar archive ({error})") from None
