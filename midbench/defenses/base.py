"""The defense-task interface and the method registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from midbench.attacks.specs import ResolvedAttack
from midbench.config import TrainConfig
from midbench.data.registry import DatasetSpec
from midbench.registry import Registry


class DefenseTask:
    """One training method: how a batch turns into a loss, and which attacks it trains against.

    ``loss(model, x, y)`` returns a dict with at least ``loss`` (a scalar to minimise) and ``logits`` (of the
    examples the training accuracy is measured on). ``train_attacks`` lists the attacks the method trains
    with, fully resolved, so evaluation can tell known from unknown attacks.
    """

    #: registry id of the method
    name: str = ""
    #: the paper the method comes from
    citation: str = ""

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        self.config = config
        self.dataset = dataset

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @property
    def train_attacks(self) -> list[ResolvedAttack]:
        return []

    def describe(self) -> dict[str, Any]:
        """Method-specific hyper-parameters for the checkpoint metadata."""
        return {}


TaskFactory = Callable[[TrainConfig, DatasetSpec], DefenseTask]
METHODS: Registry[TaskFactory] = Registry("method", ("midbench.defenses.standard", "midbench.defenses.pgd_at"))


def build_task(config: TrainConfig, dataset: DatasetSpec) -> DefenseTask:
    """Instantiate the task for ``config.method`` (raises UsageError with suggestions if unknown)."""
    return METHODS.get(config.method)(config, dataset)
