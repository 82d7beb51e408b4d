"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018): minimise the cross-entropy on PGD adversarial examples,
``min_θ E[max_{‖δ‖≤ε} CE(f_θ(x + δ), y)]``, the inner maximisation approximated by K PGD steps.

The training attack is a registry entry (default ``pgd-linf``: 40 steps of ε/30 from a random start, Madry's
MNIST setting), optionally with ``--attack-steps``/``--attack-step-size``/``--eps`` overrides; the resolved
attack is recorded in the checkpoint as the model's known attack. Cost per step: K forwards + K backwards for
the attack, 1 + 1 for the update — exactly K + 1 each (goal P3 in performance.md).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from midbench.attacks.specs import ResolvedAttack, load_registry
from midbench.config import TrainConfig, parse_eps
from midbench.data.registry import DatasetSpec
from midbench.defenses.base import METHODS, DefenseTask
from midbench.errors import UsageError


def resolve_training_attack(config: TrainConfig, dataset: DatasetSpec, attack_id: str | None = None,
                            steps_optional: bool = False) -> ResolvedAttack:
    """A training attack of ``config`` (``attack_id``, default ``config.train_attack``): its registry entry at
    the dataset's ε, with the config's ``eps``/``attack_steps``/``attack_step_size`` overrides.

    ``steps_optional`` (for MID's pool) leaves attacks without steps as they are instead of refusing.
    An overridden attack no longer equals the registry entry, so it is recorded as version 0 ("custom").
    """
    spec = load_registry().get(attack_id or config.train_attack)
    eps_override = parse_eps(config.eps, spec.norm.value if spec.norm else "Linf") if config.eps is not None else None
    attack = spec.resolve(dataset.eps, eps_override)
    params = dict(attack.params)
    if config.attack_steps is not None and not (steps_optional and "steps" not in params):
        if "steps" not in params:
            raise UsageError(f"--attack-steps does not apply to {spec.id}, which has no steps")
        params["steps"] = config.attack_steps
        if config.attack_step_size is None and "step_size" in params:
            params["step_size"] = 2.5 * attack.eps / config.attack_steps  # Madry et al.'s 2.5ε/K rule
    if config.attack_step_size is not None and not (steps_optional and "step_size" not in params):
        params["step_size"] = float(config.attack_step_size)
    if params != attack.params:
        attack = replace(attack, params=params, version=0)
    return attack


@METHODS.register("pgd-at", "madry")
class PGDAdversarialTraining(DefenseTask):
    """PGD-AT: cross-entropy on adversarial examples only (Madry et al. 2018)."""

    name = "pgd-at"
    citation = "Madry et al., Towards Deep Learning Models Resistant to Adversarial Attacks, ICLR 2018"

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        self.attack_spec = self.resolve_attack(config, dataset)
        self.attack = self.attack_spec.build(seed=config.seed, batch_size=config.batch_size)

    def resolve_attack(self, config: TrainConfig, dataset: DatasetSpec) -> ResolvedAttack:
        """The training attack; subclasses that train on another single attack (fast-at) override this."""
        return resolve_training_attack(config, dataset)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        x_adv = self.attack(model, x, y)
        logits = model(x_adv)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits}

    @property
    def train_attacks(self) -> list[ResolvedAttack]:
        return [self.attack_spec]

    def describe(self) -> dict[str, Any]:
        return {"train_attack": self.attack_spec.to_dict()}
