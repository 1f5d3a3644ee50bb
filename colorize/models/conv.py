"""The networks' 2-d convolution: ``torch.nn.Conv2d`` with a faster weight gradient where
oneDNN's is slow.

In bf16 on a CPU, oneDNN's backward-weights kernels are slow for convolutions whose output
map is small: for the fusion network's 3x3 convolutions of 128 channels on 4 x 4 maps they
take five times as long as the forward pass (the dilated one ten times) on an Intel Xeon with
AMX. There the weight gradient is computed here instead, as one matrix product of the
output gradient with the input's receptive fields (im2col). Everything else, and every other
case (fp32, GPUs, larger maps), is torch's own convolution: the same parameters and state
dict, the same results within bf16 rounding.
"""
from typing import Tuple

import torch
from torch import nn
from torch.nn import functional as F

SMALL_MAP = 16  # output positions per image up to which the weight gradient is one matrix product


def receptive_fields(x: torch.Tensor, kernel: Tuple[int, int], stride: Tuple[int, int],
                     padding: Tuple[int, int], dilation: Tuple[int, int],
                     out_size: Tuple[int, int]) -> torch.Tensor:
    """``x`` (N, C, H, W) -> (N * Ho * Wo, kh * kw * C): the input values each output position
    of the convolution sees, tap by tap, channels last (im2col)."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (ho, wo) = kernel, stride, padding, dilation, out_size
    padded = F.pad(x, (pw, pw, ph, ph)).permute(0, 2, 3, 1).contiguous()
    n, _, _, channels = padded.shape
    along_n, along_h, along_w, along_c = padded.stride()
    fields = padded.as_strided((n, ho, wo, kh, kw, channels),
                               (along_n, along_h * sh, along_w * sw, along_h * dh, along_w * dw, along_c))
    return fields.reshape(-1, kh * kw * channels)


class _ConvMatmulWeightGrad(torch.autograd.Function):
    """``F.conv2d`` (groups 1) whose weight gradient is one matrix product."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation):
        ctx.save_for_backward(x, weight)
        ctx.geometry = stride, padding, dilation
        ctx.has_bias = bias is not None
        return F.conv2d(x, weight, bias, stride, padding, dilation)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, stride, padding, dilation, False,
                                                         [0, 0], 1, [True, False, False])[0]
        out, kernel = weight.shape[0], weight.shape[2:]
        fields = receptive_fields(x, kernel, stride, padding, dilation, grad.shape[2:])
        grad_weight = grad.permute(0, 2, 3, 1).reshape(-1, out).t() @ fields
        grad_weight = grad_weight.view(out, *kernel, -1).permute(0, 3, 1, 2)
        grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias else None
        return grad_x, grad_weight, grad_bias, None, None, None


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


class Conv2d(nn.Conv2d):
    """``nn.Conv2d``; in training in bf16 on a CPU, with at most ``SMALL_MAP`` output positions
    per image and no groups, its weight gradient is one matrix product (see the module)."""

    def _output_positions(self, x: torch.Tensor) -> int:
        sides = [(size + 2 * pad - dil * (k - 1) - 1) // step + 1 for size, pad, dil, k, step in
                 zip(x.shape[-2:], self.padding, self.dilation, self.kernel_size, self.stride)]
        return sides[0] * sides[1]

    def _uses_matmul_weight_grad(self, x: torch.Tensor) -> bool:
        return (x.device.type == "cpu" and self.weight.requires_grad and torch.is_grad_enabled()
                and self.groups == 1 and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and self._output_positions(x) <= SMALL_MAP and _compute_dtype(x) == torch.bfloat16)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias):
        if not self._uses_matmul_weight_grad(x):
            return super()._conv_forward(x, weight, bias)
        weight, bias = weight.to(torch.bfloat16), None if bias is None else bias.to(torch.bfloat16)
        with torch.autocast("cpu", enabled=False):
            return _ConvMatmulWeightGrad.apply(x.to(torch.bfloat16), weight, bias, self.stride, self.padding,
                                               self.dilation)
