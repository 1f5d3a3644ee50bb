"""Training objectives by name (``loss.name``). A loss is built from its settings (and, if its
class sets ``needs_prior``, the training split's ab prior) and called with the model's
:class:`Prediction` and the batch; it returns named parts, ``total`` being the one optimized.
The trainer logs every part as ``loss_<part>`` (``total`` as ``loss``). A loss class names the
``model.head`` whose output it scores in ``head``."""
from dataclasses import dataclass
from typing import Dict

import torch
from torch.nn import functional as F

from colorize.core.ab_bins import BinLookup, soft_encode
from colorize.data.prior import MIX, AbPrior, rebalancing_weights
from colorize.errors import ConfigError, check_not_negative, check_positive
from colorize.models.prediction import Prediction
from colorize.registry import Registry

LOSSES = Registry("loss", "loss")


@dataclass
class HuberClassSettings:
    huber_delta: float = 1.0  # in ab units
    class_weight: float = 1.0

    def __post_init__(self):
        check_positive("loss.huber_delta", self.huber_delta)
        check_not_negative("loss.class_weight", self.class_weight, "0: colour only")


@LOSSES.register("huber_class", HuberClassSettings)
class HuberClassLoss:
    """The report's objective: Huber on every ab value plus ``class_weight`` x cross-entropy of
    the class, in float32."""

    head = "ab"

    def __init__(self, settings: HuberClassSettings):
        self.settings = settings

    def __call__(self, prediction: Prediction, batch) -> Dict[str, torch.Tensor]:
        color = F.huber_loss(prediction.ab.float(), batch.ab.float(), delta=self.settings.huber_delta)
        classification = F.cross_entropy(prediction.logits.float(), batch.label)
        return {"total": color + self.settings.class_weight * classification, "color": color,
                "class": classification}


@dataclass
class BinsClassSettings:
    class_weight: float = 1.0
    rebalance: bool = True  # weight each pixel by the rarity of its colour's bin
    rebalance_mix: float = MIX  # lambda: the uniform's share mixed into the prior; towards 1, rare colours weigh less

    def __post_init__(self):
        check_not_negative("loss.class_weight", self.class_weight, "0: colour only")
        if not 0 < self.rebalance_mix <= 1:
            raise ConfigError(f"loss.rebalance_mix must be in (0, 1] (1 weighs every colour alike), "
                              f"got {self.rebalance_mix}")


@LOSSES.register("bins_class", BinsClassSettings)
class RebalancedBinLoss:
    """Zhang et al.'s objective for networks with a bin head (``model.head=bins``): the
    cross-entropy of the bin scores against each true ab value soft-encoded on its nearest bins,
    each pixel weighted by its nearest bin's rebalancing weight (from the prior mixed with
    ``rebalance_mix`` of the uniform); plus ``class_weight`` x the
    cross-entropy of the class. In float32."""

    head = "bins"
    needs_prior = True

    def __init__(self, settings: BinsClassSettings, prior: AbPrior):
        self.settings, self.lookup = settings, BinLookup(prior.centres)
        self.weights = rebalancing_weights(prior.prior, settings.rebalance_mix) if settings.rebalance else None

    def __call__(self, prediction: Prediction, batch) -> Dict[str, torch.Tensor]:
        targets, bins = soft_encode(batch.ab, self.lookup)
        if self.weights is not None:
            targets = targets * self.weights[bins[:, :1]]
        # The scores may be coarser than the image by a factor f: each score then stands for f x f
        # pixels, whose targets are gathered beside each other (channels) at the scores' resolution.
        factor = batch.ab.shape[-1] // prediction.ab_scores.shape[-1]
        targets, bins = F.pixel_unshuffle(targets, factor), F.pixel_unshuffle(bins, factor)
        bins_last = (0, 2, 3, 1)  # the layout in which the network's channels-last scores are contiguous
        log_probabilities = F.log_softmax(prediction.ab_scores.float().permute(bins_last), dim=-1)
        picked = log_probabilities.gather(-1, bins.permute(bins_last))
        pixels = targets.shape[0] * batch.ab.shape[-2] * batch.ab.shape[-1]
        color = -(targets.permute(bins_last) * picked).sum() / pixels
        classification = F.cross_entropy(prediction.logits.float(), batch.label)
        return {"total": color + self.settings.class_weight * classification, "color": color,
                "class": classification}
