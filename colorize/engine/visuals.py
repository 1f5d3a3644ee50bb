"""What a run shows people besides numbers: the colour grid of every epoch (as
``RUN_DIR/grids/epoch_NNN.png`` and in W&B) and, at the end, a W&B table of the test images
colourized worst and best. Main process only."""
from typing import List

import numpy as np
from accelerate import Accelerator
from PIL import Image
from torch import nn

from colorize import grids
from colorize.config import Config
from colorize.data.loaders import build_loaders
from colorize.tracking import RunTracker

TABLE_COLUMNS = ["image (grey | pred | true)", "class", "predicted", "error", "rank"]


def triptych(l, ab_pred, ab_true, scale: int = 4) -> Image.Image:
    """One sample as grey input, prediction and truth side by side."""
    tiles = [grids.to_uint8(l[None], ab[None])[0] for ab in (ab_pred * 0, ab_pred, ab_true)]
    strip = Image.fromarray(np.concatenate(tiles, axis=1))
    return strip.resize((strip.width * scale, strip.height * scale), Image.Resampling.NEAREST)


class EpochVisuals:
    def __init__(self, config: Config, classes: List[str], accelerator: Accelerator, tracker: RunTracker):
        self.config, self.classes, self.accelerator, self.tracker = config, classes, accelerator, tracker
        val = self._single_process_loader("val")
        self.samples = grids.pick_per_class(val, len(classes), config.tracking.grid_per_class)

    def _single_process_loader(self, split: str):
        return build_loaders(self.config.data, device=self.accelerator.device, splits=(split,))[split]

    def grid(self, model: nn.Module, epoch: int, step: int) -> None:
        image = grids.epoch_grid(model, self.samples, self.classes, self.accelerator.autocast)
        grids.save_png(image, self.config.run.path / "grids" / f"epoch_{epoch:03d}.png")
        caption = f"epoch {epoch}: rows grey / prediction / truth; captions: class and mean |ab error|"
        self.tracker.log_image("val/grid", image, caption, step)

    def test_table(self, model: nn.Module, step: int) -> None:
        if not self.tracker.enabled:
            return
        extremes = grids.test_extremes(model, self._single_process_loader("test"), self.accelerator.autocast)
        rows = []
        for rank, kept in (("worst", extremes.worst), ("best", extremes.best)):
            for i in range(len(kept["error"])):
                rows.append([triptych(kept["l"][i], kept["ab_pred"][i], kept["ab"][i]),
                             self.classes[int(kept["label"][i])], self.classes[int(kept["predicted"][i])],
                             float(kept["error"][i]), rank])
        self.tracker.log_table("test/extremes", TABLE_COLUMNS, rows, step)
