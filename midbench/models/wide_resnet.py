"""Wide residual networks (Zagoruyko & Komodakis, "Wide Residual Networks", BMVC 2016).

WRN-d-k: (d − 4)/6 pre-activation basic blocks in each of three stages of widths 16k, 32k, 64k. WRN-34-10 is
the model of Madry et al. (2018) and TRADES; WRN-28-10 the RobustBench standard-training reference.
"""

from __future__ import annotations

import torch
from torch import nn

from midbench.models.factory import MODELS, ModelInfo
from midbench.models.preact_resnet import PreActBlock


class WideResNet(nn.Module):
    """WRN-``depth``-``widen``: a 16-channel stem, three stages, BN-ReLU, average pooling, linear head."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int], depth: int, widen: int) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError("WideResNet depth must be 6n + 4")
        blocks = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(input_shape[0], 16, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        in_planes = 16
        for index, width in enumerate(widths):
            for block in range(blocks):
                stride = (1 if index == 0 else 2) if block == 0 else 1
                layers.append(PreActBlock(in_planes, width, stride))
                in_planes = width
        self.stages = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.stages(self.conv1(x))))
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


def _wrn(depth: int, widen: int):  # noqa: ANN202
    def factory(num_classes: int, input_shape: tuple[int, int, int]) -> WideResNet:
        return WideResNet(num_classes, input_shape, depth, widen)

    return factory


MODELS.add("wrn-34-10", ModelInfo(_wrn(34, 10), "WideResNet-34-10 (Zagoruyko & Komodakis 2016; Madry et al. 2018)"))
MODELS.add("wrn-28-10", ModelInfo(_wrn(28, 10), "WideResNet-28-10 (Zagoruyko & Komodakis 2016)"))
MODELS.add("test-wrn", ModelInfo(_wrn(10, 1), "tiny WideResNet-10-1, for tests"))
