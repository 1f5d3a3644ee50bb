"""Where labelled images come from: CIFAR-10 (downloaded or official files) and image folders.

A source is first listed: ``source.listed(scratch_dir)`` yields its classes and, per split, a key
and a label for every image, with no pixels decoded; ``listing.image(key, resolution)`` then
decodes one image at the requested square resolution, in whichever process asks. Archives are
read in place (members by their offset; a compressed archive is first copied, uncompressed, to
a temporary file in ``scratch_dir``). ``open_source(spec)`` picks the reader for a ``--data``
value; the source's ``fingerprint`` changes whenever its content may have changed.
"""
import contextlib
import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from colorize.errors import ColorizeError
from colorize.images import IMAGE_SUFFIXES, UnreadableImage, read_rgb, square_resize
from colorize.io import sha256_file, temporary_path

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
class SplitItems:
    keys: np.ndarray  # (N,) int64, each image's key for SourceListing.image
    labels: np.ndarray  # (N,) int64


@dataclass
class SourceListing:
    classes: List[str]
    splits: Dict[str, SplitItems]  # "train", and "test" when the source has one
    # (key, resolution) -> (R, R, 3) uint8; raises UnreadableImage naming the file
    image: Callable[[int, int], np.ndarray]
    skipped: List[str] = field(default_factory=list)  # files that are not images, by name


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


def _square(image: np.ndarray, resolution: int) -> np.ndarray:
    """A square (S, S, 3) uint8 image at ``resolution``."""
    if image.shape[0] == resolution:
        return image
    from PIL import Image

    return square_resize(Image.fromarray(image), resolution)


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
                f"{_CIFAR10_FOLDER}/), or an image folder or .tar.gz with train/<class>/ and "
                f"test/<class>/; or place {CIFAR10_ARCHIVE} in {self.cache_dir}."
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# ----------------------------------------------------------------------------- image folders


def _folder_files(root: Path) -> Iterator[str]:
    """Every file under ``root`` not hidden, as a relative POSIX name, in sorted walk order."""
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(d for d in subdirectories if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                yield (Path(directory) / name).relative_to(root).as_posix()


def _is_uncompressed_tar(path: Path) -> bool:
    try:
        with tarfile.open(path, "r:"):
            return True
    except tarfile.ReadError:
        return False


@contextlib.contextmanager
def _plain_tar(path: Path, scratch_dir: Path) -> Iterator[Path]:
    """``path`` if it is an uncompressed tar archive, else a temporary uncompressed copy of it in
    ``scratch_dir`` (removed afterwards), so that members can be read by their offset."""
    if _is_uncompressed_tar(path):
        yield path
        return
    copy = temporary_path(Path(scratch_dir) / f"{path.name}.tar")
    try:
        try:
            with tarfile.open(path, "r:*") as archive, open(copy, "wb") as plain:
                archive.fileobj.seek(0)  # the decompressed stream
                shutil.copyfileobj(archive.fileobj, plain, 1 << 22)
        except (tarfile.TarError, OSError, EOFError) as error:
            raise SourceError(f"{path}: not a readable tar archive ({error})") from None
        yield copy
    finally:
        copy.unlink(missing_ok=True)


def _tar_members(path: Path) -> Tuple[List[str], np.ndarray, np.ndarray]:
    """Names, data offsets and sizes of the regular files of a tar archive, none hidden."""
    names, offsets, sizes = [], [], []
    with tarfile.open(path, "r:") as archive:
        for member in archive:
            if member.isfile() and not any(p.startswith(".") for p in PurePosixPath(member.name).parts):
                names.append(member.name)
                offsets.append(member.offset_data)
                sizes.append(member.size)
    return names, np.array(offsets, dtype=np.int64), np.array(sizes, dtype=np.int64)


def _read_member(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(size)


class ImageFolder:
    """A tree ``train/<class>/*`` and ``test/<class>/*``, or ``<class>/*`` with no split; as a
    directory or a ``.tar`` / ``.tar.gz`` of one (a single enclosing folder is allowed). Files
    whose suffix is not an image's are skipped and named."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = "image-folder-archive" if path.is_file() else "image-folder"

    @property
    def fingerprint(self) -> str:
        return path_fingerprint(self.path)

    @contextlib.contextmanager
    def listed(self, scratch_dir: Optional[Path] = None) -> Iterator[SourceListing]:
        if self.path.is_dir():
            names = list(tqdm(_folder_files(self.path), desc=f"listing {self.path.name}", unit=" files"))
            yield self._listing(names, lambda key: (self.path / names[key]).read_bytes())
            return
        with _plain_tar(self.path, scratch_dir or Path(tempfile.gettempdir())) as tar:
            names, offsets, sizes = _tar_members(tar)
            yield self._listing(names, lambda key: _read_member(tar, offsets[key], sizes[key]))

    def _listing(self, names: List[str], read: Callable[[int], bytes]) -> SourceListing:
        """The listing of the files ``names``, whose bytes ``read(key)`` returns by position."""
        keys = [key for key, name in enumerate(names) if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES]
        skipped = [f"{name}: not an image file (its suffix is none of {' '.join(IMAGE_SUFFIXES)})"
                   for name in sorted(set(names) - {names[key] for key in keys})]
        for line in skipped:
            print(f"skipped {line}")
        if not keys:
            raise SourceError(f"{self.path}: no image files found ({' '.join(IMAGE_SUFFIXES)})")

        def image(key: int, resolution: int) -> np.ndarray:
            return square_resize(read_rgb(read(key), names[key], at_least=resolution), resolution)

        classes, splits = self._organise([PurePosixPath(names[key]) for key in keys], np.array(keys))
        return SourceListing(classes, splits, image, skipped)

    def _organise(self, paths: List[PurePosixPath], keys: np.ndarray) -> Tuple[List[str], Dict[str, SplitItems]]:
        """Classes and splits from the image files' ``paths`` (with their ``keys``)."""
        shallow = [str(p) for p in paths if len(p.parts) < 2]
        if shallow:
            raise SourceError(
                f"{self.path}: images must sit in class folders (<class>/image or "
                f"train/<class>/image); {shallow[0]} does not"
            )
        has_splits = all(len(p.parts) >= 3 and p.parts[-3] in _SPLIT_FOLDERS for p in paths)
        split_of = np.array([p.parts[-3] if has_splits else "train" for p in paths])
        class_of = np.array([p.parts[-2] for p in paths])
        classes = sorted(set(class_of[split_of == "train"]))
        if not classes:
            raise SourceError(f"{self.path}: there is a test/ folder but no train/ folder")
        unknown = sorted(set(class_of) - set(classes))
        if unknown:
            raise SourceError(f"{self.path}: test classes {unknown} have no train/ folder")
        labels = np.searchsorted(classes, class_of).astype(np.int64)
        splits = {split: SplitItems(keys[split_of == split], labels[split_of == split])
                  for split in sorted(set(split_of))}
        return classes, splits


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
