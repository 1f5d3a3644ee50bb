"""Every registered network, with each head it has, through what a network goes through: a
training step with the loss of its head, evaluation, saving and loading, and export. A network
registered in colorize.models is covered here without a test of its own."""
import pytest
import torch

from colorize.commands.export import export_run
from colorize.core.ab_bins import gamut_bins
from colorize.data.prior import AbPrior
from colorize.losses import BinsClassSettings, HuberClassLoss, HuberClassSettings, RebalancedBinLoss
from colorize.models import MODELS, create_model
from colorize.models.head import HEADS
from colorize.models.saved import load_model, save_model
from colorize.run_dir import BEST, CONFIG

CLASSES = ["cat", "dog", "frog"]
RESOLUTION = 32


class Batch:
    def __init__(self, count: int, resolution: int = RESOLUTION):
        self.l = torch.rand(count, 1, resolution, resolution) * 100
        self.ab = torch.randn(count, 2, resolution, resolution) * 20
        self.label = torch.randint(0, len(CLASSES), (count,))


def heads_of(name):
    """The heads network ``name`` can have: both where its settings choose one, else ab."""
    return HEADS if hasattr(MODELS.entry(name).settings(), "head") else ("ab",)


NETWORKS = [(name, head) for name in MODELS.names() for head in heads_of(name)]


def network_and_loss(name, head, resolution=RESOLUTION):
    settings = MODELS.entry(name).settings(**({"head": head} if head != "ab" else {}))
    centres = gamut_bins()
    prior = AbPrior(centres, torch.full((len(centres),), 1 / len(centres)))
    model = create_model(name, settings, len(CLASSES), resolution, bins=centres if head == "bins" else None)
    loss = RebalancedBinLoss(BinsClassSettings(), prior) if head == "bins" else HuberClassLoss(HuberClassSettings())
    return model, loss


def test_every_registered_network_and_head_is_covered():
    assert {name for name, _ in NETWORKS} == set(MODELS.names()) and ("fusion", "bins") in NETWORKS


@pytest.mark.parametrize("name,head", NETWORKS)
def test_a_training_step_reaches_every_parameter_and_lowers_the_loss(name, head):
    torch.manual_seed(0)
    model, loss = network_and_loss(name, head)
    batch = Batch(8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        total = loss(model.train()(batch.l), batch)["total"]
        optimizer.zero_grad()
        total.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
        optimizer.step()
        losses.append(total.item())
    assert losses[-1] < losses[0]


# What torch.use_deterministic_algorithms refuses on CUDA (its documentation), as the profiler names it.
REFUSED_ON_CUDA = {
    "aten::avg_pool3d_backward", "aten::_adaptive_avg_pool2d_backward", "aten::_adaptive_avg_pool3d_backward",
    "aten::adaptive_max_pool2d_backward", "aten::fractional_max_pool2d_backward",
    "aten::fractional_max_pool3d_backward", "aten::max_unpool1d", "aten::max_unpool2d", "aten::max_unpool3d",
    "aten::upsample_linear1d_backward", "aten::upsample_bilinear2d_backward", "aten::upsample_bicubic2d_backward",
    "aten::upsample_trilinear3d_backward", "aten::reflection_pad1d_backward", "aten::reflection_pad2d_backward",
    "aten::reflection_pad3d_backward", "aten::nll_loss2d_forward", "aten::_ctc_loss_backward",
    "aten::_embedding_bag_backward", "aten::put_", "aten::histc", "aten::bincount", "aten::median",
    "aten::grid_sampler_2d_backward", "aten::grid_sampler_3d_backward", "aten::scatter_reduce",
}


@pytest.mark.parametrize("name,head", NETWORKS)
@pytest.mark.parametrize("resolution", [16, 32, 48, 64])
def test_a_training_step_uses_no_operation_that_deterministic_mode_refuses_on_cuda(name, head, resolution):
    """``train.deterministic`` on CUDA would stop at the first such operation (adaptive pooling's
    gradient, bilinear upsampling's, a per-pixel NLL loss)."""
    model, loss = network_and_loss(name, head, resolution)
    batch = Batch(2, resolution)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        loss(model.train()(batch.l), batch)["total"].backward()
    used = {event.key for event in profiler.key_averages()}
    assert "aten::convolution_backward" in used and not used & REFUSED_ON_CUDA, used & REFUSED_ON_CUDA


@pytest.mark.parametrize("name,head", NETWORKS)
def test_evaluation_predicts_ab_and_classes_at_full_resolution(name, head):
    model, _ = network_and_loss(name, head)
    with torch.no_grad():
        prediction = model.eval()(Batch(2).l)
    assert prediction.ab.shape == (2, 2, RESOLUTION, RESOLUTION) and torch.isfinite(prediction.ab).all()
    assert prediction.logits.shape == (2, len(CLASSES))


@pytest.mark.parametrize("name,head", NETWORKS)
def test_saved_loaded_and_exported_it_predicts_the_same(name, head, tmp_path):
    torch.manual_seed(0)
    model, _ = network_and_loss(name, head)
    run = tmp_path / "run"
    save_model(model, run / BEST, CLASSES)
    (run / CONFIG).write_text("run: {name: run}\n")
    exported = export_run(run, tmp_path / "export")
    l = Batch(2).l
    with torch.no_grad():
        expected = model.eval()(l).ab
        for folder in (run / BEST, exported):
            loaded = load_model(folder)
            assert type(loaded) is type(model) and loaded.settings == model.settings
            assert (loaded.name, loaded.classes, loaded.resolution) == (name, CLASSES, RESOLUTION)
            assert torch.allclose(loaded(l).ab, expected, atol=1e-4)

