"""Shared fixtures: the CIFAR-10 copy beside the checkout, small synthetic sources, prepared dirs."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_TARBALL = Path(
    os.environ.get("COLORIZE_TEST_TARBALL", REPO.parent / "shared" / "datasets" / "cifar10-jpeg.tar.gz")
)
CLASSES = ("cat", "dog", "frog")


def run_cli(*args, env=None, check=True, timeout=600) -> subprocess.CompletedProcess:
    """Run ``python -m colorize ARGS`` as a user would; fail with its output if it fails."""
    result = subprocess.run(
        [sys.executable, "-m", "colorize", *map(str, args)],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout,
    )
    if check and result.returncode != 0:
        pytest.fail(f"colorize {' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")
    return result


# `python -c RUN_CLI ARGS` is `colorize ARGS` after whatever Python comes before it
RUN_CLI = "import sys\nfrom colorize.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def sigterm_at_batch(batch: int) -> dict:
    """The environment in which ``import sigterm_at_batch`` makes a process training a run
    receive SIGTERM while it trains its ``batch``-th batch."""
    return {"SIGTERM_AT_BATCH": str(batch), "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO / "tests"), os.environ.get("PYTHONPATH")]))}


def smoke_config(data_dir, run_dir, *overrides):
    """``configs/smoke.yaml`` on ``data_dir``, writing to ``run_dir``, with ``overrides``."""
    from colorize.config import load_config

    return load_config(str(REPO / "configs" / "smoke.yaml"), [f"data.dir={data_dir}", f"run.dir={run_dir}", *overrides])


def trained_run(tmp_path_factory, name: str, config_of):
    """The run directory ``name`` of a run trained in this process on ``config_of(run_dir)``."""
    from colorize.engine.trainer import train

    run_dir = tmp_path_factory.mktemp("runs") / name
    train(config_of(run_dir))
    return run_dir


def synthetic_image(rng: np.random.Generator, label: int, size=(32, 32)) -> Image.Image:
    """A smooth image whose dominant colour depends on its class."""
    height, width = size
    base = np.zeros((height, width, 3))
    base[..., label % 3] = 0.7
    ramp = np.linspace(0, 0.3, width)[None, :, None]
    noise = rng.normal(0, 0.05, (height, width, 3))
    return Image.fromarray((np.clip(base + ramp + noise, 0, 1) * 255).astype(np.uint8))


def write_image_folder(root: Path, per_class=(40, 11), seed=0) -> Path:
    """train/<class>/*.png and test/<class>/*.png with synthetic images."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                synthetic_image(rng, label).save(folder / f"{i:04d}.png")
    return root


def read_source(spec, resolution: int):
    """Every image of a data source decoded, as prepare decodes them (unreadable ones left out
    and named): an object with ``classes``, ``skipped`` and ``splits[name].images / .labels``."""
    from types import SimpleNamespace

    from colorize.core.images import UnreadableImage
    from colorize.data.sources import open_source

    with open_source(str(spec)).listed() as listing:
        skipped, splits = list(listing.skipped), {}
        for name, items in listing.splits.items():
            images, labels = [], []
            for key, label in zip(items.keys, items.labels):
                try:
                    images.append(listing.image(key, resolution))
                    labels.append(label)
                except UnreadableImage as error:
                    skipped.append(str(error))
            splits[name] = SimpleNamespace(images=np.stack(images), labels=np.array(labels))
        return SimpleNamespace(classes=listing.classes, splits=splits, skipped=skipped)


@pytest.fixture(scope="session", autouse=True)
def temporaries_and_cache_stay_here(tmp_path_factory):
    """The tests, and the processes they start, write their temporary files (torchrun leaves a
    log folder per launch) and colorize's cache under pytest's temporary folder, which pytest
    clears, not in the system's or the user's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(tmp_path_factory.mktemp("tmp")))
        patch.setenv("COLORIZE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="session")
def shared_tarball() -> Path:
    if not SHARED_TARBALL.is_file():
        pytest.skip(f"the CIFAR-10 copy {SHARED_TARBALL} is not beside the checkout")
    return SHARED_TARBALL


@pytest.fixture(scope="session")
def small_source(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("small") / "images")


@pytest.fixture(scope="session")
def small_dir(tmp_path_factory, small_source) -> Path:
    """A prepared directory of the small synthetic source: 108 / 12 / 33 images."""
    from colorize.data.prepare import prepare

    out = tmp_path_factory.mktemp("small-prepared")
    prepare(str(small_source), out)
    return out


@pytest.fixture(scope="session")
def cifar_dir(tmp_path_factory, shared_tarball) -> Path:
    """The whole shared CIFAR-10 copy, prepared once per test session."""
    out = tmp_path_factory.mktemp("cifar10")
    run_cli("prepare", "--data", shared_tarball, "--out", out)
    return out
