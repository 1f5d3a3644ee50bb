"""The networks' Conv2d: its matrix-product weight gradient against torch's convolution."""
import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from colorize.models import create_model
from colorize.models.conv import Conv2d, _ConvMatmulWeightGrad, receptive_fields
from colorize.models.fusion import FusionSettings

# (in channels, out channels, kernel, stride, padding, dilation, input side): the fusion network's
# small-map convolutions (3x3, dilated 3x3, strided 4x4 down to 4 x 4, the 1x1 fusion) and others
GEOMETRIES = [(16, 8, 3, 1, 1, 1, 4), (16, 8, 3, 1, 2, 2, 4), (8, 16, 4, 2, 1, 1, 8), (24, 8, 1, 1, 0, 1, 4),
              (3, 5, (3, 2), (2, 1), (1, 0), (1, 2), 7)]


def _pair(value):
    return value if isinstance(value, tuple) else (value, value)


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, dilation, side", GEOMETRIES)
def test_receptive_fields_are_torchs_unfold_tap_by_tap(cin, cout, kernel, stride, padding, dilation, side):
    x = torch.randn(2, cin, side, side, dtype=torch.float64)
    reference = torch.nn.Conv2d(cin, cout, kernel, stride, padding, dilation)
    out_size = reference(x.float()).shape[2:]
    fields = receptive_fields(x, _pair(kernel), _pair(stride), _pair(padding), _pair(dilation), out_size)
    unfolded = F.unfold(x, kernel, dilation, padding, stride)  # (N, C * taps, positions), channel-major
    taps = unfolded.shape[1] // cin
    expected = unfolded.view(2, cin, taps, -1).permute(0, 3, 2, 1).reshape(-1, taps * cin)
    assert torch.equal(fields, expected)


@pytest.mark.parametrize("cin, cout, kernel, stride, padding, dilation, side", GEOMETRIES)
@pytest.mark.parametrize("bias", [True, False])
def test_the_matrix_product_gradients_are_the_convolutions(cin, cout, kernel, stride, padding, dilation, side, bias):
    torch.manual_seed(0)
    x = torch.randn(3, cin, side, side, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(cout, cin, *_pair(kernel), dtype=torch.float64, requires_grad=True)
    b = torch.randn(cout, dtype=torch.float64, requires_grad=True) if bias else None
    geometry = _pair(stride), _pair(padding), _pair(dilation)
    ours = _ConvMatmulWeightGrad.apply(x, weight, b, *geometry)
    theirs = F.conv2d(x, weight, b, *geometry)
    upstream = torch.randn_like(theirs)
    inputs = [t for t in (x, weight, b) if t is not None]
    expected = torch.autograd.grad(theirs, inputs, upstream)
    got = torch.autograd.grad(ours, inputs, upstream)
    assert torch.equal(ours, theirs)
    for g, e in zip(got, expected):
        assert g.shape == e.shape and torch.allclose(g, e, rtol=1e-10, atol=1e-10)


def _trained_grads(layer: nn.Module, x: torch.Tensor, dtype: torch.dtype):
    layer, x = copy.deepcopy(layer), x.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        y = layer(x)
    (y.float() ** 2).sum().backward()
    return y, x.grad, layer.weight.grad, layer.bias.grad


def test_in_bf16_training_a_small_map_takes_the_matrix_product_and_agrees_with_torch():
    layer = Conv2d(128, 128, 3, 1, 2, dilation=2).to(memory_format=torch.channels_last)
    x = torch.randn(16, 128, 4, 4).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer._uses_matmul_weight_grad(x)
    plain = nn.Conv2d(128, 128, 3, 1, 2, dilation=2).to(memory_format=torch.channels_last)
    plain.load_state_dict(layer.state_dict())
    ours, theirs = _trained_grads(layer, x, torch.bfloat16), _trained_grads(plain, x, torch.bfloat16)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])  # forward and input gradient
    for g, e in zip(ours[2:], theirs[2:]):
        assert g.dtype == e.dtype == torch.float32  # the parameters' gradients, as autocast gives them
        assert (g - e).norm() <= 1e-2 * e.norm()  # bf16 rounding


def test_fp32_large_maps_and_evaluation_stay_torchs_own_convolution():
    layer = Conv2d(8, 8, 3, 1, 1)
    small, large = torch.randn(2, 8, 4, 4), torch.randn(2, 8, 8, 8)
    assert not layer._uses_matmul_weight_grad(small)  # fp32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not layer._uses_matmul_weight_grad(large)  # 64 output positions
        with torch.no_grad():
            assert not layer._uses_matmul_weight_grad(small)
    plain = nn.Conv2d(8, 8, 3, 1, 1)
    plain.load_state_dict(layer.state_dict())
    for ours, theirs in zip(_trained_grads(layer, small, torch.float32), _trained_grads(plain, small, torch.float32)):
        assert torch.equal(ours, theirs)


def test_a_training_step_of_the_fusion_network_in_bf16_matches_torchs_convolutions(monkeypatch):
    model = create_model("fusion", FusionSettings(width=8, global_hidden=32, global_dim=16), num_classes=10,
                         resolution=32).to(memory_format=torch.channels_last)
    l = torch.rand(8, 1, 32, 32) * 100

    def grads():
        net = copy.deepcopy(model)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = net(l)
        (prediction.ab.float().square().mean() + prediction.logits.float().square().mean()).backward()
        # a convolution's bias before BatchNorm has a true gradient of 0: what either computes is rounding
        biases = {f"{name}.bias" for name, m in net.named_modules() if isinstance(m, Conv2d)}
        return {name: p.grad for name, p in net.named_parameters() if name not in biases}

    chosen, decide = [], Conv2d._uses_matmul_weight_grad
    monkeypatch.setattr(Conv2d, "_uses_matmul_weight_grad",
                        lambda self, x: chosen.append(decide(self, x)) or chosen[-1])
    ours = grads()
    assert chosen.count(True) == 6  # the 3x3 convolutions on 4 x 4 maps, the last strided one and the fusion
    monkeypatch.setattr(Conv2d, "_uses_matmul_weight_grad", lambda self, x: False)
    theirs = grads()
    assert ours.keys() == theirs.keys()
    for name in ours:
        assert (ours[name] - theirs[name]).norm() <= 2e-2 * theirs[name].norm() + 1e-6, name
