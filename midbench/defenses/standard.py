"""Standard (undefended) training: cross-entropy on clean images."""

from __future__ import annotations

import torch
from torch import nn

from midbench.defenses.base import METHODS, DefenseTask


@METHODS.register("standard")
class StandardTraining(DefenseTask):
    """Empirical risk minimisation with cross-entropy; trains against no attack. Cost: 1 forward + 1 backward."""

    name = "standard"
    citation = "empirical risk minimisation (no defense)"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = model(x)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits}
