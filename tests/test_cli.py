"""The command line's own checks: arguments refused by name before any work."""
import errno
import os

import pytest
from PIL import Image

from colorize import io
from colorize.cli import main
from colorize.commands import export

COUNTS = [
    ("colorize", "--checkpoint", "run", "photo.jpg", "--out", "out", "--batch-size"),
    ("compare", "run", "--out", "compare.png", "--per-class"),
    ("bench", "loader", "--data", "data", "--batch-size"),
    ("bench", "loader", "--data", "data", "--epochs"),
    ("bench", "train", "--data", "data", "--steps"),
    ("bench", "train", "--data", "data", "--batch-size"),
    ("bench", "prepare", "--images"),
    ("bench", "prepare", "--size"),
    ("bench", "prepare", "--resolutions"),
]


@pytest.mark.parametrize("arguments", COUNTS, ids=lambda arguments: " ".join(arguments[:2] + arguments[-1:]))
@pytest.mark.parametrize("value, message", [("0", "must be at least 1, got 0"),
                                            ("two", "expected a whole number, got 'two'")])
def test_a_count_below_one_is_refused_by_name(arguments, value, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*arguments, value])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"argument {arguments[-1]}: {message}")


def test_the_help_says_what_colorize_does_in_plain_words(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert "Train automatic image colourization networks" in text and "docs/usage.md" in text
    assert "``" not in text  # no markup of docstrings


@pytest.mark.parametrize("arguments", [("compare", "run", "--out"), ("report", "run", "--plot")])
def test_a_picture_not_named_png_is_refused_before_any_work(arguments, capsys):
    with pytest.raises(SystemExit) as stopped:
        main([*arguments, "frontier.jpg"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(
        f"argument {arguments[-1]}: colorize draws PNG pictures: name the file with .png, as frontier.png")


def test_models_list_a_resolution_they_cannot_take(capsys):
    assert main(["list", "--resolution", "0"]) == 0
    assert capsys.readouterr().out.count("[does not take 0x0 images]") >= 3


def test_a_refused_rename_is_named_once_by_the_path_asked_for(tmp_path, monkeypatch, capsys):
    out = tmp_path / "exported"

    def full_disk(*_):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(io.staging_path(out)), None, str(out))

    monkeypatch.setattr(export, "export_run", full_disk)
    assert main(["export", str(tmp_path / "run"), str(out)]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [f"colorize export: error: {out}: No space left on device"]


def test_prepare_counts_what_it_wrote_in_words_that_fit_one_class(tmp_path, capsys):
    source = tmp_path / "photos" / "cats"
    source.mkdir(parents=True)
    for index in range(10):
        Image.new("RGB", (8, 8), (25 * index, 100, 200)).save(source / f"{index}.png")
    assert main(["prepare", "--data", str(tmp_path / "photos"), "--out", str(tmp_path / "out"),
                 "--resolution", "8"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("images of 1 class")
