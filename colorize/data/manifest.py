"""``manifest.json`` of a prepared data directory: what was built from what, and checks that
the ``.beton`` files on disk are exactly the ones it describes."""
import json
from pathlib import Path
from typing import List

from colorize.errors import ColorizeError
from colorize.io import atomic_write_text, sha256_file

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


class DataError(ColorizeError):
    """A prepared data directory is missing, incomplete or damaged; the message says what to do."""


def read_manifest(data_dir: Path) -> dict:
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{data_dir} is not a prepared data directory (no {MANIFEST}); "
            f"create it with: colorize prepare --data SOURCE --out {data_dir}"
        )
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is damaged ({error}); run colorize prepare again") from None


def write_manifest(data_dir: Path, manifest: dict) -> None:
    atomic_write_text(Path(data_dir) / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def split_problem(data_dir: Path, manifest: dict, split: str) -> str:
    """Why ``split``'s file does not match the manifest, or '' when it does."""
    entry = manifest["splits"][split]
    return file_problem(Path(data_dir) / entry["file"], entry)


def file_problem(path: Path, entry: dict) -> str:
    """Why the file at ``path`` differs from its manifest ``entry`` (bytes, sha256), or ''."""
    if not path.is_file():
        return f"{path} is missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"{path} is damaged: {size} bytes, the manifest says {entry['bytes']}"
    if sha256_file(path) != entry["sha256"]:
        return f"{path} is damaged: its sha256 differs from the manifest's"
    return ""


def verified_path(data_dir: Path, manifest: dict, split: str) -> Path:
    """The path of ``split``'s ``.beton``, after checking it against the manifest."""
    if split not in manifest["splits"]:
        raise DataError(f"{data_dir} has no {split} split; it has {', '.join(manifest['splits'])}")
    problem = split_problem(data_dir, manifest, split)
    if problem:
        source = manifest["source"]["spec"]
        raise DataError(f"{problem}. Rebuild it with: colorize prepare --data {source} --out {data_dir}")
    return Path(data_dir) / manifest["splits"][split]["file"]


def problems(data_dir: Path, manifest: dict) -> List[str]:
    return [p for p in (split_problem(data_dir, manifest, s) for s in manifest["splits"]) if p]
