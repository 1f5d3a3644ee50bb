import json
import os
import re
import shutil
import stat
import subprocess
import tarfile

import numpy as np
import pytest
import torch
from conftest import CLASSES, read_source, run_cli, synthetic_image, write_image_folder

from colorize import io
from colorize.core.images import DECODING_VERSION
from colorize.data.loaders import build_loaders
from colorize.data.manifest import DataError, read_manifest, write_manifest
from colorize.data.prepare import PrepareSettings, prepare, stratified_holdout
from colorize.data.sources import SourceError
from colorize.errors import ConfigError
from colorize.settings import DataConfig

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


@pytest.mark.slow
def test_shared_cifar10_copy_gives_the_documented_splits(cifar_dir):
    manifest = read_manifest(cifar_dir)
    assert manifest["classes"] == CIFAR_CLASSES
    expected = {"train": (45000, 4500), "val": (5000, 500), "test": (10000, 1000)}
    for split, (count, per_class) in expected.items():
        entry = manifest["splits"][split]
        assert entry["count"] == count
        assert entry["per_class"] == {name: per_class for name in CIFAR_CLASSES}
        assert len(entry["sha256"]) == 64 and (cifar_dir / entry["file"]).stat().st_size == entry["bytes"]
    assert manifest["resolution"] == 32 and manifest["dtype"] == "float32"
    assert manifest["source"]["kind"] == "image-folder-archive"


@pytest.mark.slow
def test_second_prepare_is_a_no_op(cifar_dir, shared_tarball):
    before = {p.name: p.stat().st_mtime_ns for p in cifar_dir.iterdir()}
    result = run_cli("prepare", "--data", shared_tarball, "--out", cifar_dir)
    assert "up to date" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in cifar_dir.iterdir()} == before


def test_a_folder_prepared_by_a_colorize_that_reads_images_differently_is_prepared_again(small_source, tmp_path,
                                                                                        capsys):
    out = tmp_path / "prepared"
    prepare(str(small_source), out)
    assert read_manifest(out)["decoding"] == DECODING_VERSION
    for earlier in (DECODING_VERSION - 1, None):  # None: a manifest written before it said
        manifest = read_manifest(out)
        manifest.pop("decoding")
        write_manifest(out, manifest if earlier is None else {**manifest, "decoding": earlier})
        capsys.readouterr()
        prepare(str(small_source), out)
        assert f"{out} was prepared by a colorize that reads images differently; rebuilding" in capsys.readouterr().out
        assert read_manifest(out)["decoding"] == DECODING_VERSION
    prepare(str(small_source), out)
    assert "up to date" in capsys.readouterr().out


def test_val_is_a_stratified_holdout_disjoint_from_train():
    labels = np.repeat(np.arange(4), [10, 20, 30, 40])
    kept, held = stratified_holdout(labels, 0.1, seed=3)
    assert np.bincount(labels[held]).tolist() == [1, 2, 3, 4]
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == len(labels)
    assert held.tolist() == stratified_holdout(labels, 0.1, seed=3)[1].tolist()


def test_lab_values_match_the_source_images(small_source, small_dir):
    from skimage.color import rgb2lab

    images = read_source(small_source, 32).splits["test"]
    batch = next(iter(build_loaders(DataConfig(dir=str(small_dir), loader="memory", batch_size=64),
                                    splits=("test",))["test"]))
    lab = np.concatenate([batch.l.numpy(), batch.ab.numpy()], axis=1).transpose(0, 2, 3, 1)
    # the test split is stored in a seeded order; match each stored image to its source
    reference = rgb2lab(images.images)
    for stored, label in zip(lab, batch.label.numpy()):
        distances = np.abs(reference - stored).reshape(len(reference), -1).max(axis=1)
        match = int(distances.argmin())
        assert distances[match] < 1e-3 and images.labels[match] == label


def test_float16_storage_reads_back_close_to_float32(small_source, small_dir, tmp_path):
    out = tmp_path / "half"
    prepare(str(small_source), out, PrepareSettings(dtype="float16"))
    assert read_manifest(out)["dtype"] == "float16"
    def first_batch(data_dir, kind):
        return next(iter(build_loaders(DataConfig(dir=str(data_dir), loader=kind, batch_size=33),
                                       splits=("test",))["test"]))

    half, full = first_batch(out, "ffcv"), first_batch(small_dir, "ffcv")
    in_memory = first_batch(out, "memory")
    assert all(torch.equal(getattr(in_memory, name), getattr(half, name)) for name in ("l", "ab", "label", "index"))
    assert half.l.dtype == half.ab.dtype == torch.float32
    assert torch.equal(half.label, full.label) and torch.equal(half.index, full.index)
    for stored, exact in ((half.l, full.l), (half.ab, full.ab)):
        torch.testing.assert_close(stored, exact, rtol=2**-11, atol=1e-4)  # float16: 11 bits
    assert not torch.equal(half.ab, full.ab)  # rounded to float16, not a copy of float32


