"""Small CNNs: the TRADES ``SmallCNN`` for MNIST-sized data and tiny ``test-*`` models for the test suite."""

from __future__ import annotations

import torch
from torch import nn

from midbench.models.factory import MODELS, ModelInfo
from midbench.models.pooling import MaxPool2d, max_pool2d


class SmallCNN(nn.Module):
    """Four 3×3 convolutions (32, 32, 64, 64) with two max-pools, then 200-200 fully connected layers.

    The MNIST model of TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and
    Accuracy", ICML 2019), widely used for MNIST robustness baselines.
    """

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, 32, 3), nn.ReLU(), nn.Conv2d(32, 32, 3), nn.ReLU(), MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(), MaxPool2d(2),
        )
        side_h = ((height - 4) // 2 - 4) // 2
        side_w = ((width - 4) // 2 - 4) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * side_h * side_w, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class TestMLP(nn.Module):
    """A one-hidden-layer perceptron (32 units) for fast tests."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        size = input_shape[0] * input_shape[1] * input_shape[2]
        self.layers = nn.Sequential(nn.Flatten(), nn.Linear(size, 32), nn.ReLU(), nn.Linear(32, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class TestCNN(nn.Module):
    """One 3×3 convolution (8 channels), a 4×4 max-pool and a linear layer, for fast tests."""

    def __init__(self, num_classes: int, input_shape: tuple[int, int, int]) -> None:
        super().__init__()
        channels, height, width = input_shape
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.linear = nn.Linear(8 * (height // 4) * (width // 4), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(max_pool2d(torch.relu(self.conv(x)), 4).flatten(1))


MODELS.add("small-cnn", ModelInfo(SmallCNN, "TRADES SmallCNN for 28×28 inputs (Zhang et al. 2019)"))
MODELS.add("test-mlp", ModelInfo(TestMLP, "tiny MLP for tests"))
MODELS.add("test-cnn", ModelInfo(TestCNN, "tiny CNN for tests"))
