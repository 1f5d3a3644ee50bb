"""Training objective: Huber loss on ab plus a weighted cross-entropy on the class."""
from typing import Dict

import torch
from torch.nn import functional as F

from colorize.config import LossConfig


def colorization_loss(ab_pred: torch.Tensor, ab_true: torch.Tensor, logits: torch.Tensor,
                      labels: torch.Tensor, config: LossConfig) -> Dict[str, torch.Tensor]:
    """``{"total", "color", "class"}``: Huber (delta in ab units) averaged over every ab value,
    cross-entropy averaged over images, total = color + class_weight * class. Computed in float32."""
    color = F.huber_loss(ab_pred.float(), ab_true.float(), delta=config.huber_delta)
    classification = F.cross_entropy(logits.float(), labels)
    return {"total": color + config.class_weight * classification, "color": color, "class": classification}
