"""Training objectives by name (``loss.name``). A loss is built from its settings and called
with the model's :class:`Prediction` and the batch; it returns named parts, ``total`` being
the one optimized. The trainer logs every part as ``loss_<part>`` (``total`` as ``loss``)."""
from dataclasses import dataclass
from typing import Dict

import torch
from torch.nn import functional as F

from colorize.errors import ConfigError, check_positive
from colorize.models.base import Prediction
from colorize.registry import LOSSES


@dataclass
class HuberClassSettings:
    huber_delta: float = 1.0  # in ab units
    class_weight: float = 1.0

    def __post_init__(self):
        check_positive("loss.huber_delta", self.huber_delta)
        if self.class_weight < 0:
            raise ConfigError(f"loss.class_weight must be >= 0, got {self.class_weight}")


@LOSSES.register("huber_class", HuberClassSettings)
class HuberClassLoss:
    """The report's objective: Huber on every ab value plus ``class_weight`` x cross-entropy of
    the class, in float32."""

    def __init__(self, settings: HuberClassSettings):
        self.settings = settings

    def __call__(self, prediction: Prediction, batch) -> Dict[str, torch.Tensor]:
        color = F.huber_loss(prediction.ab.float(), batch.ab.float(), delta=self.settings.huber_delta)
        classification = F.cross_entropy(prediction.logits.float(), batch.label)
        return {"total": color + self.settings.class_weight * classification, "color": color,
                "class": classification}
