"""sRGB <-> CIELAB (D65, 2 degree observer) on batched NCHW torch tensors, and the
network's scaling of L and ab.

The formulas and constants are those of ``skimage.color.rgb2lab`` / ``lab2rgb``, so results
agree with scikit-image; everything runs on the tensor's own device and dtype.
"""
from typing import Dict, NamedTuple, Tuple

import torch

# sRGB primaries -> CIE XYZ, and the D65 reference white.
_XYZ_FROM_RGB = (
    (0.412453, 0.357580, 0.180423),
    (0.212671, 0.715160, 0.072169),
    (0.019334, 0.119193, 0.950227),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)
_EPSILON = 0.008856  # (6/29)^3, where the cube root turns linear
_KAPPA = 7.787

# The network sees L scaled to [-1, 1] and predicts ab divided by AB_SCALE.
L_CENTER = 50.0
L_HALF_RANGE = 50.0
AB_SCALE = 110.0  # about the largest |a| or |b| of an sRGB colour


class _Constants(NamedTuple):
    xyz_from_rgb: torch.Tensor
    rgb_from_xyz: torch.Tensor
    white: torch.Tensor  # shaped (1, 3, 1, 1) to divide NCHW batches


def _build_constants(device: torch.device, dtype: torch.dtype) -> _Constants:
    """The conversion's constants in ``dtype`` on ``device``; the inverse is taken in float64
    on the CPU."""
    xyz_from_rgb = torch.tensor(_XYZ_FROM_RGB, dtype=dtype)
    rgb_from_xyz = torch.linalg.inv(xyz_from_rgb.double()).to(dtype)
    white = torch.tensor(_D65_WHITE, dtype=dtype).view(1, 3, 1, 1)
    return _Constants(xyz_from_rgb.to(device), rgb_from_xyz.to(device), white.to(device))


_CONSTANTS: Dict[Tuple[torch.device, torch.dtype], _Constants] = {}


def _constants(like: torch.Tensor) -> _Constants:
    """The constants for ``like``'s device and dtype, built on first use and kept."""
    key = (like.device, like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = _build_constants(*key)
    return _CONSTANTS[key]


def _channel_matmul(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 matrix to the channel axis of an NCHW tensor."""
    return torch.einsum("ij,njhw->nihw", matrix, x)


def _check_nchw(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{what} must be a batch of shape (N, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{what} must be a floating-point tensor, got {x.dtype}")


def _linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> linear RGB."""
    return torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def _linear_to_lab(linear: torch.Tensor) -> torch.Tensor:
    constants = _constants(linear)
    xyz = _channel_matmul(constants.xyz_from_rgb, linear) / constants.white
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(_EPSILON) ** (1 / 3), _KAPPA * xyz + 16 / 116)
    fx, fy, fz = f.unbind(1)
    return torch.stack((116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)), dim=1)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], shape (N, 3, H, W) -> CIELAB (L in [0, 100], a and b in about +-110)."""
    _check_nchw(rgb, "rgb")
    return _linear_to_lab(_linear(rgb))


_LINEAR_OF_8_BITS = _linear(torch.arange(256, dtype=torch.float32) / 255)


def rgb8_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """8-bit sRGB (N, 3, H, W) uint8 -> float32 CIELAB, as :func:`rgb_to_lab` of ``rgb / 255``
    but linearised by a table of the 256 values."""
    if rgb.ndim != 4 or rgb.shape[1] != 3 or rgb.dtype != torch.uint8:
        raise ValueError(f"rgb must be a uint8 batch of shape (N, 3, H, W), got {rgb.dtype} {tuple(rgb.shape)}")
    return _linear_to_lab(_LINEAR_OF_8_BITS.to(rgb.device)[rgb.long()])


def _lab_to_unclipped_rgb(lab: torch.Tensor) -> torch.Tensor:
    l, a, b = lab.unbind(1)
    fy = (l + 16) / 116
    f = torch.stack((fy + a / 500, fy, (fy - b / 200).clamp_min(0)), dim=1)
    constants = _constants(lab)
    xyz = torch.where(f > 0.2068966, f**3, (f - 16 / 116) / _KAPPA) * constants.white
    linear = _channel_matmul(constants.rgb_from_xyz, xyz)
    return torch.where(
        linear > 0.0031308, 1.055 * linear.clamp_min(0.0031308) ** (1 / 2.4) - 0.055, 12.92 * linear
    )


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIELAB, shape (N, 3, H, W) -> sRGB in [0, 1]; out-of-gamut colours are clipped."""
    _check_nchw(lab, "lab")
    return _lab_to_unclipped_rgb(lab).clamp(0, 1)


def lab_to_rgb_keeping_l(lab: torch.Tensor, steps: int = 12) -> torch.Tensor:
    """Like :func:`lab_to_rgb`, but an out-of-gamut colour keeps its L and hue and loses
    chroma (ab scaled towards 0, found by bisection) instead of being clipped per channel."""
    _check_nchw(lab, "lab")
    tolerance = 0.5 / 255

    def fits(scale: torch.Tensor) -> torch.Tensor:
        rgb = _lab_to_unclipped_rgb(torch.cat((lab[:, :1], lab[:, 1:] * scale), dim=1))
        return ((rgb >= -tolerance) & (rgb <= 1 + tolerance)).all(dim=1, keepdim=True)

    low, high = torch.zeros_like(lab[:, :1]), torch.ones_like(lab[:, :1])
    inside = fits(high)
    for _ in range(steps):
        middle = (low + high) / 2
        ok = fits(middle)
        low, high = torch.where(ok, middle, low), torch.where(ok, high, middle)
    scale = torch.where(inside, high, low)
    return lab_to_rgb(torch.cat((lab[:, :1], lab[:, 1:] * scale), dim=1))


def normalize_l(l: torch.Tensor) -> torch.Tensor:
    """L in [0, 100] -> the network's input range [-1, 1]."""
    return (l - L_CENTER) / L_HALF_RANGE


def ab_from_network(output: torch.Tensor) -> torch.Tensor:
    """The network's ab output -> ab in CIELAB units."""
    return output * AB_SCALE


def join_lab(l: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """L (N, 1, H, W) and ab (N, 2, H, W) -> LAB (N, 3, H, W)."""
    return torch.cat((l, ab.to(l.dtype)), dim=1)
