"""The fusion network with a residual encoder and mid-level: each stage a stride-2 residual
block (He et al. 2016) instead of a plain strided convolution; the global branch, fusion and
decoder are the fusion network's."""
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from colorize.errors import check_positive
from colorize.models.conv import Conv2d
from colorize.models.fusion import FusionColorizer, FusionSettings


@dataclass
class ResidualFusionSettings(FusionSettings):
    blocks: int = 1  # residual blocks per encoder stage

    def __post_init__(self):
        super().__post_init__()
        check_positive("model.blocks", self.blocks)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm around an identity (or 1x1 strided) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            Conv2d(cin, cout, 3, stride, dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            Conv2d(cout, cout, 3, 1, dilation, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


def stage(cin: int, cout: int, blocks: int, stride: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(cin, cout, stride), *(ResidualBlock(cout, cout, 1, dilation)
                                                            for _ in range(blocks - 1)))


class ResidualFusionColorizer(FusionColorizer):
    """Encoder: a 3x3 stem of w channels at full resolution, then three stages of ``blocks``
    residual blocks (2w, 4w, 4w channels, each halving the resolution); mid-level: ``blocks``
    dilated residual blocks. The rest as in the fusion network."""

    def __init__(self, settings: Optional[ResidualFusionSettings] = None, num_classes: int = 10, resolution: int = 32,
                 bins: Optional[torch.Tensor] = None):
        settings = settings or ResidualFusionSettings()
        super().__init__(settings, num_classes, resolution, bins)
        width, blocks = settings.width, settings.blocks
        deep = 4 * width
        self.encoder = nn.Sequential(
            Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            stage(width, 2 * width, blocks, 2),
            stage(2 * width, deep, blocks, 2),
            stage(deep, deep, blocks, 2),
        )
        self.mid = stage(deep, deep, blocks, 1, dilation=2)
