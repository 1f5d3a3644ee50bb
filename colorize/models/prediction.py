"""What every network returns: one typed :class:`Prediction`, consumed by training,
evaluation, drawing and inference alike."""
from typing import NamedTuple, Optional

import torch


class Prediction(NamedTuple):
    """What a colourization network predicts for a batch (a tuple, so DDP and Accelerate's
    precision wrappers pass it through)."""

    ab: Optional[torch.Tensor]  # (N, 2, H, W) in ab units; None from a bin head in training mode
    logits: Optional[torch.Tensor] = None  # (N, classes) class scores, for networks with a class head
    ab_scores: Optional[torch.Tensor] = None  # (N, bins, H/2, W/2) ab-bin scores, for networks with a bin head


def average_with_mirror(prediction: Prediction) -> Prediction:
    """The prediction for a batch of images followed by their mirror images, as the prediction
    for the images alone: each output the mean of an image's and its mirror image's."""
    def average(output: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        if output is None:
            return None
        direct, mirrored = output.chunk(2)
        return (direct + (mirrored.flip(-1) if mirrored.dim() == 4 else mirrored)) / 2

    return Prediction(*(average(output) for output in prediction))
