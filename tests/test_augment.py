import numpy as np
import pytest
import torch
import torch.nn.functional as F

from colorize.data.augment import Augmentation, flip, flip_generator, shift, shift_generator

DEVICES = [torch.device("cpu")] + ([torch.device("cuda", 0)] if torch.cuda.is_available() else [])
SEED, EPOCH, RANK, MOST = 7, 3, 1, 2


def batches(device, count=4, size=6):
    """``count`` batches of ``size`` distinct (3, 6, 5) images: every flip and shift shows."""
    images = torch.randn(count, size, 3, 6, 5, generator=torch.Generator().manual_seed(0))
    return list(images.to(device))


def cpu_generator(*entropy: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(entropy)).generate_state(1)[0]))


def test_cpu_draws_are_those_of_cpu_generators_seeded_by_seed_epoch_rank():
    flips, shifts = cpu_generator(SEED, EPOCH, RANK), cpu_generator(SEED, EPOCH, RANK, 1)
    augment = Augmentation(True, MOST, SEED, EPOCH, RANK)
    for lab in batches("cpu"):
        n, _, height, width = lab.shape
        flipped = torch.rand(n, generator=flips) < 0.5
        offsets = torch.randint(0, 2 * MOST + 1, (2, n), generator=shifts)
        padded = F.pad(torch.where(flipped.view(-1, 1, 1, 1), lab.flip(-1), lab), (MOST,) * 4, mode="reflect")
        expected = torch.stack([padded[i, :, r:r + height, c:c + width] for i, (r, c) in enumerate(offsets.T)])
        assert torch.equal(augment(lab), expected)
    assert 0 < flipped.sum() < n  # the draws flip some samples and not others


@pytest.mark.parametrize("device", DEVICES, ids=str)
def test_draws_are_made_on_the_batches_device(device):
    augment = Augmentation(True, MOST, SEED, EPOCH, RANK, device=device)
    assert augment.flips.device == augment.shifts.device == device
    flips, shifts = flip_generator(SEED, EPOCH, RANK, device), shift_generator(SEED, EPOCH, RANK, device)
    for lab in batches(device):
        assert torch.equal(augment(lab), shift(flip(lab, flips), MOST, shifts))


@pytest.mark.parametrize("device", DEVICES, ids=str)
@pytest.mark.parametrize("hflip, most", [(True, MOST), (True, 0), (False, MOST)])
def test_skipping_batches_goes_on_with_the_next_batchs_draws(device, hflip, most):
    inputs = batches(device)
    fresh = Augmentation(hflip, most, SEED, EPOCH, RANK, device=device)
    whole = [fresh(lab) for lab in inputs]
    for k in range(len(inputs)):
        resumed = Augmentation(hflip, most, SEED, EPOCH, RANK, device=device)
        resumed.skip(k, len(inputs[k]))
        assert torch.equal(resumed(inputs[k]), whole[k])
    assert not torch.equal(whole[0], inputs[0])
