"""The architecture catalogue and :func:`build_model`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from midbench.catalog import Catalog

#: ``factory(num_classes, input_shape) -> nn.Module`` taking normalised inputs.
Factory = Callable[[int, tuple[int, int, int]], nn.Module]
#: ``decoder_factory(input_shape) -> nn.Module``: maps the architecture's encoder feature (and the context its
#: encoder returns with ``return_context=True``) back to an image; see :mod:`midbench.mid`.
DecoderFactory = Callable[[tuple[int, int, int]], nn.Module]

#: State-dict prefix of companion modules stored with a classifier but not part of it (MID's teacher encoder
#: and decoder). Loading a checkpoint as a classifier ignores these tensors.
AUX_PREFIX = "aux."


@dataclass(frozen=True)
class ModelInfo:
    """A registered architecture: its factory and a one-line description with the paper it comes from.

    Architectures usable by MID split into ``net.encoder`` and ``net.head`` and register a ``decoder``.
    """

    factory: Factory
    description: str
    decoder: DecoderFactory | None = None


_MODEL_MODULES = ("lenet", "preact_resnet", "mid_resnet18", "small", "wide_resnet")
MODELS: Catalog[ModelInfo] = Catalog("architecture", tuple(f"midbench.models.{name}" for name in _MODEL_MODULES))


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` as the model's first layer, so every model takes inputs in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        # Buffers, so they move with .to(device) and are saved in checkpoints.
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class NormalizedClassifier(nn.Module):
    """``net(normalize(x))``: the object midbench trains, attacks and saves."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def build_model(arch: str, num_classes: int, input_shape: tuple[int, int, int],
                mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> NormalizedClassifier:
    """Build architecture ``arch`` for ``num_classes`` labels and inputs of ``input_shape`` (C, H, W).

    Args:
        mean, std: per-channel normalisation; identity when omitted.

    Raises:
        UsageError: unknown architecture (with close matches).
    """
    info = MODELS.get(arch)
    channels = input_shape[0]
    mean = tuple(mean) if mean is not None else (0.0,) * channels
    std = tuple(std) if std is not None else (1.0,) * channels
    return NormalizedClassifier(info.factory(num_classes, tuple(input_shape)), mean, std)
