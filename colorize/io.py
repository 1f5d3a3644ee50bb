"""File helpers: durable atomic output (write under a temporary name, flush it to the disk,
then rename), the clean-up of temporary names left by killed processes, checksums (remembered
across processes in the cache folder), and the reading of JSON files that must hold an object.

Every rename here is preceded by an fsync of what is renamed and followed by an fsync of the
folder that holds it, so that after a power loss a name points either to the old content or to
the complete new one. What is renamed into place has the permissions of an ordinary new file,
whichever library wrote it (safetensors writes files that only their owner can read)."""
import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import time
from pathlib import Path
from typing import Dict, Iterator

_TEMPORARY_NAME = re.compile(r"\.(?P<name>.+)\.tmp-(?P<pid>\d+)")  # what temporary_path names
_STAGING_NAME = re.compile(r"\.(?P<name>.+)\.partial")  # what staging_path names
_UMASK = os.umask(0o022)  # read once, as early as possible: reading it means setting it
os.umask(_UMASK)
USUAL_FILE_MODE = 0o666 & ~_UMASK  # what open() gives a new file in this process


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
        publish_tree(temporary)
        rename(temporary, path)
    finally:
        remove(temporary)


@contextlib.contextmanager
def removed_if_left_empty(folder: Path) -> Iterator[None]:
    """A block that may create ``folder`` and its missing parents: if the block fails, those it
    created and left empty are removed again."""
    folder = Path(folder).absolute()
    missing = [path for path in (folder, *folder.parents) if not path.exists()]  # innermost first
    try:
        yield
    except BaseException:
        for path in missing:
            with contextlib.suppress(OSError):  # not empty, or not made
                path.rmdir()
        raise


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _publish_file(path: Path) -> None:
    mode = os.lstat(path).st_mode
    if stat.S_ISREG(mode) and stat.S_IMODE(mode) != USUAL_FILE_MODE:
        with contextlib.suppress(OSError):  # a file system with fixed permissions (FAT, some mounts) keeps its own
            os.chmod(path, USUAL_FILE_MODE)
    _fsync(path)


def publish_tree(path: Path) -> None:
    """Give the file ``path``, or every file under the folder ``path``, the permissions of an
    ordinary new file (:data:`USUAL_FILE_MODE`), and flush it and its folders to the disk."""
    path = Path(path)
    if path.is_dir():
        for directory, _, names in os.walk(path):
            for name in names:
                _publish_file(Path(directory) / name)
            _fsync(Path(directory))
    else:
        _publish_file(path)


def rename(source: Path, target: Path) -> None:
    """Rename ``source`` (already flushed) to ``target``, and flush the folders that hold them."""
    os.replace(source, target)
    _fsync(Path(target).parent)
    if Path(source).parent != Path(target).parent:
        _fsync(Path(source).parent)


def remove(path: Path) -> None:
    """Remove the file or folder ``path``, if there is one."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
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
        match = _TEMPORARY_NAME.fullmatch(path.name)
        if match and not _process_exists(int(match["pid"])):
            remove(path)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(text)


_JSON_KINDS = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true or false",
               type(None): "null"}


def read_json_object(path: Path) -> dict:
    """The JSON object in the file at ``path``. A ValueError names the file and what else it
    holds: ``PATH is not valid JSON (...)`` or ``PATH is not a JSON object (it holds an
    array)``; an OSError says why it cannot be read."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))  # JSON is UTF-8
    except (ValueError, RecursionError) as error:  # not JSON, not text, or nested without end
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path} is not a JSON object (it holds {_JSON_KINDS[type(value)]})")
    return value


def previous_version(target: Path) -> Path:
    """Where :func:`replace_directory` keeps ``target``'s previous version while it replaces it."""
    return target.with_name(f".{target.name}.old")


def replace_directory(source: Path, target: Path) -> None:
    """Move the finished directory ``source`` to ``target``, replacing any older one; at every
    instant a complete version is at ``target`` or, between the two renames, at
    :func:`previous_version` (which is kept while ``target`` is missing)."""
    source, target = Path(source), Path(target)
    old = previous_version(target)
    publish_tree(source)
    if target.exists():
        remove(old)
        rename(target, old)
    rename(source, target)
    remove(old)


