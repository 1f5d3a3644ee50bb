"""Quantised ab colours (Zhang, Isola and Efros, "Colorful Image Colorization", 2016): the bins
of a 10-unit ab grid that sRGB colours fall into, soft-encoding of true ab values onto their
nearest bins, and annealed-mean decoding of bin scores. Pure tensor code on any device."""
import functools

import torch

from colorize.core.color import rgb_to_lab

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


class BinLookup:
    """The ``count`` nearest bins of ab values, exactly and without comparing every centre: a
    table gives, for each grid cell, the few bins that can be among the ``count`` nearest of a
    value in that cell (those whose nearest point of the cell is no farther than the
    ``count``-th smallest farthest point). Exact for |a|, |b| up to 165 ab units, which holds
    every sRGB colour."""

    def __init__(self, centres: torch.Tensor, count: int = NEIGHBOURS):
        self.count, self.bins = count, len(centres)
        side = torch.arange(-_REACH, _REACH + 1, device=centres.device, dtype=torch.float32)
        cells = torch.cartesian_prod(side, side)  # in grid steps, row-major
        offsets = (centres.float() / GRID)[None] - cells[:, None]  # (cells, bins, 2)
        closest = (offsets.abs() - 0.5).clamp_min(0).square().sum(-1)
        farthest = (offsets.abs() + 0.5).square().sum(-1)
        bound = farthest.kthvalue(count, dim=1, keepdim=True).values
        possible = closest <= bound
        order = possible.to(torch.uint8).argsort(dim=1, descending=True, stable=True)[:, :int(possible.sum(1).max())]
        possible = possible.gather(1, order)
        self.candidates = torch.where(possible, order, 0)  # (cells, K) bin indices
        # their a and b, infinitely far where a cell has fewer than K candidates
        self.a, self.b = (torch.where(possible, centres.float()[order, axis], float("inf")) for axis in (0, 1))
        self.own = torch.full((len(cells),), -1, dtype=torch.long, device=centres.device)  # each cell's bin
        self.own[self._cells(*centres.float().unbind(1))] = torch.arange(len(centres), device=centres.device)

    @staticmethod
    def _cells(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """The table row of the grid cell each (a, b) value rounds to."""
        cell_a, cell_b = ((values / GRID).round().long().clamp(-_REACH, _REACH) + _REACH for values in (a, b))
        return cell_a * (2 * _REACH + 1) + cell_b

    def nearest(self, ab: torch.Tensor):
        """Squared distances and indices of the nearest bins of each value, nearest first:
        ``ab`` (N, 2, H, W) -> two (N, count, H, W) tensors."""
        n, _, h, w = ab.shape
        a, b = ab.float().permute(0, 2, 3, 1).reshape(-1, 2).unbind(1)
        cell = self._cells(a, b)
        squared = ((a[:, None] - self.a.index_select(0, cell)).square()
                   + (b[:, None] - self.b.index_select(0, cell)).square())
        distances, which = squared.topk(self.count, dim=1, largest=False)
        indices = self.candidates.index_select(0, cell).gather(1, which)
        shape = (n, h, w, self.count)
        return distances.view(shape).permute(0, 3, 1, 2), indices.view(shape).permute(0, 3, 1, 2)

    def nearest_index(self, ab: torch.Tensor) -> torch.Tensor:
        """The index of the nearest bin of each value, (N, 2, H, W) -> (N, H, W): the bin of the
        cell the value rounds to (the nearest grid point), searched for only where that cell
        has no bin. Far faster than :meth:`nearest` for colours, which almost all have one."""
        index = self.own[self._cells(ab[:, 0], ab[:, 1])]
        missing = index < 0
        if missing.any():  # on the CPU, in data preparation
            outside = ab.permute(0, 2, 3, 1)[missing].T[None, :, None, :]  # (1, 2, 1, M)
            index[missing] = self.nearest(outside)[1][0, 0, 0]
        return index


def soft_encode(ab: torch.Tensor, lookup: BinLookup, sigma: float = SIGMA):
    """Each true ab value as weights on its ``lookup.count`` nearest bins (a Gaussian of
    ``sigma`` of the distance, summing to 1): (weights, indices), both (N, count, H, W)."""
    squared, indices = lookup.nearest(ab)
    return torch.softmax(-squared / (2 * sigma**2), dim=1), indices


def annealed_mean(scores: torch.Tensor, centres: torch.Tensor, temperature: float) -> torch.Tensor:
    """Bin scores (N, Q, H, W), as logits, -> ab (N, 2, H, W): the mean of the bin centres under
    the distribution softmax(scores / temperature). T = 1 is the mean, T -> 0 the mode."""
    probabilities = torch.softmax(scores.float().permute(0, 2, 3, 1) / temperature, dim=-1)  # bins last
    return (probabilities @ centres.to(probabilities)).permute(0, 3, 1, 2)
