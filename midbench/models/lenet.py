"""The LeNet-style MNIST classifier and autoencoder of the MID release (Zhang et al., TPAMI 2024,
arXiv:2404.03340).

Trunk (the MID encoder): conv3×3(C→32, pad 1) → ReLU → maxpool2 → conv3×3(32→64, pad 1) → ReLU → maxpool2.
Head: flatten → linear(64·H/4·W/4 → 200) → ReLU → linear(200 → classes). Decoder (the MID teacher's):
maxunpool2 → convT3×3(64→32, pad 1) → maxunpool2 → convT3×3(32→C, pad 1), no output activation, unpooling with
the indices of the encoder pass that produced the feature. Layer names follow the release (``conv1``,
``conv2``, ``linear1``, ``linear2``, ``dec2``, ``dec4``) so its weights import by name.
"""

from __future__ import annotations

import torch
from torch import nn

from midbench.models.factory import MODELS, ModelInfo
from midbench.models.pooling import max_pool2d, max_pool2d_with_indices

#: the encoder's context for the decoder: the two max-pool index tensors and the pre-pool sizes
LeNetContext = tuple[torch.Tensor, torch.Tensor, torch.Size, torch.Size]


class LeNetEncoder(nn.Module):
    """The convolutional trunk; ``forward`` returns the feature map, and with ``return_context=True`` also the
    pooling indices the decoder needs."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)

    def forward(self, x: torch.Tensor, return_context: bool = False
                ) -> torch.Tensor | tuple[torch.Tensor, LeNetContext]:
        if not return_context:
            x = max_pool2d(torch.relu(self.conv1(x)), 2)
            return max_pool2d(torch.relu(self.conv2(x)), 2)
        first = torch.relu(self.conv1(x))
        pooled, index1 = max_pool2d_with_indices(first, 2)
        second = torch.relu(self.conv2(pooled))
        feature, index2 = max_pool2d_with_indices(second, 2)
        return feature, (index1, index2, first.shape, second.shape)


class LeNetHead(nn.Module):
    """The classifier head on a 64×(H/4)×(W/4) feature map."""

    def __init__(self, feature_size: int, num_classes: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(feature_size, 200)
        self.linear2 = nn.Linear(200, num_classes)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        return self.linear2(torch.relu(self.linear1(feature.flatten(1))))


class LeNetDecoder(nn.Module):
    """Feature map → image, unpooling with the encoder's indices (the release's ``dec1``–``dec4``)."""

    def __init__(self, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        self.dec2 = nn.ConvTranspose2d(64, 32, 3, padding=1)
        self.dec4 = nn.ConvTranspose2d(32, input_shape[0], 3, padding=1)

    def forward(self, feature: torch.Tensor, context: LeNetContext) -> torch.Tensor:
        index1, index2, size1, size2 = context
        x = nn.functional.max_unpool2d(feature, index2, 2, output_size=size2[-2:])
        x = nn.functional.max_unpool2d(self.dec2(x), index1, 2, output_size=size1[-2:])
        return self.dec4(x)


class LeNet(nn.Module):
    """Encoder + head as one classifier (the MID source model, and the MID classifier ``C∘E_s``)."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.encoder = LeNetEncoder(channels)
        self.head = LeNetHead(64 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


MODELS.add("lenet", ModelInfo(LeNet, "LeNet trunk + head of the MID MNIST release (Zhang et al. 2024)",
                              decoder=LeNetDecoder))
