"""The ab bins, soft-encoding, annealed-mean decoding, the prior and its rebalancing weights."""
import math

import pytest
import torch

from colorize.core.ab_bins import GRID, BinLookup, annealed_mean, gamut_bins, soft_encode
from colorize.core.color import rgb_to_lab
from colorize.data.prior import count_bins, rebalancing_weights, smoothed_prior


@pytest.fixture(scope="module")
def centres():
    return gamut_bins()


def nearest_bin(ab, centres):
    return BinLookup(centres, 1).nearest(ab)[1][:, 0]


def random_colours(count, seed=0):
    rgb = torch.rand(1, 3, 1, count, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return rgb_to_lab(rgb)[:, 1:].float()  # (1, 2, 1, count)


def test_the_bins_are_grid_cells_of_the_srgb_gamut(centres):
    assert 250 <= len(centres) <= 320  # Zhang et al. kept 313 with their gamut computation
    assert torch.equal(centres, torch.round(centres / GRID) * GRID)
    assert len(torch.unique(centres, dim=0)) == len(centres)
    assert (0.0, 0.0) in map(tuple, centres.tolist())  # the greys


def test_every_srgb_colour_is_within_half_a_grid_diagonal_of_a_bin_centre(centres):
    ab = random_colours(20000)
    nearest = centres[nearest_bin(ab, centres)]  # (1, 1, N, 2)
    distance = (nearest.permute(0, 3, 1, 2) - ab).norm(dim=1)
    assert distance.max() <= GRID / 2 * math.sqrt(2) + 1e-4


@pytest.mark.parametrize("count", [1, 5, 8])
def test_the_lookup_finds_the_nearest_bins_of_any_value_as_a_search_of_every_centre_does(centres, count):
    generator = torch.Generator().manual_seed(count)
    inside = random_colours(3000, seed=count)
    anywhere = torch.rand(1, 2, 1, 3000, generator=generator) * 330 - 165  # mostly outside the gamut
    for ab in (inside, anywhere):
        squared, indices = BinLookup(centres, count).nearest(ab)
        assert squared.shape == indices.shape == (1, count, 1, 3000)
        every = torch.cdist(ab[0, :, 0].T.double(), centres.double()).square()
        expected = every.topk(count, dim=1, largest=False).values  # (3000, count), nearest first
        found = indices[0, :, 0].T
        assert torch.allclose(every.gather(1, found), expected)  # the nearest (up to exact ties), in order
        assert torch.allclose(squared[0, :, 0].T.double(), expected, rtol=1e-4, atol=1e-2)
        assert (found.sort(1).values.diff(dim=1) > 0).all()  # distinct bins
        nearest = BinLookup(centres, count).nearest_index(ab)[0, 0]  # by the cell's own bin first
        assert torch.allclose(every.gather(1, nearest[:, None])[:, 0], expected[:, 0])


def test_soft_encoding_spreads_a_colour_over_its_five_nearest_bins(centres):
    lookup = BinLookup(centres)
    ab = random_colours(500, seed=1)
    weights, indices = soft_encode(ab, lookup)
    assert weights.shape == indices.shape == (1, 5, 1, 500)
    assert torch.allclose(weights.sum(1), torch.ones(1, 1, 500))
    assert (weights[:, :-1] >= weights[:, 1:]).all()  # nearer bins weigh more
    on_centre = centres[7].view(1, 2, 1, 1)
    weights, indices = soft_encode(on_centre, lookup)
    assert indices[0, 0, 0, 0] == 7 and weights[0, 0, 0, 0] > 0.5


def test_annealed_mean_is_the_mean_at_one_and_the_mode_near_zero(centres):
    scores = torch.randn(2, len(centres), 3, 3, generator=torch.Generator().manual_seed(0))
    scores[:, 5] += 10  # one bin most likely everywhere
    mean = torch.einsum("nqhw,qc->nchw", scores.softmax(1), centres)
    assert torch.allclose(annealed_mean(scores, centres, 1.0), mean, atol=1e-4)
    mode = annealed_mean(scores, centres, 0.01)
    assert torch.allclose(mode, centres[5].view(1, 2, 1, 1).expand_as(mode), atol=1e-3)
    sharper = annealed_mean(scores, centres, 0.38)
    assert sharper.norm(dim=1).mean() > mean.norm(dim=1).mean()  # lower T, more saturated


def test_the_prior_weights_rare_colours_up_with_mean_one_under_the_prior(centres):
    ab = torch.cat([torch.zeros(1, 2, 1, 900), centres[40].view(1, 2, 1, 1).expand(1, 2, 1, 100)], dim=3)
    counts = count_bins([ab], BinLookup(centres, 1))
    assert counts.sum() == 1000 and counts.max() == 900
    prior = smoothed_prior(counts, centres)
    grey, rare = nearest_bin(torch.zeros(1, 2, 1, 1), centres).item(), 40
    assert prior.prior.sum().item() == pytest.approx(1.0)
    assert prior.prior[grey] < 0.9  # smoothed onto the neighbours
    spread = {mix: rebalancing_weights(prior.prior, mix) for mix in (0.5, 0.8, 1.0)}
    assert (prior.prior * spread[0.5]).sum().item() == pytest.approx(1.0, rel=1e-5)
    assert spread[0.5][grey] < spread[0.5][rare] < spread[0.5].max()
    assert spread[0.8][rare] / spread[0.8][grey] < spread[0.5][rare] / spread[0.5][grey]
    assert torch.allclose(spread[1.0], torch.ones(len(centres)))  # every colour alike
