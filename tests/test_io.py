"""Durable output: what is renamed into place is on the disk first, and a replaced folder's
previous version stays until the new one is in place; checksums are read again whenever a file
may have changed; what is renamed into place has the permissions of an ordinary new file; a JSON
file that must hold an object is named with what it holds instead."""
import hashlib
import json
import os
import stat
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from colorize import io
from colorize.models import create_model
from colorize.models.fusion import FusionSettings
from colorize.models.saved import write_model


@pytest.fixture
def events(monkeypatch):
    """Every flush (``("sync", path)``) and rename (``("rename", source, target)``), in order."""
    seen = []
    flush = io._fsync
    monkeypatch.setattr(io, "_fsync", lambda path: (seen.append(("sync", str(path))), flush(path)))
    replace = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (seen.append(("rename", str(a), str(b))), replace(a, b)))
    return seen


def _tree(folder, text):
    (folder / "sub").mkdir(parents=True)
    (folder / "a.bin").write_text(text)
    (folder / "sub" / "b.bin").write_text(text)
    return folder


def test_a_folder_is_flushed_before_it_is_renamed_and_its_parent_after(tmp_path, events):
    target = _tree(tmp_path / "model", "old")
    source = _tree(tmp_path / ".model.partial", "new")
    io.replace_directory(source, target)
    first_rename = next(i for i, event in enumerate(events) if event[0] == "rename")
    synced_first = {event[1] for event in events[:first_rename]}
    assert {str(source), str(source / "sub"), str(source / "a.bin"), str(source / "sub" / "b.bin")} <= synced_first
    for index, event in enumerate(events):
        if event[0] == "rename":
            assert events[index + 1] == ("sync", str(tmp_path)), events  # the rename itself, on the disk
    assert (target / "a.bin").read_text() == "new" and not io.previous_version(target).exists()


def test_a_file_is_flushed_before_it_is_renamed(tmp_path, events):
    io.atomic_write_text(tmp_path / "metrics.json", "{}")
    renamed = next(i for i, event in enumerate(events) if event[0] == "rename")
    assert events[renamed - 1] == ("sync", events[renamed][1]) and events[renamed + 1] == ("sync", str(tmp_path))


def test_the_previous_version_stays_while_the_folder_is_missing(tmp_path, monkeypatch):
    # a crash between the two renames left only the previous version; the next replace must
    # keep it until the new folder is in place
    target, old = tmp_path / "last", io.previous_version(tmp_path / "last")
    _tree(old, "previous")
    source = _tree(tmp_path / ".last.partial", "new")

    def power_loss(a, b):
        raise OSError("power loss")

    monkeypatch.setattr(os, "replace", power_loss)
    with pytest.raises(OSError):
        io.replace_directory(source, target)
    assert (old / "a.bin").read_text() == "previous"
    monkeypatch.undo()
    io.replace_directory(source, target)
    assert (target / "a.bin").read_text() == "new" and not old.exists()


def test_a_temporary_name_is_reported_as_the_path_it_stands_for(tmp_path):
    out = tmp_path / "out"
    for temporary in (io.temporary_path(out), io.staging_path(out)):
        assert io.destination(temporary) == str(out)
        assert io.destination(temporary / "model.safetensors") == str(out / "model.safetensors")
    for other in (f".out.tmp-{os.getpid() + 1}", ".out.old", ".hidden/a.partial"):  # another process's, a user's
        assert io.destination(tmp_path / other) == str(tmp_path / other)


@pytest.fixture
def hashings(monkeypatch):
    """How many times a file has been hashed (read to its end)."""
    counted = []
    monkeypatch.setattr(io, "hashlib", SimpleNamespace(sha256=lambda: (counted.append(1), hashlib.sha256())[1]))
    return counted


def test_a_settled_file_is_hashed_once_until_it_is_written(tmp_path, monkeypatch, hashings):
    monkeypatch.setattr(io, "SETTLED_NS", -10**12)  # as if the file were written long before
    path = tmp_path / "train.beton"
    path.write_bytes(bytes(1000))
    assert io.sha256_file(path) == io.sha256_file(path) == hashlib.sha256(bytes(1000)).hexdigest()
    assert len(hashings) == 1
    stat = path.stat()
    time.sleep(0.05)  # past the resolution of file times
    with open(path, "r+b") as file:  # a byte damaged in place, the modification time put back
        file.write(b"\xff")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert io.sha256_file(path) == hashlib.sha256(b"\xff" + bytes(999)).hexdigest()
    assert len(hashings) == 2


def test_a_settled_file_hashed_by_an_earlier_process_is_not_read_again_until_it_changes(tmp_path, monkeypatch,
                                                                                          hashings):
    path, zeros = tmp_path / "train.beton", hashlib.sha256(bytes(1000)).hexdigest()
    path.write_bytes(bytes(1000))
    monkeypatch.setattr(io, "SETTLED_NS", -10**12)  # as if the file were written long before
    code = f"from colorize import io; io.SETTLED_NS = -10**12; print(io.sha256_file({str(path)!r}))"
    hashed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert hashed.stdout.strip() == zeros
    assert io.sha256_file(path) == zeros and hashings == []  # remembered by the other process
    stat = path.stat()
    time.sleep(0.05)  # past the resolution of file times
    with open(path, "r+b") as file:  # a byte damaged in place, the modification time put back
        file.write(b"\xff")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    monkeypatch.setattr(io, "_DIGESTS", {})  # as in a new process
    assert io.sha256_file(path) == hashlib.sha256(b"\xff" + bytes(999)).hexdigest() and len(hashings) == 1


