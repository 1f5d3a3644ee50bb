"""colorize report: runs as a Markdown table, seeds of one recipe in one row."""
import json
import shutil
import statistics

import pytest
from conftest import REPO, run_cli
from PIL import Image

from colorize.show import grids

# one pytest worker runs the module, so its tiny runs (a module fixture) train once
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("report")]


def tiny_run(data_dir, run_dir, *overrides):
    run_cli("train", "--config", REPO / "configs" / "smoke.yaml", f"data.dir={data_dir}", f"run.dir={run_dir}",
            "data.train_limit=256", "data.eval_limit=128", "train.epochs=1", "model.width=8", *overrides)
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def tiny_runs(cifar_dir, tmp_path_factory):
    """Two seeds of one tiny recipe and a wider one, trained once for this module's tests."""
    root = tmp_path_factory.mktemp("runs")
    runs = {f"tiny-s{seed}": (f"run.name=tiny-s{seed}", f"train.seed={seed}") for seed in (0, 1)}
    runs["wider"] = ("run.name=wider", "model.width=16")
    return root, {name: tiny_run(cifar_dir, root / name, *overrides) for name, overrides in runs.items()}


def test_seeds_of_a_recipe_are_one_row_with_mean_and_spread(tiny_runs):
    root, metrics = tiny_runs
    seeds, other = [metrics["tiny-s0"], metrics["tiny-s1"]], metrics["wider"]
    table = run_cli("report", root / "tiny-s0", root / "tiny-s1", root / "wider",
                    root / "wider" / ".." / "tiny-s1").stdout.splitlines()  # a run given twice counts once
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header[:4] == ["recipe", "network", "parameters", "GFLOP/image"] and "test ab L1" in header
    assert len(table) == 4  # header, rule, two recipes
    tiny = dict(zip(header, (cell.strip() for cell in table[2].strip("|").split("|"))))
    l1 = [m["test"]["ab_l1"] for m in seeds]
    assert tiny["recipe"] == "tiny" and tiny["seeds"] == "0, 1" and tiny["network"].startswith("fusion, width=8")
    assert tiny["test ab L1"] == f"{statistics.mean(l1):.3f} +- {statistics.stdev(l1):.3f}"
    precision = "fp32" if seeds[0]["mixed_precision"] == "no" else seeds[0]["mixed_precision"]
    assert tiny["machine"] == f"cpu ({seeds[0]['cpu']}), 1 process, {precision}"
    wider = dict(zip(header, (cell.strip() for cell in table[3].strip("|").split("|"))))
    assert wider["recipe"] == "wider" and wider["test ab L1"] == f"{other['test']['ab_l1']:.3f}"
    assert int(wider["parameters"].replace(",", "")) > int(tiny["parameters"].replace(",", ""))


def test_the_test_metrics_hold_each_classs_figures_which_add_up_to_the_whole(tiny_runs):
    test = tiny_runs[1]["tiny-s0"]["test"]
    per_class = test["per_class"]
    assert len(per_class) == 10 and sum(c["images"] for c in per_class.values()) == test["images"] == 128
    weighted = sum(c["ab_l1"] * c["images"] for c in per_class.values()) / test["images"]
    assert weighted == pytest.approx(test["ab_l1"], rel=1e-9)
    assert len({round(c["ab_l1"], 6) for c in per_class.values()}) > 1


def test_the_per_class_table_has_a_row_per_class_and_columns_per_recipe(tiny_runs):
    root, metrics = tiny_runs
    table = run_cli("report", "--per-class", root / "tiny-s0", root / "tiny-s1", root / "wider").stdout.splitlines()
    header = [cell.strip() for cell in table[0].strip("|").split("|")]
    assert header == ["class", "tiny: ab L1", "tiny: colourfulness", "wider: ab L1", "wider: colourfulness"]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in table[2:]]
    assert len(rows) == 10
    seeds = [metrics[f"tiny-s{seed}"]["test"]["per_class"] for seed in (0, 1)]
    hardest = max(seeds[0], key=lambda name: statistics.mean(s[name]["ab_l1"] for s in seeds))
    assert rows[0][0] == hardest
    l1 = [s[hardest]["ab_l1"] for s in seeds]
    assert rows[0][1] == f"{statistics.mean(l1):.3f} +- {statistics.stdev(l1):.3f}"
    assert rows[0][3] == f"{metrics['wider']['test']['per_class'][hardest]['ab_l1']:.3f}"