def copy_prepared(small_dir, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(small_dir, out)
    return out


def test_truncated_file_is_named_at_load_and_rebuilt_by_prepare(small_source, small_dir, tmp_path):
    out = copy_prepared(small_dir, tmp_path)
    damaged = out / "train.beton"
    os.truncate(damaged, damaged.stat().st_size - 1)
    with pytest.raises(DataError, match="train.beton is damaged"):
        build_loaders(DataConfig(dir=str(out), batch_size=16), splits=("train",))
    result = run_cli("prepare", "--data", small_source, "--out", out)
    assert "train.beton is damaged" in result.stdout and "rebuilding" in result.stdout
    build_loaders(DataConfig(dir=str(out), batch_size=16), splits=("train",))  # readable again


@pytest.mark.parametrize("change, problem", [
    (lambda manifest: [manifest], "is not a JSON object (it holds an array)"),
    (lambda manifest: {**manifest, "resolution": "32"},
     "is damaged (its resolution is missing or not a whole number)"),
    (lambda manifest: {key: value for key, value in manifest.items() if key != "classes"},
     "is damaged (its classes is missing or not a list)"),
    (lambda manifest: {**manifest, "splits": {**manifest["splits"], "val": {"file": "val.beton"}}},
     "is damaged (its splits.val.bytes is missing or not a whole number)"),
    (lambda manifest: {**manifest, "source": {}}, "is damaged (its source.spec is missing or not text)"),
    (lambda manifest: {**manifest, "splits": {**manifest["splits"], "train": {**manifest["splits"]["train"],
                                                                              "file": "../train.beton"}}},
     "is damaged (its splits.train.file is '../train.beton', not the name of a file in the folder)"),
    (lambda manifest: {**manifest, "prior": {**manifest["prior"], "file": "/etc/passwd"}},
     "is damaged (its prior.file is '/etc/passwd', not the name of a file in the folder)"),
])
def test_a_manifest_of_another_shape_is_named_at_load_and_rebuilt_by_prepare(small_source, small_dir, tmp_path,
                                                                            change, problem):
    out = copy_prepared(small_dir, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps(change(manifest)))
    with pytest.raises(DataError, match=re.escape(f"manifest.json {problem}; run colorize prepare again")):
        build_loaders(DataConfig(dir=str(out), batch_size=16), splits=("train",))
    rebuilt = prepare(str(small_source), out)
    assert {name: split["count"] for name, split in rebuilt["splits"].items()} == {"train": 108, "val": 12, "test": 33}


def test_flipped_byte_is_detected(small_dir, tmp_path):
    out = copy_prepared(small_dir, tmp_path)
    with open(out / "val.beton", "r+b") as file:
        file.seek(-100, os.SEEK_END)
        byte = file.read(1)
        file.seek(-100, os.SEEK_END)
        file.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(DataError, match="val.beton is damaged: its sha256"):
        build_loaders(DataConfig(dir=str(out)), splits=("val",))


def test_changed_input_is_rebuilt(small_source, tmp_path):
    source = tmp_path / "source"
    shutil.copytree(small_source, source)
    out = tmp_path / "out"
    first = prepare(str(source), out)
    synthetic_image(np.random.default_rng(9), 0).save(source / "train" / CLASSES[0] / "extra.png")
    second = prepare(str(source), out)
    assert second["splits"]["train"]["count"] + second["splits"]["val"]["count"] == 121
    assert second["source"]["fingerprint"] != first["source"]["fingerprint"]


def test_missing_directory_says_how_to_prepare(tmp_path):
    with pytest.raises(DataError, match="colorize prepare"):
        build_loaders(DataConfig(dir=str(tmp_path / "none")))


def test_offline_cifar10_download_fails_cleanly(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    result = run_cli("prepare", "--data", "cifar10", "--out", out, "--cache-dir", cache, check=False,
                     env={"COLORIZE_CIFAR10_URL": "http://127.0.0.1:9/cifar-10-python.tar.gz"})
    assert result.returncode != 0
    assert "could not download CIFAR-10" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists() and list(cache.iterdir()) == []


def test_bad_settings_are_named(small_source, tmp_path):
    result = run_cli("prepare", "--data", small_source, "--out", tmp_path / "o", "--val-fraction", "1.5",
                     check=False)
    assert result.returncode == 1 and "--val-fraction" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_output_folder_that_cannot_be_made_is_named_in_one_line(small_source, tmp_path):
    (tmp_path / "file").touch()
    result = run_cli("prepare", "--data", small_source, "--out", tmp_path / "file" / "out", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        f"colorize prepare: error: {tmp_path / 'file' / 'out'}: a part of this path is a file, not a folder"


@pytest.mark.parametrize("resolution, message", [
    ("50", "--resolution 50 suits no model: fusion needs a multiple of 8 (nearest: 48 or 56)"),
    ("4096", "--resolution 4096 is beyond 2048, the largest image side colorize's networks take"),
])
def test_a_resolution_no_model_can_use_is_refused_before_any_work(small_source, tmp_path, resolution, message):
    result = run_cli("prepare", "--data", small_source, "--out", tmp_path / "o", "--resolution", resolution,
                     check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert "decoding" not in result.stderr and not (tmp_path / "o").exists()


def test_a_refused_archive_leaves_no_output_folder(tmp_path):
    root = write_image_folder(tmp_path / "images", per_class=(2, 1))
    synthetic_image(np.random.default_rng(1), 0).save(root / "stray.png")
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # compressed: copied into the output folder to be read
        tar.add(root, arcname=".")
    out = tmp_path / "new" / "out"
    with pytest.raises(SourceError, match="1 image does not fit: stray.png"):
        prepare(str(archive), out)
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()
    with pytest.raises(SourceError):
        prepare(str(archive), tmp_path / "kept")
    assert (tmp_path / "kept").is_dir()  # a folder that was there stays


def test_splits_that_would_be_empty_are_refused(tmp_path):
    source = write_image_folder(tmp_path / "tiny", per_class=(3, 0))
    with pytest.raises(ConfigError, match="the val and test splits would be empty") as error:
        prepare(str(source), tmp_path / "out")
    assert "cat 3, dog 3, frog 3" in str(error.value)
    assert "--val-fraction" in str(error.value) and "--test-fraction" in str(error.value)
    assert not (tmp_path / "out").exists()
    manifest = prepare(str(source), tmp_path / "out", PrepareSettings(val_fraction=0.5, test_fraction=0.34))
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 3, "val": 3, "test": 3}


def test_prepare_removes_temporary_files_of_processes_that_are_gone(small_source, small_dir, tmp_path):
    out = copy_prepared(small_dir, tmp_path)
    finished = subprocess.Popen(["true"])
    finished.wait()
    stale_file, stale_folder = out / f".train.beton.tmp-{finished.pid}", out / f".x.tmp-{finished.pid}"
    live = out / f".val.beton.tmp-{os.getpid()}"
    stale_file.write_bytes(b"partial")
    (stale_folder / "inner").mkdir(parents=True)
    live.write_bytes(b"being written")
    prepare(str(small_source), out)
    assert not stale_file.exists() and not stale_folder.exists()
    assert live.read_bytes() == b"being written"


def test_manifest_is_plain_json_with_sources_and_settings(small_dir, small_source):
    manifest = json.loads((small_dir / "manifest.json").read_text())
    assert manifest["source"]["spec"] == str(small_source)
    assert manifest["settings"]["val_fraction"] == 0.1
    assert {s: e["count"] for s, e in manifest["splits"].items()} == {"train": 108, "val": 12, "test": 33}


def test_an_image_that_cannot_be_decoded_is_named_and_its_split_written_without_it(tmp_path, capsys):
    source = write_image_folder(tmp_path / "images", per_class=(10, 3))
    (source / "train" / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")  # found only when decoded
    (source / "train" / "dog" / "notes.txt").write_text("not an image")  # found when listing
    manifest = prepare(str(source), tmp_path / "out")
    assert [line.split(":")[0] for line in manifest["skipped"]] == ["train/dog/notes.txt", "train/dog/broken.png"]
    assert "skipped train/dog/broken.png: not a readable image" in capsys.readouterr().out
    counts = {name: entry["count"] for name, entry in manifest["splits"].items()}
    assert sum(counts.values()) == 39 and counts["test"] == 9  # 30 + 9 readable images
    loaded = build_loaders(DataConfig(dir=str(tmp_path / "out"), batch_size=64), splits=("train", "val"),
                           train_split_for_training=False)
    for name, loader in loaded.items():
        batch = next(iter(loader))
        assert len(batch.index) == counts[name] and batch.l.amax(dim=(1, 2, 3)).min() > 0  # no black stand-in
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "ab_prior.safetensors", "manifest.json", "test.beton", "train.beton", "val.beton"]
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in (tmp_path / "out").iterdir()}
    assert modes == dict.fromkeys(modes, io.USUAL_FILE_MODE)  # a data folder others can read