def test_the_remembered_digests_are_bounded_and_a_damaged_or_unwritable_store_only_costs_a_read(
        tmp_path, monkeypatch, hashings):
    monkeypatch.setattr(io, "SETTLED_NS", -10**12)
    monkeypatch.setattr(io, "DIGESTS_KEPT", 2)
    paths = [tmp_path / f"{index}.beton" for index in range(3)]
    for index, path in enumerate(paths):
        path.write_bytes(bytes([index]) * 10)
        io.sha256_file(path)
    store = io.cache_dir() / io.DIGESTS_FILE
    kept = json.loads(store.read_text())
    assert sorted(kept.values()) == sorted(hashlib.sha256(bytes([i]) * 10).hexdigest() for i in (1, 2))

    for damage in ("{", json.dumps({key: "0" * 64 + "x" for key in kept}), "[]"):
        store.write_text(damage)
        monkeypatch.setattr(io, "_DIGESTS", {})
        assert io.sha256_file(paths[2]) == hashlib.sha256(bytes([2]) * 10).hexdigest()
    assert len(hashings) == 3 + 3
    assert list(json.loads(store.read_text()).values()) == [hashlib.sha256(bytes([2]) * 10).hexdigest()]

    (tmp_path / "file").touch()
    monkeypatch.setenv("COLORIZE_CACHE", str(tmp_path / "file" / "cache"))  # cannot be made
    monkeypatch.setattr(io, "_DIGESTS", {})
    assert io.sha256_file(paths[0]) == hashlib.sha256(bytes([0]) * 10).hexdigest()
    assert io.sha256_file(paths[0]) == hashlib.sha256(bytes([0]) * 10).hexdigest() and len(hashings) == 7


def test_a_file_written_just_now_is_hashed_every_time(tmp_path, hashings):
    path = tmp_path / "train.beton"
    path.write_bytes(bytes(1000))
    io.sha256_file(path)
    io.sha256_file(path)
    assert len(hashings) == 2  # it could change again within its times' resolution, unseen


@pytest.mark.parametrize("content, problem", [
    ('{"a": ', "is not valid JSON (Expecting value: line 1 column 7 (char 6))"),
    (b"\xff\xfe{}", "is not valid JSON ('utf-8' codec can't decode byte 0xff in position 0"),
    ("[" * 100_000 + "]" * 100_000, "is not valid JSON (maximum recursion depth exceeded"),
    ("[1]", "is not a JSON object (it holds an array)"),
    ('"text"', "is not a JSON object (it holds a string)"),
    ("1.5", "is not a JSON object (it holds a number)"),
    ("true", "is not a JSON object (it holds true or false)"),
    ("null", "is not a JSON object (it holds null)"),
])
def test_a_json_file_that_holds_no_object_is_named_with_what_it_holds(tmp_path, content, problem):
    path = tmp_path / "state.json"
    (path.write_bytes if isinstance(content, bytes) else path.write_text)(content)
    with pytest.raises(ValueError) as raised:
        io.read_json_object(path)
    assert str(raised.value).startswith(f"{path} {problem}")
    path.write_text('{"a": [1]}')
    assert io.read_json_object(path) == {"a": [1]}


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_written_for_their_owner_only_are_published_with_the_usual_permissions(tmp_path):
    (tmp_path / "plain.txt").write_text("x")
    usual = _mode(tmp_path / "plain.txt")
    assert usual == io.USUAL_FILE_MODE
    with io.atomic_path(tmp_path / "prior.safetensors") as staged:
        save_file({"x": torch.zeros(2)}, str(staged))  # safetensors writes 0600
        os.chmod(staged, 0o600)  # whichever safetensors is installed
    staging = io.staging_directory(tmp_path / "model")
    write_model(create_model("fusion", FusionSettings(width=8)), staging, ["a"] * 10, card="# a model\n")
    os.chmod(staging / "model.safetensors", 0o600)
    os.symlink(tmp_path / "plain.txt", staging / "link")
    os.chmod(tmp_path / "plain.txt", 0o400)
    io.replace_directory(staging, tmp_path / "model")
    published = [tmp_path / "prior.safetensors", *(tmp_path / "model").glob("*.*")]
    assert {path.name: _mode(path) for path in published} == {path.name: usual for path in published}
    assert _mode(tmp_path / "plain.txt") == 0o400  # a link is not followed


def test_a_file_system_that_refuses_permissions_still_gets_the_file(tmp_path, monkeypatch):
    def refuse(path, mode):
        raise PermissionError(1, "Operation not permitted", str(path))

    monkeypatch.setattr(os, "chmod", refuse)
    with io.atomic_path(tmp_path / "prior.safetensors") as staged:
        save_file({"x": torch.zeros(2)}, str(staged))
    assert (tmp_path / "prior.safetensors").is_file()
