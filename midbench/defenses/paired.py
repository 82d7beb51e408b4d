"""The shared shape of TRADES and MART: a loss of the clean and the adversarial logits, weighted by β.

Both methods craft x' with one training attack, run the model on x and on x' (two forwards, so batch-norm
statistics stay per batch), and combine the two sets of logits with a robustness weight β. They differ only in
their inner attack and in how the logits are combined; a subclass names those two (:meth:`resolve_attack`,
:meth:`paired_loss`) and inherits the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from midbench.attacks.specs import ResolvedAttack
from midbench.config import TrainConfig
from midbench.data.datasets import DatasetSpec
from midbench.defenses.base import DefenseTask
from midbench.defenses.options import check_non_negative, option


@dataclass(frozen=True)
class BetaOptions:
    """TRADES' and MART's option: the weight of the robustness term."""

    beta: float = option(6.0, "TRADES/MART: weight β of the KL robustness term (the papers' 6).")

    def __post_init__(self) -> None:
        check_non_negative(self, "beta")


class PairedLossTraining(DefenseTask):
    """A method whose loss is ``paired_loss(f(x), f(x'), y, β)``, x' from its training attack; the training
    accuracy is measured on x'."""

    Options = BetaOptions
    adversarial_training_baseline = True

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        self.attack_spec = self.resolve_attack(config, dataset)
        self.attack = self.attack_spec.build(seed=config.seed, batch_size=config.batch_size)
        self.beta = float(self.options.beta)

    def resolve_attack(self, config: TrainConfig, dataset: DatasetSpec, scale: float = 1.0) -> ResolvedAttack:
        """The inner attack, resolved from the training config at ``scale`` of its budget."""
        raise NotImplementedError

    def scale_attacks(self, scale: float) -> None:
        spec = self.attack_spec if scale == 1.0 else self.resolve_attack(self.config, self.dataset, scale)
        self.attack = spec.build(seed=self.config.seed, batch_size=self.config.batch_size)

    @staticmethod
    def paired_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor, beta: float
                    ) -> dict[str, torch.Tensor]:
        """``loss`` and its named parts, from the logits of x and x'."""
        raise NotImplementedError

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.adversarial_loss(model, x, y, self.attack(model, x, y))

    def adversarial_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        """The loss for given adversarial examples (two forwards, in the model's current mode)."""
        clean_logits = model(x)
        adv_logits = model(x_adv)
        return {**self.paired_loss(clean_logits, adv_logits, y, self.beta), "logits": adv_logits}

    @property
    def train_attacks(self) -> list[ResolvedAttack]:
        return [self.attack_spec]

    def describe(self) -> dict[str, Any]:
        return {"beta": self.beta, "train_attack": self.attack_spec.to_dict()}

    def summary(self) -> str:
        return f"β = {self.beta:g}"
