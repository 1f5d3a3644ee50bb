"""The weight average (``train.ema``): torch's EMA of weights and BatchNorm statistics, its
integer counters copied, and its state saved and restored."""
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from colorize.engine.weight_average import WeightAverage

DECAY = 0.9


def trained_steps(steps: int):
    """A small network with BatchNorm after each of ``steps`` SGD steps on random images."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    yield model
    for _ in range(steps):
        model(torch.randn(8, 1, 8, 8)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
        yield model


def test_the_average_is_torchs_ema_with_integer_buffers_copied():
    models = trained_steps(5)
    model = next(models)
    average = WeightAverage(model, DECAY)
    reference = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY), use_buffers=True)
    for model in models:
        average.update(model)
        reference.update_parameters(model)
        expected = reference.module.state_dict()
        for name, tensor in average.model.state_dict().items():
            if tensor.is_floating_point():
                assert torch.equal(tensor, expected[name]), name
            else:
                assert torch.equal(tensor, model.state_dict()[name]), name
    assert model.state_dict()["1.num_batches_tracked"] == 5
    assert not any(p.requires_grad for p in average.model.parameters())
    assert average.state_dict().keys() == reference.state_dict().keys()
    assert average.state_dict()["n_averaged"] == 5


def test_a_restored_average_continues_the_same_sequence():
    models = trained_steps(3)
    model = next(models)
    average, restored = WeightAverage(model, DECAY), WeightAverage(model, DECAY)
    for model in models:
        average.update(model)
    restored.load_state_dict({name: tensor.clone() for name, tensor in average.state_dict().items()})
    with torch.no_grad():
        model[0].weight.add_(1.0)
    average.update(model)
    restored.update(model)
    for (name, tensor), saved in zip(average.state_dict().items(), restored.state_dict().values()):
        assert torch.equal(tensor, saved), name
    assert restored.state_dict()["n_averaged"] == 4