def staging_path(path: Path) -> Path:
    """Where :func:`staging_directory` builds ``path``'s next version (same in every process)."""
    return Path(path).with_name(f".{Path(path).name}.partial")


def staging_directory(path: Path) -> Path:
    """An empty folder at :func:`staging_path` to build ``path``'s next version in."""
    staging = staging_path(path)
    remove(staging)
    staging.mkdir(parents=True)
    return staging


def destination(path) -> str:
    """``path`` with each temporary name that this process writes under in it
    (``.NAME.tmp-PID``, ``.NAME.partial``) replaced by the name it stands for."""
    return str(Path(*map(_stands_for, Path(path).parts)))


def _stands_for(name: str) -> str:
    temporary, staging = _TEMPORARY_NAME.fullmatch(name), _STAGING_NAME.fullmatch(name)
    if temporary and int(temporary["pid"]) == os.getpid():
        return temporary["name"]
    return staging["name"] if staging else name


SETTLED_NS = 2_000_000_000  # a file changed more recently than this may change again with the same times
_DIGESTS: Dict[tuple, str] = {}  # what _identity returns -> the sha256 of a file this process hashed
DIGESTS_FILE = "sha256.json"  # in cache_dir(): the sha256 of settled files by identity, across processes
DIGESTS_KEPT = 1000  # the most recently hashed files whose sha256 DIGESTS_FILE keeps
_SHA256 = re.compile(r"[0-9a-f]{64}")


def cache_dir() -> Path:
    """Where colorize keeps what it can always make again (downloads, generated photos, the
    sha256 of files it has read): ``$COLORIZE_CACHE``, or ``~/.cache/colorize``."""
    return Path(os.environ.get("COLORIZE_CACHE", Path.home() / ".cache" / "colorize"))


def sha256_file(path: Path) -> str:
    """``path``'s sha256, remembered while the file keeps its identity, size and times (a write
    changes at least its change time): by this process, and by every process of this user in
    :data:`DIGESTS_FILE`, so that a large prepared file is read in full once, not at the start
    of every run. A file changed within :data:`SETTLED_NS` before it is hashed is hashed again
    next time: file times are coarser than the clock."""
    before = _identity(path)
    if before in _DIGESTS:
        return _DIGESTS[before]
    key = json.dumps(before)
    remembered = _remembered().get(key)
    if remembered is not None:
        _DIGESTS[before] = remembered
        return remembered
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 22):
            digest.update(chunk)
    hexdigest = digest.hexdigest()
    if time.time_ns() - before[-1] > SETTLED_NS and _identity(path) == before:
        _DIGESTS[before] = hexdigest
        _remember(key, hexdigest)
    return hexdigest


def _remembered() -> Dict[str, str]:
    """The digests :data:`DIGESTS_FILE` holds; none where it is missing, unreadable or damaged."""
    try:
        entries = read_json_object(cache_dir() / DIGESTS_FILE)
    except (OSError, ValueError):
        return {}
    return {key: value for key, value in entries.items() if isinstance(value, str) and _SHA256.fullmatch(value)}


def _remember(key: str, hexdigest: str) -> None:
    """Add a digest to :data:`DIGESTS_FILE`, which keeps the :data:`DIGESTS_KEPT` latest, read
    again here for what other processes added while this one hashed; where it cannot be written
    (a read-only home), this process alone remembers it."""
    entries = _remembered()
    entries.pop(key, None)
    entries[key] = hexdigest
    with contextlib.suppress(OSError):
        atomic_write_text(cache_dir() / DIGESTS_FILE, json.dumps(dict(list(entries.items())[-DIGESTS_KEPT:])) + "\n")


def _identity(path: Path) -> tuple:
    """What a replacement of the file at ``path`` or a write to it changes: its path, file
    system, inode, size, modification and change times (last)."""
    status = os.stat(path)
    return os.path.abspath(path), status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns
