"""The inverse network: a decoder from uploaded features back to images, shaped by the feature map.

Built like the inverse networks of the model-inversion literature (He et al.
2019; the decoders that read PATROL's uploads back): the input is standardized
per channel (BatchNorm without affine), then

- feature maps (C, H, W): two 3x3 conv-BN-ReLU blocks at the feature
  resolution;
- vectors (C,) and 1x1 maps: a real MLP head (Linear -> hidden, BN, ReLU,
  Linear -> a `width` x 4 x 4 seed map, BN, ReLU);

then one stage per power of two between the feature side and the image side
(nearest x2 upsampling, two 3x3 conv-BN-ReLU blocks) and a 3x3 conv to the
image channels. Channels are `width` at a 4x4 map and halve each time the
side doubles (at least 16), so every stage costs about the same; the MLP's
hidden layer has 4 x `width` units.

The same builder serves PATROL's training surrogate (`patrol.adversarial.
surrogate_width`) and the evaluating black-box attacker (`attacks.blackbox.
widths`, never narrower than the surrogate); the evaluating one is always a
fresh decoder trained from scratch, so at equal width the two are equally
strong by construction and a wider attacker is strictly larger.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from patrol_deploy.errors import ModelError

MIN_WIDTH = 16
MAX_WIDTH = 512
WIDTH_SIDE = 4  # `width` channels at a 4x4 map, width/2 at 8x8, ...
SEED_SIZE = 4  # side of the map a vector feature is projected onto
MLP_HIDDEN = 4  # hidden units of the vector head, per unit of `width`


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _stage_factor(side: int, size: int) -> int:
    """log2(size / side); ModelError when the ratio is not a power of two >= 1."""
    ratio = size / side
    if side > size:
        raise ModelError(f"the feature map ({side} px) is larger than the {size} px input, so no upsampling "
                         "decoder can map it back.", "attack a split whose features are at most the input size")
    if ratio != int(ratio) or int(ratio) & (int(ratio) - 1):
        raise ModelError(f"the input size {size} is not a power-of-two multiple of the feature size {side} "
                         f"(ratio {ratio:.3g}), which the x2 upsampling decoder cannot reach.",
                         "use data.image_size = feature size x a power of two (e.g. 32, 64, 224 for ResNets)")
    return int(math.log2(ratio))


class _MLPHead(nn.Module):
    """Standardized feature vector -> MLP -> (width, s, s) seed map."""

    def __init__(self, features: int, width: int, side: int) -> None:
        super().__init__()
        self.shape = (width, side, side)
        hidden = MLP_HIDDEN * width
        self.mlp = nn.Sequential(
            nn.BatchNorm1d(features, affine=False),
            nn.Linear(features, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, width * side * side, bias=False), nn.BatchNorm1d(width * side * side),
            nn.ReLU(inplace=True))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.mlp(z.flatten(1)).view(len(z), *self.shape)


def build_decoder(feature_shape: tuple[int, ...] | list[int], image_channels: int, image_size: int,
                  width: int = 128) -> nn.Sequential:
    """A decoder mapping features of `feature_shape` to (image_channels, image_size, image_size) images."""
    shape = tuple(int(d) for d in feature_shape)
    vector = len(shape) == 1 or (len(shape) == 3 and shape[1:] == (1, 1))
    if not (vector or len(shape) == 3) or any(d <= 0 for d in shape):
        raise ModelError(f"cannot build a decoder for features of shape {shape}.",
                         "attack an edge whose output is (C,) or (C, H, W)")
    if not vector and shape[2] != shape[1]:
        raise ModelError(f"non-square feature maps ({shape[1]}x{shape[2]}) are not supported by the decoder.",
                         "use square input images (data.image_size)")
    side = min(SEED_SIZE, image_size) if vector else shape[1]
    stages = _stage_factor(side, image_size)

    def width_at(res: int) -> int:  # about constant cost per layer: channels halve as the side doubles
        return max(MIN_WIDTH, min(width, MAX_WIDTH, (width * WIDTH_SIDE) // res))

    cur = width_at(side)
    layers: list[nn.Module] = []
    if vector:
        layers.append(_MLPHead(shape[0], cur, side))
    else:
        layers += [nn.BatchNorm2d(shape[0], affine=False), *_conv_bn_relu(shape[0], cur), *_conv_bn_relu(cur, cur)]
    for _ in range(stages):
        side *= 2
        nxt = width_at(side)
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_bn_relu(cur, nxt), *_conv_bn_relu(nxt, nxt)]
        cur = nxt
    layers.append(nn.Conv2d(cur, image_channels, 3, padding=1))
    return nn.Sequential(*layers)


def parameter_count(module: nn.Module) -> int:
    """Trainable parameters of a decoder (what the report calls its size)."""
    return sum(p.numel() for p in module.parameters())
