"""The encoder / global / fusion / decoder colourization network.

After Iizuka, Simo-Serra and Ishikawa, "Let there be Color!" (SIGGRAPH 2016), at CIFAR-10
scale as in S. Puri's 2019 report "Baseline Image Colorization", with two defects of that
report's code fixed: the classifier returns logits (no softmax before the cross-entropy) and
the encoder runs once per forward pass. The input is L in [0, 100]; the outputs are ab in
CIELAB units at the input resolution and one score per class. As in Iizuka et al., the global
branch sees a fixed-size view (the encoder's features pooled to the 4 x 4 grid of a 32-pixel
image), so its parameters do not grow with the resolution.
"""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.nn import functional as F

from colorize.core.color import normalize_l
from colorize.errors import ConfigError, check_positive
from colorize.models.base import Colorizer
from colorize.models.conv import Conv2d
from colorize.models.head import ColourHead, HeadSettings, colour_layer
from colorize.models.prediction import Prediction, average_views

GLOBAL_GRID = 4  # the global branch's view: the encoder's grid at 32 pixels


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        Conv2d(cin, cout, kernel, stride, padding, dilation=dilation),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def linear_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


class GridPool(nn.Module):
    """Average-pools a map to ``grid`` x ``grid`` cells, as ``nn.AdaptiveAvgPool2d`` does, with
    operations whose gradients are deterministic on CUDA (adaptive pooling's cannot run under
    ``train.deterministic``): nothing where the map is already that size, plain average pooling
    where its sides are multiples of ``grid``, and products with averaging matrices otherwise."""

    def __init__(self, grid: int):
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height == width == self.grid:
            return x
        if height % self.grid == 0 and width % self.grid == 0:
            return F.avg_pool2d(x, (height // self.grid, width // self.grid))
        return torch.einsum("ih,nchw,jw->ncij", self._averaging(height, x), x, self._averaging(width, x))

    def _averaging(self, size: int, like: torch.Tensor) -> torch.Tensor:
        """(grid, size): row i averages the positions of adaptive pooling's cell i (the pooled
        rows of the identity, a constant)."""
        identity = torch.eye(size, dtype=like.dtype, device=like.device)
        return F.adaptive_avg_pool1d(identity[None], self.grid)[0].T


def up_bn_relu(cin: int, cout: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, groups=groups), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


@dataclass
class FusionSettings(HeadSettings):
    width: int = 32  # first encoder layer; later layers use 2x and 4x
    global_hidden: int = 512
    global_dim: int = 128
    decoder_groups: int = 2  # 2: a and b from independent halves of the decoder, as in the report

    def __post_init__(self):
        super().__post_init__()
        for key in ("width", "global_hidden", "global_dim"):
            check_positive(f"model.{key}", getattr(self, key))
        if self.decoder_groups not in (1, 2):
            raise ConfigError(f"model.decoder_groups must be 1 or 2 (the decoder ends in 2 channels), "
                              f"got {self.decoder_groups}")
        if self.width % self.decoder_groups:
            raise ConfigError(f"model.width={self.width} must be a multiple of model.decoder_groups="
                              f"{self.decoder_groups}: each group takes an equal share of the decoder's channels")


class FusionColorizer(Colorizer):
    """With ``width`` w: encoder 1->w->2w->4w (three stride-2 4x4 convs, then a 3x3), mid-level
    4w, global features -> ``global_hidden`` -> ``global_dim``, fusion 1x1 conv, and a decoder
    of three stride-2 transposed convs back to full resolution, in ``decoder_groups`` groups
    (the report's 2 predict a and b from independent halves)."""

    resolution_multiple = 8  # three stride-2 stages down, then three up

    def __init__(self, settings: Optional[FusionSettings] = None, num_classes: int = 10, resolution: int = 32,
                 bins: Optional[torch.Tensor] = None):
        super().__init__()
        multiple = self.resolution_multiple
        if resolution % multiple:
            raise ValueError(f"resolution must be a multiple of {multiple}, got {resolution}")
        settings = settings or FusionSettings()
        width, global_hidden, global_dim = settings.width, settings.global_hidden, settings.global_dim
        decoder_groups = settings.decoder_groups
        deep = 4 * width
        self.encoder = nn.Sequential(
            conv_bn_relu(1, width, 4, 2, 1),
            conv_bn_relu(width, 2 * width, 4, 2, 1),
            conv_bn_relu(2 * width, deep, 4, 2, 1),
            conv_bn_relu(deep, deep, 3, 1, 1),
        )
        self.mid = nn.Sequential(conv_bn_relu(deep, deep, 3, 1, 1), conv_bn_relu(deep, deep, 3, 1, 2, 2))
        self.global_view = GridPool(GLOBAL_GRID)  # the identity at 32 pixels
        self.global_features = nn.Sequential(
            conv_bn_relu(deep, deep, 3, 1, 1),
            nn.Flatten(),
            linear_bn_relu(deep * GLOBAL_GRID * GLOBAL_GRID, global_hidden),
            linear_bn_relu(global_hidden, global_dim),
        )
        self.classifier = nn.Linear(global_dim, num_classes)
        self.fusion = conv_bn_relu(deep + global_dim, deep, 1)
        self.decoder = nn.Sequential(
            up_bn_relu(deep, 2 * width, decoder_groups),
            up_bn_relu(2 * width, width, decoder_groups),
            colour_layer(settings, width, decoder_groups, bins),
        )
        self.head = ColourHead(settings, bins)

    def fuse(self, features: torch.Tensor):
        """The encoder's output -> (mid-level features fused with the global summary, the summary)."""
        mid = self.mid(features)
        summary = self.global_features(self.global_view(features))
        tiled = summary[:, :, None, None].expand(-1, -1, *mid.shape[-2:])
        return self.fusion(torch.cat((mid, tiled), dim=1)), summary

    def forward(self, l: torch.Tensor) -> Prediction:
        settings = self.head.settings
        if self.training or not (settings.flip_average or settings.shift_average):
            return self.predict(l)
        return average_views(self.predict, l, settings.flip_average, settings.shift_average)

    def predict(self, l: torch.Tensor) -> Prediction:
        fused, summary = self.fuse(self.encoder(normalize_l(l)))
        return self.head(self.decoder(fused), self.classifier(summary))
