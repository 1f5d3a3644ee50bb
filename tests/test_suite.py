"""The test suite's own machinery: what `make test` relies on to share work between its workers."""
import subprocess
import sys

GROUPED_MODULE = """
import os
import pytest

pytestmark = pytest.mark.xdist_group("shared")

@pytest.mark.parametrize("index", range(4))
def test_grouped(index):
    with open("workers.txt", "a") as file:
        file.write(f"grouped {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""

LOOSE_MODULE = """
@__import__("pytest").mark.parametrize("index", range(4))
def test_loose(index):
    pass
"""


def test_the_tests_of_one_xdist_group_run_on_one_worker(tmp_path):
    """The slow modules marked ``xdist_group`` build their runs once, in module fixtures, only if
    ``--dist loadgroup`` keeps each group on one worker (pytest 9.2 with pytest-xdist 3.8 does not)."""
    (tmp_path / "test_grouped.py").write_text(GROUPED_MODULE)
    (tmp_path / "test_loose.py").write_text(LOOSE_MODULE)
    result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
                             "--dist", "loadgroup", "--rootdir", str(tmp_path), str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    workers = (tmp_path / "workers.txt").read_text().split("\n")[:-1]
    assert len(workers) == 4 and len(set(workers)) == 1, workers
