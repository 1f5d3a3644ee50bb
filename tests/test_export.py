"""``colorize export``: a run's best model as a folder of its own, never over anything else."""
import json
from pathlib import Path

import pytest
from conftest import CLASSES, run_cli

from colorize.commands.export import export_run
from colorize.errors import ColorizeError
from colorize.models import create_model
from colorize.models.fusion import FusionSettings
from colorize.models.saved import load_model, save_model


@pytest.fixture
def run_dir(tmp_path):
    """runs/r: a run directory whose best model is a small untrained network."""
    run = tmp_path / "runs" / "r"
    settings = FusionSettings(width=8)
    save_model(create_model("fusion", settings, len(CLASSES)), run / "best", list(CLASSES))
    (run / "config.yaml").write_text("run: {name: r}\n")
    return run


def tree(folder):
    """Every file under ``folder`` and its content."""
    return {path.relative_to(folder): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_a_folder_holding_a_users_file_is_refused_and_kept(run_dir, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    result = run_cli("export", run_dir, out, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert f"{out} already exists and is not an earlier export" in result.stderr
    assert tree(out) == {Path("notes.txt"): b"my notes"}


def test_the_runs_folder_as_out_is_refused_and_kept(run_dir):
    runs = run_dir.parent
    before = tree(runs)
    result = run_cli("export", run_dir, runs, check=False)
    assert result.returncode == 1 and f"{runs} contains the run directory {run_dir}" in result.stderr
    assert tree(runs) == before


@pytest.mark.parametrize("inside", ["", "best", "exported"])
def test_the_run_directory_and_folders_inside_it_are_refused(run_dir, inside):
    before = tree(run_dir)
    with pytest.raises(ColorizeError, match="the run directory .*; export to a folder outside it"):
        export_run(run_dir, run_dir / inside, replace=True)
    assert tree(run_dir) == before


def test_an_earlier_export_is_replaced_only_with_replace(run_dir, tmp_path):
    out = tmp_path / "exported"
    run_cli("export", run_dir, out)
    assert load_model(out).classes == list(CLASSES)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "classes": ["x", "y", "z"]}))
    result = run_cli("export", run_dir, out, check=False)
    assert result.returncode == 1 and "already holds a saved model; pass --replace" in result.stderr
    assert load_model(out).classes == ["x", "y", "z"]
    run_cli("export", run_dir, out, "--replace")
    assert load_model(out).classes == list(CLASSES)
    (out / "notes.txt").write_text("mine")  # an export with a file of the user's is no longer only an export
    with pytest.raises(ColorizeError, match="is not an earlier export"):
        export_run(run_dir, out, replace=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_an_out_folder_that_cannot_be_made_is_named_as_given(run_dir, tmp_path):
    (tmp_path / "file").touch()
    out = tmp_path / "file" / "exported"
    result = run_cli("export", run_dir, out, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == \
        [f"colorize export: error: {out}: a part of this path is a file, not a folder"]
