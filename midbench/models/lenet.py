"""The LeNet-style MNIST classifier of the MID release (Zhang et al., TPAMI 2024, arXiv:2404.03340).

Trunk (the MID encoder): conv3×3(C→32, pad 1) → ReLU → maxpool2 → conv3×3(32→64, pad 1) → ReLU → maxpool2.
Head: flatten → linear(64·H/4·W/4 → 200) → ReLU → linear(200 → classes). Layer names follow the release
(``conv1``, ``conv2``, ``linear1``, ``linear2``) so its weights import by name.
"""

from __future__ import annotations

import torch
from torch import nn

from midbench.models.factory import MODELS, ModelInfo


class LeNetEncoder(nn.Module):
    """The convolutional trunk; ``forward`` returns the feature map (and optionally the pooling indices)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(torch.relu(self.conv1(x)), 2)
        return nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)


class LeNetHead(nn.Module):
    """The classifier head on a 64×(H/4)×(W/4) feature map."""

    def __init__(self, feature_size: int, num_classes: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(feature_size, 200)
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.relu(self.linear1(feature.flatten(1))))


class LeNet(nn.Module):
    """Encoder + head as one classifier (the MID source model)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.encoder = LeNetEncoder(channels)
        self.head = LeNetHead(64 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


MODELS.add("lenet", ModelInfo(LeNet, "LeNet trunk + head of the MID MNIST release (Zhang et al. 2024)"))
