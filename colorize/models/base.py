"""The model interface: L in, one :class:`~colorize.models.prediction.Prediction` out; and the
figures of a network (parameters, GFLOP per training image)."""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class Colorizer(nn.Module):
    """Base of every network: ``forward(l)`` takes L (N, 1, H, W) in [0, 100] and returns a
    :class:`Prediction`. A network whose resolutions must be multiples of some number says so
    in ``resolution_multiple``."""

    resolution_multiple = 1

    @classmethod
    def from_pretrained(cls, path, device="cpu", trust_code: bool = False) -> "Colorizer":
        """The model saved at ``path`` (``colorize export`` or a run's ``best/``), in eval mode;
        a network from outside colorize is imported only with ``trust_code``."""
        from colorize.models.saved import load_model

        model = load_model(path, device, trust_code=trust_code)
        if not isinstance(model, cls):
            raise TypeError(f"{path} holds a {type(model).__name__}, not a {cls.__name__}")
        return model


def gflop_per_image(model: nn.Module, resolution: int) -> float:
    """Forward and backward GFLOP of one training image, counted by torch on a batch of 4."""
    l = torch.rand(4, 1, resolution, resolution) * 100
    with FlopCounterMode(display=False) as counter:
        prediction = model.train()(l)
        loss = (prediction.ab if prediction.ab is not None else prediction.ab_scores).square().mean()
        if prediction.logits is not None:
            loss = loss + prediction.logits.sum()
        loss.backward()
    return counter.get_total_flops() / 4 / 1e9


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
