"""What a data source yields when listed: its classes and, per split, a key and a label for
every image, and how to decode one image; and the errors of sources."""
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from colorize.errors import ColorizeError
from colorize.io import sha256_file


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


def path_fingerprint(path: Path) -> str:
    """A file's sha256; for a folder, a hash of every file's path, size and modification time."""
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        stat = file.stat()
        digest.update(f"{file.relative_to(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