def test_the_frontier_plot_is_written(tiny_runs, tmp_path):
    root, _ = tiny_runs
    out = tmp_path / "plots" / "frontier.png"
    result = run_cli("report", root / "tiny-s0", root / "tiny-s1", root / "wider", "--plot", out)
    assert f"wrote {out}" in result.stdout and "| tiny |" in result.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > 500
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
    assert colours is not None and len(colours) > 20  # axes, labels and coloured markers, not a blank page
    assert list(out.parent.iterdir()) == [out]  # no temporary left beside it


def test_a_run_without_test_metrics_is_named(tmp_path):
    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "config.yaml").write_text("run:\n  name: unfinished\n")
    result = run_cli("report", run, check=False)
    assert result.returncode == 1 and "has no test metrics yet" in result.stderr and "Traceback" not in result.stderr


def test_a_run_whose_metrics_lack_a_figure_is_refused_by_name(tiny_runs, tmp_path):
    root, _ = tiny_runs
    run = tmp_path / "other"
    shutil.copytree(root / "tiny-s0", run)
    metrics = json.loads((run / "metrics.json").read_text())
    del metrics["test"]["ab_auc"]
    (run / "metrics.json").write_text(json.dumps(metrics))
    result = run_cli("report", run, check=False)
    assert result.returncode == 1 and "metrics.json lacks 'ab_auc'" in result.stderr
    assert "train the run again" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command, content, message", [
    (["report", "{run}"], '{"test": ', "is not valid JSON (Expecting value"),
    (["report", "{run}"], "[]", "is not a JSON object (it holds an array)"),
    (["export", "{run}", "{run}-exported"], '{"test": ', "is not valid JSON"),
    (["train", "--resume", "{run}"], '{"test": ', "is not valid JSON"),
])
def test_a_damaged_metrics_file_is_named_with_what_to_do(tiny_runs, tmp_path, command, content, message):
    root, _ = tiny_runs
    run = tmp_path / "damaged"
    shutil.copytree(root / "tiny-s0", run)
    (run / "metrics.json").write_text(content)
    result = run_cli(*(part.format(run=run) for part in command), check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert f"{run / 'metrics.json'} {message}" in result.stderr
    assert f"colorize train --resume {run} to write it again" in result.stderr


def test_compare_draws_every_run_on_the_same_validation_images(tiny_runs, tmp_path):
    root, _ = tiny_runs
    out = tmp_path / "compare.png"
    run_cli("compare", root / "tiny-s0", root / "wider", "--out", out, "--per-class", "2")
    image = Image.open(out)
    rows = ["grey", "tiny-s0", "wider", "true"]
    assert image.size == grids.grid_size(20, 32, rows=rows)
    namesake = tmp_path / "namesake"  # another run of the same run.name
    shutil.copytree(root / "tiny-s0", namesake)
    run_cli("compare", root / "tiny-s0", namesake, "--out", out, "--per-class", "2")
    rows = ["grey", f"tiny-s0 ({root / 'tiny-s0'})", f"tiny-s0 ({namesake})", "true"]
    assert Image.open(out).size == grids.grid_size(20, 32, rows=rows)
    result = run_cli("compare", root / "tiny-s0", "--out", tmp_path / "t.png", "--temperatures", "0.5", check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr and not (tmp_path / "t.png").exists()
    assert f"--temperatures applies to networks with a bin head (model.head=bins); none of {root / 'tiny-s0'} has" \
        in result.stderr
