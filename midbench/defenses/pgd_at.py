"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018): minimise the cross-entropy on PGD adversarial examples,
``min_θ E[max_{‖δ‖≤ε} CE(f_θ(x + δ), y)]``, the inner maximisation approximated by K PGD steps.

The training attack is a registry entry (default ``pgd-linf``: 40 steps of ε/30 from a random start, Madry's
MNIST setting), optionally with ``--attack-steps``/``--attack-step-size``/``--eps`` overrides; the resolved
attack is recorded in the checkpoint as the model's known attack. Cost per step: K forwards + K backwards for
the attack, 1 + 1 for the update — exactly K + 1 each (goal P3 of docs/performance.md).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from midbench.attacks.specs import ResolvedAttack
from midbench.attacks.training import resolve_training_attack
from midbench.config import TrainConfig
from midbench.data.datasets import DatasetSpec
from midbench.defenses.base import METHODS, DefenseTask


@METHODS.register("pgd-at", "madry")
class PGDAdversarialTraining(DefenseTask):
    """PGD-AT: cross-entropy on adversarial examples only (Madry et al. 2018)."""

    name = "pgd-at"
    citation = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"
    adversarial_training_baseline = True

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        self.attack_spec = self.resolve_attack(config, dataset)
        self.attack = self.attack_spec.build(seed=config.seed, batch_size=config.batch_size)

    def resolve_attack(self, config: TrainConfig, dataset: DatasetSpec, scale: float = 1.0) -> ResolvedAttack:
        """The training attack at ``scale`` of its budget; subclasses that train on another single attack
        (fast-at) override this."""
        return resolve_training_attack(config, dataset, scale=scale)

    def scale_attacks(self, scale: float) -> None:
        spec = self.attack_spec if scale == 1.0 else self.resolve_attack(self.config, self.dataset, scale)
        self.attack = spec.build(seed=self.config.seed, batch_size=self.config.batch_size)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        x_adv = self.attack(model, x, y)
        logits = model(x_adv)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits}

    @property
    def train_attacks(self) -> list[ResolvedAttack]:
        return [self.attack_spec]

    def describe(self) -> dict[str, Any]:
        return {"train_attack": self.attack_spec.to_dict()}
