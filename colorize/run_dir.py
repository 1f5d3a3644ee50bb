"""The files of a run directory, named in one place::

    RUN_DIR/config.yaml    the resolved settings
    RUN_DIR/metrics.json   per-epoch history, test metrics, machine and speed
    RUN_DIR/last/          the full training state, to resume from
    RUN_DIR/best/          the best model, a saved model (colorize.models.saved)
    RUN_DIR/grids/         the colour grid of every epoch
"""
from pathlib import Path
from typing import Dict, List

from colorize.errors import ColorizeError
from colorize.io import previous_version, read_json_object

CONFIG, METRICS, LAST, BEST, GRIDS = "config.yaml", "metrics.json", "last", "best", "grids"


class NotARunDirectory(ColorizeError):
    """A path given as a run directory is not one."""


def check_run_dir(path) -> Path:
    """``path`` as a Path, if it holds a run's ``config.yaml``."""
    path = Path(path)
    if not (path / CONFIG).is_file():
        raise NotARunDirectory(f"{path} is not a run directory (it has no {CONFIG}); runs are made by "
                               f"colorize train, in runs/<run.name> unless run.dir says otherwise")
    return path


def distinct_runs(run_dirs) -> List[Path]:
    """``run_dirs`` as Paths, each run once (by where it is), as it was first written."""
    distinct: Dict[Path, Path] = {}
    for run_dir in run_dirs:
        distinct.setdefault(Path(run_dir).resolve(), Path(run_dir))
    return list(distinct.values())


def model_folder(path) -> Path:
    """The saved model a path names: a run directory's ``best/`` (or, while a save replaces it,
    the complete previous version), or the path itself."""
    path = Path(path)
    if not ((path / CONFIG).is_file() or (path / BEST).is_dir()):
        return path
    best = path / BEST
    return best if best.is_dir() or not previous_version(best).is_dir() else previous_version(best)


def read_metrics(run_dir: Path) -> dict:
    """The run's ``metrics.json``, or ``{}`` before training has written it."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return {}
    try:
        return read_json_object(path)
    except ValueError as error:
        raise ColorizeError(f"{error}; remove it and run colorize train --resume {run_dir} to write it again") \
            from None
