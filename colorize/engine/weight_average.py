"""``train.ema``: an exponential moving average of the weights and BatchNorm statistics,
updated after every optimizer step; validation, ``best/`` and the test use it in place of the
trained model. Every process keeps one (the weights it averages are the same on all) and it is
saved in ``last/``.

The first update copies the model; each later one sets average = decay x average +
(1 - decay) x model for every floating-point parameter and buffer, in one foreach launch.
Integer buffers (BatchNorm's ``num_batches_tracked``) are copied. The update count lives on
the model's device and whether the average has begun on the host, so an update never waits
for either (and can be captured in a CUDA graph).
"""
import copy
import itertools
from typing import List, Tuple

import torch
from torch import nn

from colorize.models import Colorizer

MODULE, COUNT = "module.", "n_averaged"


def floats_and_integers(model: nn.Module) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
    """The model's parameters and buffers, floating-point ones first, in a fixed order."""
    floats, integers = [], []
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        (floats if tensor.is_floating_point() else integers).append(tensor.detach())
    return floats, integers


class WeightAverage:
    def __init__(self, model: Colorizer, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.count = torch.zeros((), dtype=torch.long, device=next(model.parameters()).device)
        self.begun = False  # whether an update has happened: the next one averages, not copies
        self._floats, self._integers = floats_and_integers(self.model)  # updated in place, never replaced

    @torch.no_grad()
    def update(self, model: Colorizer) -> None:
        current, current_integers = floats_and_integers(model)
        if self.begun:
            torch._foreach_lerp_(self._floats, current, 1 - self.decay)
        else:
            torch._foreach_copy_(self._floats, current)
            self.begun = True
        if self._integers:
            torch._foreach_copy_(self._integers, current_integers)
        self.count += 1

    def state_dict(self) -> dict:
        """Flat: ``module.<name>`` for the averaged model's tensors and ``n_averaged``."""
        module = {MODULE + name: tensor for name, tensor in self.model.state_dict().items()}
        return module | {COUNT: self.count}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict({name.removeprefix(MODULE): tensor for name, tensor in state.items()
                                    if name != COUNT})
        self.count.copy_(state[COUNT])
        self.begun = bool(state[COUNT])  # saved on the CPU
