import io
import os
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from conftest import CLASSES, read_source, synthetic_image, write_image_folder
from PIL import Image

from colorize.core.images import read_rgb
from colorize.data import cifar10
from colorize.data.cifar10 import Cifar10Download
from colorize.data.listing import SourceError
from colorize.data.sources import open_source


def test_image_folder_with_splits(small_source):
    images = read_source(small_source, 32)
    assert images.classes == list(CLASSES)
    assert images.splits["train"].images.shape == (120, 32, 32, 3)
    assert images.splits["test"].images.dtype == np.uint8
    assert np.bincount(images.splits["test"].labels).tolist() == [11, 11, 11]


def test_tar_gz_of_a_folder_reads_the_same_without_unpacking(small_source, tmp_path):
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(small_source, arcname="dataset")  # one enclosing folder is allowed
    folder, packed = read_source(small_source, 32), read_source(archive, 32)
    for split in ("train", "test"):
        np.testing.assert_array_equal(folder.splits[split].images, packed.splits[split].images)
        np.testing.assert_array_equal(folder.splits[split].labels, packed.splits[split].labels)
    assert not (tmp_path / "dataset").exists()


def test_a_compressed_archive_is_read_from_a_temporary_plain_copy_that_is_removed(small_source, tmp_path):
    archive, scratch = tmp_path / "images.tar.gz", tmp_path / "scratch"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(small_source, arcname="dataset")
    with open_source(str(archive)).listed(scratch) as listing:
        (copy,) = scratch.iterdir()  # named as a temporary of this process
        assert copy.name == f".images.tar.gz.tar.tmp-{os.getpid()}" and tarfile.open(copy, "r:").getmembers()
        key = listing.splits["test"].keys[0]
        assert listing.image(key, 32).shape == (32, 32, 3)
    assert list(scratch.iterdir()) == []


def test_jpegs_are_decoded_at_a_reduced_size_that_still_covers_the_resolution(tmp_path):
    photo = synthetic_image(np.random.default_rng(0), 1, size=(300, 260))
    (tmp_path / "photos" / "a").mkdir(parents=True)
    photo.save(tmp_path / "photos" / "a" / "p.jpg", quality=95)
    assert read_rgb(tmp_path / "photos" / "a" / "p.jpg", at_least=64).size == (65, 75)  # 1/4 of 260 x 300
    assert read_rgb(tmp_path / "photos" / "a" / "p.jpg", at_least=140).size == (260, 300)  # 1/2 would be < 140
    small = read_source(tmp_path / "photos", 64).splits["train"].images[0]
    full = np.asarray(photo.crop((0, 20, 260, 280)).resize((64, 64), Image.Resampling.BICUBIC), dtype=np.float32)
    assert np.abs(small.astype(np.float32) - full).mean() < 4  # the same picture


def test_modes_sizes_and_unreadable_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    root = tmp_path / "mixed"
    (root / "a").mkdir(parents=True)
    (root / "b").mkdir()
    wide = synthetic_image(rng, 0, size=(40, 100))
    wide.save(root / "a" / "wide.jpg")
    wide.convert("L").save(root / "a" / "grey.png")
    wide.convert("P").save(root / "a" / "palette.png")
    rgba = wide.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: becomes white
    rgba.save(root / "b" / "transparent.png")
    Image.fromarray(np.full((50, 50), 65535, dtype=np.uint16)).save(root / "b" / "sixteen.png")
    Image.fromarray(np.ones((50, 50), dtype=np.float32)).save(root / "b" / "float.tif")  # 1.0 is white
    (root / "b" / "notes.txt").write_text("not an image")
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")

    images = read_source(root, 16)
    assert "skipped b/notes.txt: not an image file" in capsys.readouterr().out  # found when listing
    assert [line.split(":")[0] for line in images.skipped] == ["b/notes.txt", "b/broken.png"]
    train = images.splits["train"]
    assert list(images.splits) == ["train"] and train.images.shape == (6, 16, 16, 3)
    by_label = np.bincount(train.labels).tolist()
    assert by_label == [3, 3]
    grey = train.images[0]
    assert (grey[..., 0] == grey[..., 1]).all()  # grayscale input stays grey
    assert (train.images[train.labels == 1] >= 250).all()  # white: transparent, 16-bit and float max


