"""The shared part of the methods that train on one attack: PGD-AT and fast-AT (cross-entropy on x'), TRADES and MART
(a loss of x and x'). Each resolves its training attack from the config, builds it once, rebuilds it at a fraction
of its budget during an ε warm-up (docs/baselines.md, "ε warm-up"), and records the full-budget attack as the
model's known attack. A subclass names its attack (:meth:`resolve_attack`) and its loss.
"""

from __future__ import annotations

from typing import Any

from midbench.attacks.specs import ResolvedAttack
from midbench.attacks.training import resolve_training_attack
from midbench.config import TrainConfig
from midbench.data.datasets import DatasetSpec
from midbench.defenses.base import DefenseTask


class SingleAttackTraining(DefenseTask):
    """A method trained on the examples of one attack, ``self.attack`` (resolved as ``self.attack_spec``)."""

    adversarial_training_baseline = True

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        self.attack_spec = self.resolve_attack(config, dataset)
        self.attack = self.attack_spec.build(seed=config.seed, batch_size=config.batch_size)

    def resolve_attack(self, config: TrainConfig, dataset: DatasetSpec, scale: float = 1.0) -> ResolvedAttack:
        """The training attack at ``scale`` of its budget: by default the config's ``--train-attack`` with its
        overrides."""
        return resolve_training_attack(config, dataset, scale=scale)

    def scale_attacks(self, scale: float) -> None:
        spec = self.attack_spec if scale == 1.0 else self.resolve_attack(self.config, self.dataset, scale)
        self.attack = spec.build(seed=self.config.seed, batch_size=self.config.batch_size)

    @property
    def train_attacks(self) -> list[ResolvedAttack]:
        return [self.attack_spec]

    def describe(self) -> dict[str, Any]:
        return {"train_attack": self.attack_spec.to_dict()}
