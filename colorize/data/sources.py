"""Where labelled images come from: CIFAR-10 (downloaded or official files) and image folders.

Every source is read in place (archives are streamed, never unpacked to disk) into uint8 arrays
at the requested square resolution. ``open_source(spec)`` picks the reader for a ``--data``
value; the source's ``fingerprint`` changes whenever its content may have changed.
"""
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from colorize.errors import ColorizeError
from colorize.io import sha256_file
from colorize.images import UnreadableImage, read_rgb, square_resize

# A mirror can be named in COLORIZE_CIFAR10_URL; the checksum is always verified.
CIFAR10_URL = os.environ.get("COLORIZE_CIFAR10_URL",
                             "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR10_FOLDER = "cifar-10-batches-py"
_CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR10_MEMBERS = ("batches.meta",) + _CIFAR10_TRAIN + ("test_batch",)
_SPLIT_FOLDERS = ("train", "test")


class SourceError(ColorizeError):
    """The data source is missing, unreachable or malformed; the message says what to do."""


@dataclass
class SplitImages:
    images: np.ndarray  # (N, R, R, 3) uint8
    labels: np.ndarray  # (N,) int64


@dataclass
class SourceImages:
    classes: List[str]
    splits: Dict[str, SplitImages]  # "train", and "test" when the source has one
    skipped: List[str] = field(default_factory=list)  # unreadable files, by name


def default_cache_dir() -> Path:
    return Path(os.environ.get("COLORIZE_CACHE", Path.home() / ".cache" / "colorize"))


def path_fingerprint(path: Path) -> str:
    """A file's sha256; for a folder, a hash of every file's path, size and modification time."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- CIFAR-10 files


def _resize_all(images: np.ndarray, resolution: int) -> np.ndarray:
    if images.shape[1] == resolution:
        return images
    from PIL import Image

    return np.stack([square_resize(Image.fromarray(image), resolution) for image in images])


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
            folder = self.path / _CIFAR10_FOLDER if (self.path / _CIFAR10_FOLDER).is_dir() else self.path
            for name in _CIFAR10_MEMBERS:
                with open(folder / name, "rb") as file:
                    yield name, pickle.load(file, encoding="latin1")
            return
        with tarfile.open(self.path, "r:*") as archive:
            for member in archive:
                name = PurePosixPath(member.name).name
                if member.isfile() and name in _CIFAR10_MEMBERS:
                    yield name, pickle.load(archive.extractfile(member), encoding="latin1")

    def read(self, resolution: int) -> SourceImages:
        batches = {}
        try:
            for name, content in tqdm(self._batches(), desc=f"reading {self.path.name}", total=7):
                batches[name] = content
        except (OSError, EOFError, pickle.UnpicklingError, tarfile.TarError) as error:
            raise SourceError(f"{self.path}: not a readable CIFAR-10 python archive ({error})") from None
        missing = [n for n in _CIFAR10_MEMBERS if n not in batches]
        if missing:
            raise SourceError(f"{self.path}: CIFAR-10 files missing: {', '.join(missing)}")

        def split(names) -> SplitImages:
            data = np.concatenate([batches[n]["data"] for n in names])
            images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            labels = np.concatenate([batches[n]["labels"] for n in names]).astype(np.int64)
            return SplitImages(_resize_all(np.ascontiguousarray(images), resolution), labels)

        return SourceImages(
            classes=list(batches["batches.meta"]["label_names"]),
            splits={"train": split(_CIFAR10_TRAIN), "test": split(("test_batch",))},
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

    def read(self, resolution: int) -> SourceImages:
        self.download()
        return super().read(resolution)

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
                f"{_CIFAR10_FOLDER}/), or an image folder or .tar.gz with train/<class>/ and "
                f"test/<class>/; or place {CIFAR10_ARCHIVE} in {self.cache_dir}."
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------- image folders


def _image_files(root: Path) -> Iterator[Tuple[str, bytes]]:
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                path = Path(directory) / name
                yield path.relative_to(root).as_posix(), path.read_bytes()


def _archive_files(path: Path) -> Iterator[Tuple[str, bytes]]:
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts
                if member.isfile() and not any(p.startswith(".") for p in parts):
                    yield member.name, archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as error:
        raise SourceError(f"{path}: not a readable tar archive ({error})") from None


class ImageFolder:
    """A tree ``train/<class>/*`` and ``test/<class>/*``, or ``<class>/*`` with no split; as a
    directory or a ``.tar`` / ``.tar.gz`` of one (a single enclosing folder is allowed)."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = "image-folder-archive" if path.is_file() else "image-folder"

    @property
    def fingerprint(self) -> str:
        return path_fingerprint(self.path)

    def read(self, resolution: int) -> SourceImages:
        files = _archive_files(self.path) if self.path.is_file() else _image_files(self.path)
        decoded: List[Tuple[PurePosixPath, np.ndarray]] = []
        skipped = []
        for name, content in tqdm(files, desc=f"decoding {self.path.name}", unit=" images"):
            try:
                decoded.append((PurePosixPath(name), square_resize(read_rgb(content, name), resolution)))
            except UnreadableImage as error:
                skipped.append(str(error))
        for line in skipped:
            print(f"skipped {self.path}/{line}")
        if not decoded:
            raise SourceError(f"{self.path}: no readable images found")
        return self._organise(decoded, skipped)

    def _organise(self, decoded, skipped) -> SourceImages:
        shallow = [str(p) for p, _ in decoded if len(p.parts) < 2]
        if shallow:
            raise SourceError(
                f"{self.path}: images must sit in class folders (<class>/image or "
                f"train/<class>/image); {shallow[0]} does not"
            )
        has_splits = all(len(p.parts) >= 3 and p.parts[-3] in _SPLIT_FOLDERS for p, _ in decoded)
        split_of = (lambda p: p.parts[-3]) if has_splits else (lambda p: "train")
        classes = sorted({p.parts[-2] for p, _ in decoded if split_of(p) == "train"})
        if not classes:
            raise SourceError(f"{self.path}: there is a test/ folder but no train/ folder")
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({p.parts[-2] for p, _ in decoded} - set(classes))
        if unknown:
            raise SourceError(f"{self.path}: test classes {unknown} have no train/ folder")
        splits = {}
        for split in sorted({split_of(p) for p, _ in decoded}):
            chosen = [(p, image) for p, image in decoded if split_of(p) == split]
            splits[split] = SplitImages(
                images=np.stack([image for _, image in chosen]),
                labels=np.array([index[p.parts[-2]] for p, _ in chosen], dtype=np.int64),
            )
        return SourceImages(classes=classes, splits=splits, skipped=skipped)


def _is_cifar10_archive(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:*") as archive:
            for member in archive:
                parts = PurePosixPath(member.name).parts  # none for the member "./"
                if parts:
                    return parts[0] == _CIFAR10_FOLDER
            return False
    except (tarfile.TarError, OSError, EOFError) as error:
        raise SourceError(f"{path}: not a readable tar archive ({error})") from None


def open_source(spec: str, cache_dir: Optional[Path] = None):
    """The reader for a ``--data`` value: ``cifar10``, a CIFAR-10 archive or folder, an image
    folder, or a tar archive of one."""
    if spec == "cifar10":
        return Cifar10Download(cache_dir or default_cache_dir())
    path = Path(spec)
    if not path.exists():
        raise SourceError(
            f"--data {spec}: no such file or folder. Give 'cifar10' (downloaded), "
            f"{CIFAR10_ARCHIVE} or {_CIFAR10_FOLDER}/, an image folder, or a .tar/.tar.gz of one."
        )
    if path.is_dir():
        if (path / "batches.meta").is_file() or (path / _CIFAR10_FOLDER / "batches.meta").is_file():
            return Cifar10Files(path)
        return ImageFolder(path)
    return Cifar10Files(path) if _is_cifar10_archive(path) else ImageFolder(path)