def test_images_outside_class_folders_are_rejected(tmp_path):
    synthetic_image(np.random.default_rng(0), 0).save(tmp_path / "loose.png")
    with pytest.raises(SourceError, match="class folders"):
        read_source(tmp_path, 32)


def _fake_cifar_batch(rng, count):
    return {"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            "labels": rng.integers(0, 10, count).tolist()}


class _Python2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 strings, as the official CIFAR-10 batches hold them."""

    def save_bytes(self, data):
        self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)

    dispatch = {**pickle._Pickler.dispatch, bytes: save_bytes}


def official_pickle(content) -> bytes:
    """``content`` pickled as the official batches are: by Python 2 at protocol 2, with numpy 1."""
    out = io.BytesIO()
    _Python2Pickler(out, protocol=2).dump(content)
    return out.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def write_fake_cifar(tmp_path, as_archive: bool, **replaced: bytes):
    """A small CIFAR-10 python folder or archive, its members' pickles ``replaced`` by name."""
    rng = np.random.default_rng(0)
    members = {f"data_batch_{i}": _fake_cifar_batch(rng, 20) for i in range(1, 6)}
    members["test_batch"] = _fake_cifar_batch(rng, 10)
    members["batches.meta"] = {"label_names": ["c%d" % i for i in range(10)]}
    payloads = {name: official_pickle(content) for name, content in members.items()} | replaced
    if not as_archive:
        folder = tmp_path / "cifar-10-batches-py"
        folder.mkdir()
        for name, payload in payloads.items():
            (folder / name).write_bytes(payload)
        return folder, members
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, payload in payloads.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return archive, members


@pytest.mark.parametrize("as_archive", [True, False])
def test_official_cifar10_files(tmp_path, as_archive):
    path, members = write_fake_cifar(tmp_path, as_archive)
    images = read_source(path, 32)
    assert images.classes[3] == "c3"
    train = images.splits["train"]
    assert train.images.shape == (100, 32, 32, 3) and images.splits["test"].images.shape[0] == 10
    first = members["data_batch_1"]["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(train.images[0], first)
    assert read_source(path, 16).splits["test"].images.shape == (10, 16, 16, 3)


class _RunsCode:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("as_archive", [True, False])
def test_a_cifar10_batch_that_would_run_code_is_refused(tmp_path, as_archive):
    marker = tmp_path / "MARKER"
    payload = pickle.dumps({"data": _RunsCode(f"touch {marker}"), "labels": []}, protocol=2)
    path, _ = write_fake_cifar(tmp_path, as_archive, data_batch_3=payload)
    with pytest.raises(SourceError, match="data_batch_3.*not a genuine CIFAR-10 batch"):
        read_source(path, 32)
    assert not marker.exists()


def test_download_failure_is_clear_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar10, "CIFAR10_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(SourceError, match="could not download CIFAR-10") as error:
        with Cifar10Download(tmp_path).listed():
            pass
    assert "--data" in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_missing_path_names_the_accepted_sources(tmp_path):
    with pytest.raises(SourceError, match="no such file or folder"):
        open_source(str(tmp_path / "nope"))


def test_no_split_folder(tmp_path):
    write_image_folder(tmp_path / "x", per_class=(6, 0))
    images = read_source(tmp_path / "x" / "train", 32)
    assert list(images.splits) == ["train"] and len(images.splits["train"].labels) == 18


def sorted_samples(images, split):
    return sorted(zip(images.splits[split].labels.tolist(), map(bytes, images.splits[split].images)))


def test_tarball_made_from_inside_the_folder(small_source, tmp_path):
    archive = tmp_path / "x.tgz"
    subprocess.run(["tar", "-czf", archive, "-C", small_source, "."], check=True)
    with tarfile.open(archive) as tar:
        assert tar.getnames()[0] == "."  # the member ./ comes first
    folder, packed = read_source(small_source, 32), read_source(archive, 32)
    for split in ("train", "test"):  # tar stores files in directory order, not sorted
        assert sorted_samples(packed, split) == sorted_samples(folder, split)


def test_cifar10_archive_made_from_inside_its_parent(tmp_path):
    (tmp_path / "parent").mkdir()
    _, members = write_fake_cifar(tmp_path / "parent", as_archive=False)
    archive = tmp_path / "x.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "parent", arcname=".")
    assert open_source(str(archive)).kind == "cifar10-python"
    first = members["data_batch_1"]["data"][0].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(read_source(archive, 32).splits["train"].images[0], first)


def test_exif_orientation_is_applied(tmp_path):
    wide = np.zeros((40, 100, 3), dtype=np.uint8)
    wide[:, :50, 0] = 255  # red left half
    wide[:, 50:, 2] = 255  # blue right half
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    (tmp_path / "photos" / "a").mkdir(parents=True)
    Image.fromarray(wide).save(tmp_path / "photos" / "a" / "phone.jpg", exif=exif, quality=95)

    assert read_rgb(tmp_path / "photos" / "a" / "phone.jpg").size == (40, 100)
    upright = read_source(tmp_path / "photos", 16).splits["train"].images[0]
    top, bottom = upright[:6].reshape(-1, 3).mean(0), upright[-6:].reshape(-1, 3).mean(0)
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]  # red on top, blue below


@pytest.mark.parametrize("suffix", [".heic", ".avif", ".jfif", ".jp2"])
def test_photos_of_phones_and_the_web_are_read_and_listed(tmp_path, suffix):
    halves = np.zeros((48, 64, 3), dtype=np.uint8)
    halves[:, :32, 0] = 255  # red left half
    halves[:, 32:, 2] = 255  # blue right half
    (tmp_path / "photos" / "a").mkdir(parents=True)
    Image.fromarray(halves).save(tmp_path / "photos" / "a" / f"photo{suffix}", quality=95)
    Image.fromarray(halves).save(tmp_path / "photos" / "a" / "plain.png")

    read = np.asarray(read_rgb(tmp_path / "photos" / "a" / f"photo{suffix}"), dtype=float)
    assert read.shape == (48, 64, 3)
    assert np.abs(read - halves).mean() < 8  # lossy, with chroma at half resolution
    images = read_source(tmp_path / "photos", 16)
    assert images.splits["train"].images.shape == (2, 16, 16, 3) and images.skipped == []


def test_without_pillow_heif_a_heic_is_named_with_what_reads_it_and_the_rest_still_reads(tmp_path):
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "phone.heic")
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "plain.png")
    code = f"""
import sys
sys.modules["pillow_heif"] = None  # as where it is not installed
from colorize.core.images import UnreadableImage, read_rgb
print(read_rgb({str(tmp_path / "plain.png")!r}).getpixel((0, 0)))
try:
    read_rgb({str(tmp_path / "phone.heic")!r})
except UnreadableImage as error:
    print(error)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines() == [
        "(200, 30, 30)", f"{tmp_path / 'phone.heic'}: reading HEIC needs pillow-heif (pip install pillow-heif)"]


def icc_profile(space: str, gamma: float, colorants=()) -> bytes:
    """A minimal ICC v2 display profile: ``RGB `` with ``colorants`` (the XYZ of each primary,
    adapted to D50) or ``GRAY``, with one gamma curve for every channel."""
    def s15(value):
        return struct.pack(">i", round(value * 65536))

    def xyz(values):
        return b"XYZ \0\0\0\0" + b"".join(map(s15, values))

    d50 = (0.9642, 1.0, 0.8249)
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256))
    text = b"test profile\0"
    tags = [(b"desc", b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(79)), (b"wtpt", xyz(d50))]
    if space == "GRAY":
        tags.append((b"kTRC", curve))
    else:
        tags += [*zip((b"rXYZ", b"gXYZ", b"bXYZ"), map(xyz, colorants)), (b"rTRC", curve), (b"gTRC", curve),
                 (b"bTRC", curve)]
    table, data, start = b"", b"", 128 + 4 + 12 * len(tags)
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", start + len(data), len(body))
        data += body
    header = (struct.pack(">I", start + len(data)) + b"none" + bytes([2, 0x10, 0, 0]) + b"mntr"
              + space.encode().ljust(4) + b"XYZ " + bytes(12) + b"acsp" + bytes(28) + b"".join(map(s15, d50)))
    return header.ljust(128, b"\0") + struct.pack(">I", len(tags)) + table + data


DISPLAY_P3 = ((0.5151, 0.2412, -0.0011), (0.2919, 0.6922, 0.0419), (0.1572, 0.0666, 0.7841))  # D50


def test_an_embedded_colour_profile_is_converted_to_srgb_and_one_that_cannot_be_read_is_ignored(tmp_path):
    p3 = icc_profile("RGB", 2.2, DISPLAY_P3)
    (tmp_path / "photos" / "a").mkdir(parents=True)
    red = Image.new("RGB", (64, 64), (200, 30, 30))
    red.save(tmp_path / "photos" / "a" / "phone.jpg", icc_profile=p3, quality=100)
    red.save(tmp_path / "p3.png", icc_profile=p3)
    red.save(tmp_path / "untagged.png")
    red.save(tmp_path / "damaged.png", icc_profile=b"not a profile")
    transparent = red.convert("RGBA")
    transparent.putalpha(0)
    transparent.save(tmp_path / "transparent.png", icc_profile=p3)
    Image.new("L", (8, 8), 128).save(tmp_path / "grey.png", icc_profile=icc_profile("GRAY", 1.0))

    def colour(name):
        return np.asarray(read_rgb(tmp_path / name))[0, 0].tolist()

    assert colour("p3.png") == pytest.approx([220, 0, 0], abs=2)  # Display P3's red is beyond sRGB's
    assert colour("untagged.png") == colour("damaged.png") == [200, 30, 30]
    assert colour("transparent.png") == [255, 255, 255]  # the alpha kept through the conversion
    assert colour("grey.png") == [188, 188, 188]  # half of the light is 188 in sRGB, not 128
    prepared = read_source(tmp_path / "photos", 16).splits["train"].images[0]  # a JPEG decoded at 1/4
    assert prepared.reshape(-1, 3).mean(0).tolist() == pytest.approx([220, 0, 0], abs=3)


def _add_stray_image(root, stray):
    (root / stray).parent.mkdir(parents=True, exist_ok=True)
    synthetic_image(np.random.default_rng(1), 0).save(root / stray)


def _as_tar_gz(root, tmp_path):
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="dataset")  # inside one enclosing folder
    return archive


@pytest.mark.parametrize("as_archive", [False, True])
@pytest.mark.parametrize("tree, stray", [("", "train/cat/2019/e.png"), ("", "train/e.png"), ("", "e.png"),
                                         ("train", "cat/2019/e.png"), ("train", "e.png")])
def test_images_that_do_not_fit_the_layout_are_refused_by_name(tmp_path, as_archive, tree, stray):
    root = write_image_folder(tmp_path / "images", per_class=(2, 1)) / tree  # train/ holds <class>/image
    _add_stray_image(root, stray)
    spec = _as_tar_gz(root, tmp_path) if as_archive else root
    with pytest.raises(SourceError, match="Move or remove") as error:
        read_source(spec, 32)
    assert f"1 image does not fit: {'dataset/' if as_archive else ''}{stray}" in str(error.value)


@pytest.mark.parametrize("as_archive", [False, True])
def test_a_folder_beside_train_and_test_is_refused_naming_a_few(tmp_path, as_archive):
    root = write_image_folder(tmp_path / "images", per_class=(2, 1))
    for i in range(7):
        _add_stray_image(root, f"val/cat/{i}.png")
    spec = _as_tar_gz(root, tmp_path) if as_archive else root
    with pytest.raises(SourceError, match="train/<class>/image") as error:
        read_source(spec, 32)
    prefix = "dataset/" if as_archive else ""
    assert f"7 images do not fit: {prefix}val/cat/0.png, " in str(error.value)
    assert f"{prefix}val/cat/4.png and 2 more" in str(error.value)


def test_links_inside_a_tar_archive(tmp_path, capsys):
    root = write_image_folder(tmp_path / "images", per_class=(2, 1))
    os.link(root / "train" / "cat" / "0000.png", root / "train" / "cat" / "hard.png")
    os.symlink("0000.png", root / "train" / "dog" / "soft.png")
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(root, arcname=".")
    with tarfile.open(archive) as tar:
        assert tar.getmember("./train/cat/hard.png").islnk() and tar.getmember("./train/dog/soft.png").issym()

    packed = read_source(archive, 32)
    link = "./train/dog/soft.png: a symbolic link inside the archive (skipped; store the file itself)"
    assert packed.skipped == [link]
    assert f"skipped {link}" in capsys.readouterr().out
    (root / "train" / "dog" / "soft.png").unlink()
    assert sorted_samples(packed, "train") == sorted_samples(read_source(root, 32), "train")  # hard.png read
