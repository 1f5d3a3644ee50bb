"""``train.ema``: an exponential moving average of the weights and BatchNorm statistics,
updated after every optimizer step; validation, ``best/`` and the test use it in place of the
trained model. Every process keeps one (the weights it averages are the same on all) and it is
saved in ``last/``."""
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from colorize.models import Colorizer


class WeightAverage:
    def __init__(self, model: Colorizer, decay: float):
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.averaged.requires_grad_(False)

    @property
    def model(self) -> Colorizer:
        return self.averaged.module

    def update(self, model: Colorizer) -> None:
        self.averaged.update_parameters(model)

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)
