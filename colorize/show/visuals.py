"""What a run shows people besides numbers: the colour grid of every epoch (as
``RUN_DIR/grids/epoch_NNN.png`` and in W&B) and, at the end, a W&B table of the test images
colourized worst and best. Main process only, on the loaders the trainer built (with several
processes, this process's share of the val and test splits)."""
from typing import List

from accelerate import Accelerator
from torch import nn

from colorize.config import Config
from colorize.data.loaders import SplitLoader
from colorize.run_dir import GRIDS
from colorize.show import grids
from colorize.show.tracking import RunTracker


class EpochVisuals:
    def __init__(self, config: Config, classes: List[str], accelerator: Accelerator, tracker: RunTracker,
                 val: SplitLoader):
        self.config, self.classes, self.accelerator, self.tracker = config, classes, accelerator, tracker
        self.samples = grids.pick_per_class(val, len(classes), config.tracking.grid_per_class)

    def grid(self, model: nn.Module, epoch: int, step: int) -> None:
        image = grids.epoch_grid(model, self.samples, self.classes, self.accelerator.autocast)
        grids.save_png(image, self.config.run.path / GRIDS / f"epoch_{epoch:03d}.png")
        caption = f"epoch {epoch}: rows grey / prediction / truth; captions: class and mean |ab error|"
        self.tracker.log_image("val/grid", image, caption, step)

    def test_table(self, model: nn.Module, test: SplitLoader, step: int) -> None:
        if not self.tracker.enabled:
            return
        extremes = grids.test_extremes(model, test, self.accelerator.autocast)
        self.tracker.log_table("test/extremes", grids.TABLE_COLUMNS, grids.extremes_table(extremes, self.classes),
                               step)
