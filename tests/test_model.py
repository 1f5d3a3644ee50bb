import pytest
import torch

from colorize.errors import ColorizeError, ConfigError
from colorize.models import MODELS, create_model
from colorize.models.fusion import FusionSettings, GridPool
from colorize.models.head import set_shift_average
from colorize.models.prediction import Prediction, average_views


def build(**overrides):
    return create_model("fusion", FusionSettings(**overrides), num_classes=10, resolution=32)


def test_output_shapes_for_32x32_input():
    ab, logits, ab_scores = build()(torch.rand(4, 1, 32, 32) * 100)  # a Prediction is a tuple
    assert ab.shape == (4, 2, 32, 32) and logits.shape == (4, 10) and ab_scores is None


def test_reference_widths_have_about_two_million_parameters():
    count = sum(p.numel() for p in build().parameters())
    assert count == 1_989_580


def test_widths_are_configurable():
    small = build(width=8, global_hidden=64, global_dim=16)
    assert sum(p.numel() for p in small.parameters()) < 100_000
    ab, logits, _ = small(torch.rand(2, 1, 32, 32) * 100)
    assert ab.shape == (2, 2, 32, 32)


def test_an_ungrouped_decoder_lets_a_and_b_see_all_features():
    grouped, ungrouped = build(), build(decoder_groups=1)
    last = [m for m in ungrouped.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert {m.groups for m in last} == {1}
    extra = sum(p.numel() for p in ungrouped.parameters()) - sum(p.numel() for p in grouped.parameters())
    assert extra == (128 * 64 + 64 * 32 + 32 * 2) * 16 // 2  # half of each decoder weight was cut by groups=2
    assert ungrouped(torch.rand(2, 1, 32, 32) * 100)[0].shape == (2, 2, 32, 32)
    with pytest.raises(ConfigError, match="model.decoder_groups must be 1 or 2"):
        FusionSettings(decoder_groups=4)


def test_eval_mode_handles_a_batch_of_one():
    model = build().eval()
    with torch.no_grad():
        ab, logits, _ = model(torch.rand(1, 1, 32, 32) * 100)
    assert torch.isfinite(ab).all() and logits.shape == (1, 10)


def test_classifier_returns_logits_and_encoder_runs_once():
    model = build()
    assert isinstance(model.classifier, torch.nn.Linear)  # no softmax: logits go to the loss
    calls = []
    model.encoder.register_forward_hook(lambda *_: calls.append(1))
    model(torch.rand(2, 1, 32, 32) * 100)
    assert len(calls) == 1


def test_other_resolutions_and_unknown_names():
    model = create_model("fusion", None, num_classes=3, resolution=64)
    assert model(torch.rand(2, 1, 64, 64) * 100)[0].shape == (2, 2, 64, 64)
    with pytest.raises(ConfigError, match="not a known model"):
        create_model("unet")


def test_a_resolution_the_model_cannot_use_is_a_config_error():
    with pytest.raises(ConfigError, match="fusion.*multiple of 8.*48 or 56"):
        create_model("fusion", None, num_classes=3, resolution=50)


@pytest.mark.parametrize("name", MODELS.names())
def test_the_global_branch_sees_a_fixed_size_view_so_parameters_do_not_grow_with_the_image(name):
    def parameters(resolution):
        return sum(p.numel() for p in create_model(name, None, num_classes=10, resolution=resolution).parameters())

    assert parameters(32) == parameters(64) == parameters(128)
    model = create_model(name, None, num_classes=10, resolution=128).eval()
    prediction = model(torch.rand(1, 1, 128, 128) * 100)
    assert prediction.ab.shape == (1, 2, 128, 128) and prediction.logits.shape == (1, 10)


@pytest.mark.parametrize("size", [4, 8, 16, 6, 3, 1])
def test_the_global_view_pools_as_adaptive_pooling_does(size):
    features = torch.randn(2, 5, size, size)
    torch.testing.assert_close(GridPool(4)(features), torch.nn.functional.adaptive_avg_pool2d(features, 4))


@pytest.mark.parametrize("name", MODELS.names())
def test_flip_average_predicts_the_mean_of_each_image_and_its_mirror_image_in_eval_mode_only(name):
    torch.manual_seed(0)
    settings = MODELS.entry(name).settings(flip_average=True)
    model = create_model(name, settings, num_classes=10, resolution=32).eval()
    l = torch.rand(3, 1, 32, 32) * 100
    averaged = model(l)
    settings.flip_average = False
    direct, mirrored = model(l), model(l.flip(-1))
    assert torch.allclose(averaged.ab, (direct.ab + mirrored.ab.flip(-1)) / 2, atol=1e-4)
    assert torch.allclose(averaged.logits, (direct.logits + mirrored.logits) / 2, atol=1e-4)
    assert not torch.allclose(averaged.ab, direct.ab, atol=1e-2)  # the mirror image does count
    settings.flip_average = True
    batches = []
    model.predict = lambda l, predict=model.predict: batches.append(len(l)) or predict(l)
    model.train()(l)
    model.eval()(l)
    assert batches == [3, 6]  # training sees each image once; evaluation it and its mirror, in one batch


def _one_pixel_views(l):
    """The image and the image moved by one pixel each way, mirrored at the edges, by the
    (rows, columns) that each view is rolled by to put its pixels back in place."""
    padded = torch.nn.functional.pad(l, (1, 1, 1, 1), mode="reflect")
    return {(0, 0): l, (1, 0): padded[..., 2:, 1:-1], (-1, 0): padded[..., :-2, 1:-1],
            (0, 1): padded[..., 1:-1, 2:], (0, -1): padded[..., 1:-1, :-2]}


def _pointwise(l):
    """A prediction that depends on each pixel alone (and a class score on the whole image)."""
    return Prediction(torch.cat((l, l.square() / 100), dim=1), l.mean(dim=(1, 2, 3))[:, None].repeat(1, 10))


@pytest.mark.parametrize("flip", [False, True])
def test_shift_average_puts_each_shifted_prediction_back_on_its_own_pixel(flip):
    l = torch.rand(2, 1, 8, 8) * 100
    averaged = average_views(_pointwise, l, flip=flip, shift=True)
    # each view predicts every pixel it holds from that pixel alone, so the mean over views is exact
    assert torch.allclose(averaged.ab, _pointwise(l).ab, atol=1e-5)
    views = _one_pixel_views(l).values()
    assert torch.allclose(averaged.logits, sum(_pointwise(v).logits for v in views) / 5, atol=1e-4)


@pytest.mark.parametrize("name", MODELS.names())
def test_shift_average_averages_five_views_in_eval_mode_only(name):
    torch.manual_seed(0)
    settings = MODELS.entry(name).settings(flip_average=True, shift_average=True)
    model = create_model(name, settings, num_classes=10, resolution=32).eval()
    l = torch.rand(3, 1, 32, 32) * 100
    shifted = model(l)
    settings.shift_average = False
    flipped = model(l)
    assert not torch.allclose(shifted.ab, flipped.ab, atol=1e-2)  # the shifted views do count
    # an inner pixel is held by all five views: the mean of their flip-averaged predictions for it
    mean = sum(model(view).ab.roll(shift, dims=(-2, -1)) for shift, view in _one_pixel_views(l).items()) / 5
    assert torch.allclose(shifted.ab[..., 1:-1, 1:-1], mean[..., 1:-1, 1:-1], atol=1e-4)
    settings.shift_average = True
    batches = []
    model.predict = lambda l, predict=model.predict: batches.append(len(l)) or predict(l)
    model.train()(l)
    model.eval()(l)
    assert batches == [3] + [6] * 5  # training sees each image once; evaluation five views and their mirror images


def test_shift_average_is_refused_by_name_for_a_network_without_a_colour_head():
    with pytest.raises(ColorizeError, match="--shift-average applies to colorize's networks"):
        set_shift_average(torch.nn.Conv2d(1, 2, 3), True)
