"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016) split into an encoder and
a head, with a decoder, for Meta Invariance Defense (Zhang et al., TPAMI 2024, arXiv:2404.03340).

CIFAR variant: a 3×3 stem of 64 channels with BN-ReLU and no max-pool, four stages of two post-activation
basic blocks (64, 128, 256, 512 channels; strides 1, 2, 2, 2), 1×1 conv + BN projection shortcuts where the
shape changes. Encoder (the MID ``E``): stem and the four stages; its feature is the last stage's output
(after the final ReLU, not pooled), 512×(H/8)×(W/8). Head (the MID ``C``): global average pool → linear.
Decoder (the MID teacher's): three transposed convolutions (k4, s2, p1) each with BN-ReLU,
512 → 256 → 128 → 64, then conv3×3(64 → C), no output activation (the teacher is trained with MSE to the
[0, 1] image).

The MID release's CIFAR ResNet builds one block per stage by mistake (its stage builder discards the block
count); the MID paper specifies ResNet-18, so this one builds two blocks per stage, eight in all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from midbench.models.factory import MODELS, ModelInfo

#: channel widths of the four stages of ResNet-18 (He et al. 2016, CIFAR variant used by MID)
WIDTHS: tuple[int, int, int, int] = (64, 128, 256, 512)
#: widths of the tiny test variant: same depth and layout, cheap enough for CPU tests
TINY_WIDTHS: tuple[int, int, int, int] = (8, 16, 32, 64)
#: spatial downsampling of the encoder: three stride-2 stages, so the decoder needs H and W divisible by 8
DOWNSAMPLING = 8


class BasicBlock(nn.Module):
    """Post-activation basic block (He et al. 2016, Fig. 2): conv-BN-ReLU-conv-BN, add the shortcut, ReLU.

    The shortcut is the identity, or a 1×1 conv + BN projection (option B of the paper) when the stride or the
    width changes, so the sum is well-defined.
    """

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        # No conv biases: each conv feeds a BatchNorm, whose shift makes a bias redundant.
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18Encoder(nn.Module):
    """Stem and four stages of ``blocks_per_stage`` basic blocks; ``forward`` returns the last stage's output.

    ``return_context=True`` returns ``(feature, None)``: the ResNet decoder needs nothing from the encoder pass
    besides the feature, and the signature matches :class:`midbench.models.lenet.LeNetEncoder` so MID treats
    every encoder alike.
    """

    def __init__(self, in_channels: int, blocks_per_stage: int = 2, widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"ResNet-18 has four stages; got {len(widths)} widths {tuple(widths)}")
        # CIFAR stem: a single 3×3 conv, no 7×7 conv or max-pool, which would shrink 32×32 inputs too early.
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        in_planes = widths[0]
        stages: list[nn.Sequential] = []
        for index, width in enumerate(widths):
            stride = 1 if index == 0 else 2  # the first stage keeps the stem's resolution
            blocks: list[nn.Module] = []
            for block in range(blocks_per_stage):
                # Only the first block of a stage downsamples and widens; the rest keep the shape.
                blocks.append(BasicBlock(in_planes, width, stride if block == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        #: channels of the feature map, for the head and the decoder
        self.out_channels = in_planes

    def forward(self, x: torch.Tensor, return_context: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, None]:
        out = torch.relu(self.bn1(self.conv1(x)))
        feature = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return (feature, None) if return_context else feature


class ResNet18Head(nn.Module):
    """Global average pool → flatten → linear: the ResNet classifier on the encoder's feature map."""

    def __init__(self, feature_channels: int, num_classes: int) -> None:
        super().__init__()
        self.linear = nn.Linear(feature_channels, num_classes)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(feature, 1), 1))


class ResNet18Decoder(nn.Module):
    """Feature map ``widths[3]×(H/8)×(W/8)`` → image ``C×H×W`` (the MID teacher's decoder).

    Each transposed convolution (k4, s2, p1) exactly doubles the resolution, undoing one stride-2 stage of the
    encoder; the final 3×3 conv maps to the image channels with no activation, since the teacher is trained
    with MSE to the [0, 1] image.

    Raises:
        ValueError: H or W is not divisible by 8, so the encoder's feature cannot be decoded back to that size.
    """

    def __init__(self, input_shape: tuple[int, int, int], widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        channels, height, width = input_shape
        if height % DOWNSAMPLING or width % DOWNSAMPLING:
            raise ValueError(f"the ResNet-18 decoder needs H and W divisible by {DOWNSAMPLING}; "
                             f"got input shape {tuple(input_shape)}")
        if len(widths) != 4:
            raise ValueError(f"ResNet-18 has four stages; got {len(widths)} widths {tuple(widths)}")
        layers: list[nn.Module] = []
        for wide, narrow in zip(widths[:0:-1], widths[-2::-1], strict=True):  # 512→256, 256→128, 128→64
            # bias=False: the following BatchNorm supplies the shift.
            layers += [nn.ConvTranspose2d(wide, narrow, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(narrow), nn.ReLU(inplace=True)]
        layers.append(nn.Conv2d(widths[0], channels, 3, padding=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, feature: torch.Tensor, context: None = None) -> torch.Tensor:
        # ``context`` is accepted (and ignored) so MID calls every decoder as ``decoder(feature, context)``.
        return self.layers(feature)


class ResNet18(nn.Module):
    """Encoder + head as one classifier (the MID source model, and the MID classifier ``C∘E_s``).

    The global average pool makes the classifier work for any input size; only the decoder needs H and W
    divisible by 8.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], blocks_per_stage: int = 2,
                 widths: Sequence[int] = WIDTHS) -> None:
        super().__init__()
        self.encoder = ResNet18Encoder(input_shape[0], blocks_per_stage, widths)
        self.head = ResNet18Head(self.encoder.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


def tiny_resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> ResNet18:
    """ResNet-18's layout (two blocks per stage) at widths 8–64, for fast tests."""
    return ResNet18(num_classes, input_shape, widths=TINY_WIDTHS)


def tiny_resnet18_decoder(input_shape: tuple[int, int, int]) -> ResNet18Decoder:
    """The decoder matching :func:`tiny_resnet18`'s feature (64 channels)."""
    return ResNet18Decoder(input_shape, widths=TINY_WIDTHS)


MODELS.add("resnet18", ModelInfo(ResNet18, "ResNet-18 (He et al. 2016), two blocks per stage, split into "
                                           "encoder/head for MID (Zhang et al. 2024)", decoder=ResNet18Decoder))
MODELS.add("test-resnet-ae", ModelInfo(tiny_resnet18, "tiny ResNet-18-shaped encoder/head/decoder (widths 8–64) "
                                                      "for tests", decoder=tiny_resnet18_decoder))
