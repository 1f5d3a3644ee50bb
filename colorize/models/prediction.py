"""What every network returns: one typed :class:`Prediction`, consumed by training,
evaluation, drawing and inference alike."""
from typing import Callable, NamedTuple, Optional

import torch
from torch.nn import functional as F


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


ONE_PIXEL_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))  # (rows, columns) a shifted view moves the image by


def average_views(predict: Callable[[torch.Tensor], Prediction], l: torch.Tensor, flip: bool,
                  shift: bool) -> Prediction:
    """``predict``'s prediction for the images ``l`` (N, 1, H, W) averaged over views of them:
    with ``flip``, each view and its mirror image (in one batch); with ``shift``, also the images
    moved by one pixel up, down, left and right (mirrored at the edges), each pixel's ab the
    mean over the views that hold it. Bin scores are the unshifted view's."""
    def view(images: torch.Tensor) -> Prediction:
        return average_with_mirror(predict(torch.cat((images, images.flip(-1))))) if flip else predict(images)

    centre = view(l)
    if not shift:
        return centre
    height, width = l.shape[-2:]
    padded = F.pad(l, (1, 1, 1, 1), mode="reflect")
    # sums in float32, whatever precision the network computes in
    ab, count = centre.ab.to(torch.float32, copy=True), torch.ones(1, 1, height, width, device=l.device)
    logits = None if centre.logits is None else centre.logits.to(torch.float32, copy=True)
    for rows, columns in ONE_PIXEL_SHIFTS:
        moved = view(padded[..., 1 + rows:1 + rows + height, 1 + columns:1 + columns + width])
        # moved[y, x] is the prediction for pixel (y + rows, x + columns), where that is in the image
        pixels = (..., slice(max(rows, 0), height + min(rows, 0)), slice(max(columns, 0), width + min(columns, 0)))
        of_moved = (..., slice(max(-rows, 0), height - max(rows, 0)), slice(max(-columns, 0), width - max(columns, 0)))
        ab[pixels] += moved.ab[of_moved]
        count[pixels] += 1
        if logits is not None:
            logits += moved.logits
    return Prediction(ab / count, None if logits is None else logits / (1 + len(ONE_PIXEL_SHIFTS)), centre.ab_scores)
