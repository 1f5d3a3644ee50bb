"""File helpers: atomic output (write under a temporary name, then rename), the clean-up of
temporary names left by killed processes, and checksums."""
import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterator


def temporary_path(path: Path) -> Path:
    """A temporary name beside ``path`` (its folder created) that belongs to this process:
    :func:`remove_stale_temporaries` removes it once the process is gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` only if the block succeeds."""
    path = Path(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        _remove(temporary)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(directory: Path) -> None:
    """Remove the temporary paths of :func:`atomic_path` in ``directory`` whose process is gone."""
    for path in Path(directory).glob(".*.tmp-*"):
        match = re.fullmatch(r"\..+\.tmp-(\d+)", path.name)
        if match and not _process_exists(int(match.group(1))):
            _remove(path)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


def previous_version(target: Path) -> Path:
    """Where :func:`replace_directory` keeps ``target``'s previous version while it replaces it."""
    return target.with_name(f".{target.name}.old")


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished directory ``source`` to ``target``, replacing any older one. Between the
    two renames, the older one is complete at :func:`previous_version`."""
    old = previous_version(target)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(source, target)
    shutil.rmtree(old, ignore_errors=True)


def staging_path(path: Path) -> Path:
    """Where :func:`staging_directory` builds ``path``'s next version (same in every process)."""
    return Path(path).with_name(f".{Path(path).name}.partial")


def staging_directory(path: Path) -> Path:
    """An empty folder at :func:`staging_path` to build ``path``'s next version in."""
    staging = staging_path(path)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()
