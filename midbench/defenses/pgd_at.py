"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018): minimise the cross-entropy on PGD adversarial examples,
``min_θ E[max_{‖δ‖≤ε} CE(f_θ(x + δ), y)]``, the inner maximisation approximated by K PGD steps.

The training attack is a registry entry (default ``pgd-linf``: 40 steps of ε/30 from a random start, Madry's
MNIST setting), optionally with ``--attack-steps``/``--attack-step-size``/``--eps`` overrides; the resolved
attack is recorded in the checkpoint as the model's known attack. Cost per step: K forwards + K backwards for
the attack, 1 + 1 for the update — exactly K + 1 each (goal P3 of docs/performance.md).
"""

from __future__ import annotations

import torch
from torch import nn

from midbench.defenses.base import METHODS
from midbench.defenses.single_attack import SingleAttackTraining


@METHODS.register("pgd-at", "madry")
class PGDAdversarialTraining(SingleAttackTraining):
    """PGD-AT: cross-entropy on adversarial examples only (Madry et al. 2018)."""

    name = "pgd-at"
    citation = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        x_adv = self.attack(model, x, y)
        logits = model(x_adv)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits}
