"""Where labelled images come from: CIFAR-10 (:mod:`colorize.data.cifar10`) and image folders.

A source is first listed: ``source.listed(scratch_dir)`` yields its classes and, per split, a key
and a label for every image, with no pixels decoded; ``listing.image(key, resolution)`` then
decodes one image at the requested square resolution, in whichever process asks. Archives are
read in place (members by their offset; a compressed archive is first copied, uncompressed, to
a temporary file in ``scratch_dir``). ``open_source(spec)`` picks the reader for a ``--data``
value; the source's ``fingerprint`` changes whenever its content may have changed.
"""
import contextlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import numpy as np
from tqdm import tqdm

from colorize.core.images import IMAGE_SUFFIXES, is_image_name, read_rgb, square_resize
from colorize.data.cifar10 import CIFAR10_ARCHIVE, CIFAR10_FOLDER, Cifar10Download, Cifar10Files, is_cifar10_archive
from colorize.data.listing import SourceError, SourceListing, SplitItems, path_fingerprint
from colorize.io import cache_dir as default_cache_dir
from colorize.io import temporary_path

_SPLIT_FOLDERS = ("train", "test")


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


def _tar_members(path: Path) -> Tuple[List[str], np.ndarray, np.ndarray, List[str]]:
    """Names, data offsets and sizes of the files of a tar archive, none hidden, a hard link read
    as the file it links to; and a line naming each other link, which is skipped."""
    files: Dict[str, Tuple[int, int]] = {}  # name -> (data offset, size)
    links = []
    with tarfile.open(path, "r:") as archive:
        for member in archive:
            if any(p.startswith(".") for p in PurePosixPath(member.name).parts):
                continue
            if member.isfile():
                files[member.name] = member.offset_data, member.size
            elif member.islnk() and member.linkname in files:
                files[member.name] = files[member.linkname]
            elif member.issym() or member.islnk():
                kind = "symbolic" if member.issym() else "hard"
                links.append(f"{member.name}: a {kind} link inside the archive "
                             "(skipped; store the file itself)")
    located = np.array(list(files.values()), dtype=np.int64).reshape(-1, 2)
    return list(files), located[:, 0], located[:, 1], links


def _read_member(path: Path, offset: int, size: int) -> bytes:
    with open(path, "rb") as file:
        file.seek(offset)
        return file.read(size)


class ImageFolder:
    """A tree ``train/<class>/*`` and ``test/<class>/*``, or ``<class>/*`` with no split; as a
    directory or a ``.tar`` / ``.tar.gz`` of one (a single enclosing folder is allowed). An image
    anywhere else in the tree is refused by name; files whose suffix is not an image's, and links
    inside an archive other than hard links to its files, are skipped and named."""

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
            names, offsets, sizes, links = _tar_members(tar)
            yield self._listing(names, lambda key: _read_member(tar, offsets[key], sizes[key]), links)

    def _listing(self, names: List[str], read: Callable[[int], bytes],
                 skipped: Iterable[str] = ()) -> SourceListing:
        """The listing of the files ``names``, whose bytes ``read(key)`` returns by position; the
        files that are not images are named in its ``skipped`` lines, with those given."""
        keys = [key for key, name in enumerate(names) if is_image_name(name)]
        not_images = set(names) - {names[key] for key in keys}
        suffixes = " ".join(IMAGE_SUFFIXES)
        skipped = sorted([*skipped, *(f"{name}: not an image file (its suffix is none of {suffixes})"
                                      for name in not_images)])
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
        tree, has_splits, misfits = _best_reading(paths)
        if misfits:
            layout = "train/<class>/image and test/<class>/image" if has_splits else "<class>/image"
            named = ", ".join(str(paths[i]) for i in misfits[:5]) + (
                f" and {len(misfits) - 5} more" if len(misfits) > 5 else "")
            raise SourceError(
                f"{self.path}: images must sit in class folders, as {layout}, with no other folder or "
                f"image beside them; {len(misfits)} {'image does' if len(misfits) == 1 else 'images do'} "
                f"not fit: {named}. Move or remove them."
            )
        split_of = np.array([p.parts[0] if has_splits else "train" for p in tree])
        class_of = np.array([p.parts[-2] for p in tree])
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


def _reading(paths: List[PurePosixPath], enclosed: bool) -> Tuple[List[PurePosixPath], bool, List[int]]:
    """``paths`` relative to the tree's root (their first folder if ``enclosed``), whether the tree
    is split into train/ and test/, and the positions of the paths that do not fit its layout."""
    tree = [PurePosixPath(*p.parts[1:]) for p in paths] if enclosed else paths
    has_splits = any(p.parts[0] in _SPLIT_FOLDERS for p in tree)
    misfits = [i for i, p in enumerate(tree) if len(p.parts) != (3 if has_splits else 2)
               or has_splits and p.parts[0] not in _SPLIT_FOLDERS]
    return tree, has_splits, misfits


def _best_reading(paths: List[PurePosixPath]) -> Tuple[List[PurePosixPath], bool, List[int]]:
    """The ``_reading`` of ``paths`` with the fewest misfits: as they are, or, when they all share a
    first folder other than train/ or test/, inside that single enclosing folder."""
    tops = {p.parts[0] for p in paths}
    enclosed = len(tops) == 1 and tops.isdisjoint(_SPLIT_FOLDERS) and all(len(p.parts) > 1 for p in paths)
    readings = [_reading(paths, False)] + ([_reading(paths, True)] if enclosed else [])
    return min(readings, key=lambda reading: len(reading[2]))


def open_source(spec: str, cache_dir: Optional[Path] = None):
    """The reader for a ``--data`` value: ``cifar10``, a CIFAR-10 archive or folder, an image
    folder, or a tar archive of one."""
    if spec == "cifar10":
        return Cifar10Download(cache_dir or default_cache_dir())
    path = Path(spec)
    if not path.exists():
        raise SourceError(
            f"--data {spec}: no such file or folder. Give 'cifar10' (downloaded), "
            f"{CIFAR10_ARCHIVE} or {CIFAR10_FOLDER}/, an image folder, or a .tar/.tar.gz of one."
        )
    if path.is_dir():
        if (path / "batches.meta").is_file() or (path / CIFAR10_FOLDER / "batches.meta").is_file():
            return Cifar10Files(path)
        return ImageFolder(path)
    return Cifar10Files(path) if is_cifar10_archive(path) else ImageFolder(path)
