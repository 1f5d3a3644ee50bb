"""The fusion network with a U-Net decoder: each upsampling stage also sees the encoder's
features at its resolution (skip connections, Ronneberger et al. 2015), while the global
branch is fused at the bottleneck as before."""
from typing import Optional

import torch
from torch import nn

from colorize.core.color import normalize_l
from colorize.models.fusion import FusionColorizer, FusionSettings, conv_bn_relu, up_bn_relu
from colorize.models.head import colour_layer
from colorize.models.prediction import Prediction


class UNetFusionColorizer(FusionColorizer):
    """Encoder, mid-level, global branch and fusion as in the fusion network; the decoder
    upsamples to 1/4 and 1/2 resolution, joins the encoder's features there and mixes them
    with a 3x3 convolution, then upsamples to ab at full resolution."""

    def __init__(self, settings: Optional[FusionSettings] = None, num_classes: int = 10, resolution: int = 32,
                 bins: Optional[torch.Tensor] = None):
        settings = settings or FusionSettings()
        super().__init__(settings, num_classes, resolution, bins)
        width, groups = settings.width, settings.decoder_groups
        self.up = nn.ModuleList([up_bn_relu(4 * width, 2 * width, groups), up_bn_relu(2 * width, width, groups)])
        self.merge = nn.ModuleList([conv_bn_relu(4 * width, 2 * width, 3, 1, 1),
                                    conv_bn_relu(2 * width, width, 3, 1, 1)])
        self.decoder = colour_layer(settings, width, groups, bins)

    def predict(self, l: torch.Tensor) -> Prediction:
        x = normalize_l(l)
        skips = []
        for index, layer in enumerate(self.encoder):
            x = layer(x)
            if index < 2:  # the 1/2 and 1/4 resolution features
                skips.append(x)
        x, summary = self.fuse(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips)):
            x = merge(torch.cat((up(x), skip), dim=1))
        return self.head(self.decoder(x), self.classifier(summary))
