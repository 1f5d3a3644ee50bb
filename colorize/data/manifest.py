"""``manifest.json`` of a prepared data directory: what was built from what, and checks that
the ``.beton`` files on disk are exactly the ones it describes."""
import json
from pathlib import Path
from typing import List

from colorize.errors import ColorizeError
from colorize.io import atomic_write_text, read_json_object, sha256_file

MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")


class DataError(ColorizeError):
    """A prepared data directory is missing, incomplete or damaged; the message says what to do."""


def read_manifest(data_dir: Path) -> dict:
    """The manifest of the prepared directory ``data_dir``; DataError when there is none, or when it
    is not JSON or lacks what colorize reads from it."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{data_dir} is not a prepared data directory (no {MANIFEST}); "
            f"create it with: colorize prepare --data SOURCE --out {data_dir}"
        )
    again = "run colorize prepare again"
    try:
        manifest = read_json_object(path)
    except ValueError as error:
        raise DataError(f"{error}; {again}") from None
    problem = _field_problem(manifest, _FIELDS) or _entries_problem(manifest)
    if problem:
        raise DataError(f"{path} is damaged ({problem}); {again}")
    return manifest


# What colorize reads from a manifest, by dotted key, and of which type; the same for each split
# and for the ab prior
_FIELDS = (("source.spec", str), ("settings", dict), ("resolution", int), ("dtype", str), ("classes", list),
           ("splits", dict))
_FILE_FIELDS = (("file", str), ("bytes", int), ("sha256", str))
_SPLIT_FIELDS = (*_FILE_FIELDS, ("count", int), ("per_class", dict))
_TYPE_NAMES = {str: "text", dict: "a mapping", int: "a whole number", list: "a list"}


def _field_problem(tree, fields, prefix: str = "") -> str:
    for key, kind in fields:
        value = tree
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, kind):
            return f"its {prefix}{key} is missing or not {_TYPE_NAMES[kind]}"
    return ""


def _entry_problem(entry, fields, prefix: str) -> str:
    problem = _field_problem(entry, fields, prefix)
    if problem:
        return problem
    name = entry["file"]
    if name in ("", ".", "..") or Path(name).name != name:
        return f"its {prefix}file is {name!r}, not the name of a file in the folder"
    return ""


def _entries_problem(manifest: dict) -> str:
    """What makes the file entries of ``manifest`` other than those colorize writes (each names
    a file in the manifest's folder), or ''."""
    parts = [(entry, _SPLIT_FIELDS, f"splits.{split}.") for split, entry in manifest["splits"].items()]
    if "prior" in manifest:
        parts.append((manifest["prior"], _FILE_FIELDS, "prior."))
    return next(filter(None, (_entry_problem(*part) for part in parts)), "")


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
