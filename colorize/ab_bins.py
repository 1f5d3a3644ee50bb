"""Quantised ab colours (Zhang, Isola and Efros, "Colorful Image Colorization", 2016): the bins
of a 10-unit ab grid that sRGB colours fall into, soft-encoding of true ab values onto their
nearest bins, and annealed-mean decoding of bin scores. Pure tensor code on any device."""
import functools

import torch

from colorize.color import rgb_to_lab

GRID = 10.0  # ab units between bin centres
NEIGHBOURS = 5  # bins a true ab value is spread over
SIGMA = 5.0  # ab units, of the Gaussian that spreads it
_REACH = 16  # grid steps from 0 that cover every ab value of interest (|a|, |b| of sRGB < 130)


@functools.lru_cache(maxsize=None)
def _gamut_bins(levels: int) -> torch.Tensor:
    steps = torch.linspace(0, 1, levels)
    green, blue = torch.meshgrid(steps, steps, indexing="ij")
    hit = torch.zeros(2 * _REACH + 1, 2 * _REACH + 1, dtype=torch.bool)
    for red in steps:  # a plane of the RGB cube at a time
        rgb = torch.stack((torch.full_like(green, red.item()), green, blue)).unsqueeze(0)
        cell = torch.round(rgb_to_lab(rgb)[0, 1:] / GRID).long() + _REACH
        hit[cell[0].flatten(), cell[1].flatten()] = True
    return (hit.nonzero() - _REACH).float() * GRID


def gamut_bins(levels: int = 128) -> torch.Tensor:
    """(Q, 2) centres of the grid cells (multiples of ``GRID``) that some sRGB colour falls into,
    found from ``levels`` values per RGB channel; rows sorted by a, then b."""
    return _gamut_bins(levels).clone()


def nearest_bins(ab: torch.Tensor, centres: torch.Tensor, count: int = NEIGHBOURS):
    """Squared distances and indices of the ``count`` nearest bin centres of each ab value:
    ``ab`` (N, 2, H, W) -> two (N, count, H, W) tensors."""
    points = ab.float().permute(0, 2, 3, 1).reshape(-1, 2)
    squared = (points.square().sum(1, keepdim=True) - 2 * points @ centres.T
               + centres.square().sum(1)).clamp_min(0)
    distances, indices = squared.topk(count, dim=1, largest=False)
    n, _, h, w = ab.shape
    shape = (n, h, w, count)
    return distances.view(shape).permute(0, 3, 1, 2), indices.view(shape).permute(0, 3, 1, 2)


def nearest_bin(ab: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """Index of the nearest bin centre of each ab value: (N, 2, H, W) -> (N, H, W). A value
    whose grid cell is a bin belongs to that bin (the bins are cells of one grid); the rare
    others are compared with every centre."""
    table = torch.full((2 * _REACH + 1, 2 * _REACH + 1), -1, dtype=torch.long, device=ab.device)
    table[tuple((centres / GRID).round().long().T.to(ab.device) + _REACH)] = torch.arange(len(centres), device=ab.device)
    cell = (ab.float() / GRID).round().long().clamp(-_REACH, _REACH) + _REACH
    index = table[cell[:, 0], cell[:, 1]]
    outside = index < 0
    if outside.any():
        index[outside] = nearest_bins(ab.permute(0, 2, 3, 1)[outside].T[None, :, :, None], centres, 1)[1].flatten()
    return index


def soft_encode(ab: torch.Tensor, centres: torch.Tensor, sigma: float = SIGMA,
                count: int = NEIGHBOURS):
    """Each true ab value as weights on its ``count`` nearest bins (a Gaussian of ``sigma`` of
    the distance, summing to 1): (weights, indices), both (N, count, H, W)."""
    squared, indices = nearest_bins(ab, centres, count)
    return torch.softmax(-squared / (2 * sigma**2), dim=1), indices


def annealed_mean(scores: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """Bin scores (N, Q, H, W), as logits, -> ab (N, 2, H, W): the mean of the bin centres under
    the distribution softmax(scores / temperature). T = 1 is the mean, T -> 0 the mode."""
    if temperature <= 0:
        raise ValueError(f"the temperature must be positive, got {temperature}")
    probabilities = torch.softmax(scores.float() / temperature, dim=1)
    return torch.einsum("nqhw,qc->nchw", probabilities, centres.to(probabilities))
