"""Random augmentation of training batches: horizontal flips and shifts.

Every random number is drawn from a generator on the batches' device seeded by (seed, epoch,
rank), so the same samples get the same changes with either loader kind and from any resumed
batch, and no step copies random numbers from the host. (Devices differ in their random
streams: a CPU run and a CUDA run draw different changes.)
"""
import numpy as np
import torch
import torch.nn.functional as F

CPU = torch.device("cpu")


def _generator(device: torch.device, seed: int, epoch: int, rank: int, *stream: int) -> torch.Generator:
    state = np.random.SeedSequence([seed, epoch, rank, *stream]).generate_state(1)[0]
    return torch.Generator(device=device).manual_seed(int(state))


def flip_generator(seed: int, epoch: int, rank: int, device: torch.device = CPU) -> torch.Generator:
    """The generator of ``epoch``'s flips: one uniform draw per sample, batch after batch;
    a draw below 0.5 flips the sample left to right."""
    return _generator(device, seed, epoch, rank)


def shift_generator(seed: int, epoch: int, rank: int, device: torch.device = CPU) -> torch.Generator:
    """The generator of ``epoch``'s shifts: per batch, the row offsets of its samples, then
    their column offsets, each uniform in [0, 2 * shift]."""
    return _generator(device, seed, epoch, rank, 1)


def _flip_mask(samples: int, draws: torch.Generator) -> torch.Tensor:
    return torch.rand(samples, generator=draws, device=draws.device) < 0.5


def _shift_offsets(samples: int, most: int, draws: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2 * most + 1, (2, samples), generator=draws, device=draws.device)


def flip(lab: torch.Tensor, draws: torch.Generator) -> torch.Tensor:
    mask = _flip_mask(len(lab), draws).to(lab.device, non_blocking=True)
    return torch.where(mask.view(-1, 1, 1, 1), lab.flip(-1), lab)


def shift(lab: torch.Tensor, most: int, draws: torch.Generator) -> torch.Tensor:
    """Moves each image by up to ``most`` pixels along each axis, mirroring it at the edges:
    the view of the reflect-padded image whose top-left corner is at the drawn offsets."""
    n, channels, height, width = lab.shape
    offsets = _shift_offsets(n, most, draws).to(lab.device, non_blocking=True)
    padded = F.pad(lab, (most, most, most, most), mode="reflect")
    rows = offsets[0].view(n, 1, 1, 1) + torch.arange(height, device=lab.device).view(1, 1, -1, 1)
    lab = padded.gather(2, rows.expand(n, channels, height, padded.shape[3]))
    columns = offsets[1].view(n, 1, 1, 1) + torch.arange(width, device=lab.device).view(1, 1, 1, -1)
    return lab.gather(3, columns.expand(n, channels, height, width))


class Augmentation:
    """The augmentation of one epoch of one process's training batches, batch after batch,
    drawn on ``device``: the device of the batches, so that no draw is copied to them."""

    def __init__(self, hflip: bool, most_shift: int, seed: int, epoch: int, rank: int,
                 device: torch.device = CPU):
        self.flips = flip_generator(seed, epoch, rank, device) if hflip else None
        self.shifts = shift_generator(seed, epoch, rank, device) if most_shift else None
        self.most_shift = most_shift

    def skip(self, batches: int, batch_size: int) -> None:
        """Draw what ``batches`` batches of ``batch_size`` samples would, to go on with the next."""
        for _ in range(batches):
            if self.flips is not None:
                _flip_mask(batch_size, self.flips)
            if self.shifts is not None:
                _shift_offsets(batch_size, self.most_shift, self.shifts)

    def __call__(self, lab: torch.Tensor) -> torch.Tensor:
        if self.flips is not None:
            lab = flip(lab, self.flips)
        if self.shifts is not None:
            lab = shift(lab, self.most_shift, self.shifts)
        return lab
