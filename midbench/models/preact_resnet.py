"""Pre-activation ResNet-18 (He et al., "Identity Mappings in Deep Residual Networks", ECCV 2016).

The CIFAR variant used across the adversarial-training literature (Rice et al. 2020, Wong et al. 2020): a 3×3
stem of 64 channels, four stages of two pre-activation basic blocks (64, 128, 256, 512; stride 1, 2, 2, 2),
BN-ReLU, global average pooling and a linear head.
"""

from __future__ import annotations

import torch
from torch import nn

from midbench.models.factory import MODELS, ModelInfo


class PreActBlock(nn.Module):
    """BN-ReLU-conv-BN-ReLU-conv with an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet with ``blocks_per_stage`` blocks in each of four stages of ``widths``."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int],
                 blocks_per_stage: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (64, 128, 256, 512)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(input_shape[0], widths[0], 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for index, (blocks, width) in enumerate(zip(blocks_per_stage, widths, strict=True)):
            stride = 1 if index == 0 else 2
            for block in range(blocks):
                stages.append(PreActBlock(in_planes, width, stride if block == 0 else 1))
                in_planes = width
        self.stages = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.stages(self.conv1(x))))
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def preact_resnet18(num_classes: int, input_shape: tuple[int, int, int]) -> PreActResNet:
    """PreAct ResNet-18: two blocks in each of four stages."""
    return PreActResNet(num_classes, input_shape)


def test_resnet(num_classes: int, input_shape: tuple[int, int, int]) -> PreActResNet:
    """A tiny PreAct ResNet (one block per stage, widths 4-8-8-16) that exercises BatchNorm in tests."""
    return PreActResNet(num_classes, input_shape, (1, 1, 1, 1), (4, 8, 8, 16))


MODELS.add("preact-resnet18", ModelInfo(preact_resnet18, "PreAct ResNet-18 (He et al. 2016)"))
MODELS.add("test-resnet", ModelInfo(test_resnet, "tiny PreAct ResNet with BatchNorm, for tests"))
