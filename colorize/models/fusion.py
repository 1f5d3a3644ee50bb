"""The encoder / global / fusion / decoder colourization network.

After Iizuka, Simo-Serra and Ishikawa, "Let there be Color!" (SIGGRAPH 2016), at CIFAR-10
scale as in S. Puri's 2019 report "Baseline Image Colorization", with two defects of that
report's code fixed: the classifier returns logits (no softmax before the cross-entropy) and
the encoder runs once per forward pass. The input is L in [0, 100]; the outputs are ab in
CIELAB units at the input resolution and one score per class.
"""
import torch
from torch import nn

from colorize.color import ab_from_network, normalize_l
from colorize.models.registry import register


def conv_bn_relu(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def linear_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.BatchNorm1d(cout), nn.ReLU(inplace=True))


def up_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1, groups=2), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


@register("fusion")
class FusionColorizer(nn.Module):
    """With ``width`` w: encoder 1->w->2w->4w (three stride-2 4x4 convs, then a 3x3), mid-level
    4w, global features -> ``global_hidden`` -> ``global_dim``, fusion 1x1 conv, and a decoder
    of three grouped stride-2 transposed convs back to full resolution."""

    resolution_multiple = 8  # three stride-2 stages down, then three up

    def __init__(self, num_classes: int = 10, resolution: int = 32, width: int = 32,
                 global_hidden: int = 512, global_dim: int = 128):
        super().__init__()
        multiple = self.resolution_multiple
        if resolution % multiple:
            raise ValueError(f"resolution must be a multiple of {multiple}, got {resolution}")
        deep, grid = 4 * width, resolution // 8
        self.encoder = nn.Sequential(
            conv_bn_relu(1, width, 4, 2, 1),
            conv_bn_relu(width, 2 * width, 4, 2, 1),
            conv_bn_relu(2 * width, deep, 4, 2, 1),
            conv_bn_relu(deep, deep, 3, 1, 1),
        )
        self.mid = nn.Sequential(conv_bn_relu(deep, deep, 3, 1, 1), conv_bn_relu(deep, deep, 3, 1, 2, 2))
        self.global_features = nn.Sequential(
            conv_bn_relu(deep, deep, 3, 1, 1),
            nn.Flatten(),
            linear_bn_relu(deep * grid * grid, global_hidden),
            linear_bn_relu(global_hidden, global_dim),
        )
        self.classifier = nn.Linear(global_dim, num_classes)
        self.fusion = conv_bn_relu(deep + global_dim, deep, 1)
        self.decoder = nn.Sequential(
            up_bn_relu(deep, 2 * width),
            up_bn_relu(2 * width, width),
            nn.ConvTranspose2d(width, 2, 4, 2, 1, groups=2),
        )

    def forward(self, l: torch.Tensor):
        """L (N, 1, R, R) in [0, 100] -> (ab (N, 2, R, R) in ab units, class logits (N, classes))."""
        features = self.encoder(normalize_l(l))
        mid = self.mid(features)
        summary = self.global_features(features)
        tiled = summary[:, :, None, None].expand(-1, -1, *mid.shape[-2:])
        fused = self.fusion(torch.cat((mid, tiled), dim=1))
        return ab_from_network(self.decoder(fused)), self.classifier(summary)
