"""The shared shape of TRADES and MART: a loss of the clean and the adversarial logits, weighted by β.

Both methods craft x' with one training attack, run the model on x and on x' (two forwards, so batch-norm
statistics stay per batch), and combine the two sets of logits with a robustness weight β. They differ only in
their inner attack and in how the logits are combined; a subclass names those two (:meth:`resolve_attack`, by default
the training attack, and :meth:`paired_loss`) and inherits the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from midbench.config import TrainConfig
from midbench.data.datasets import DatasetSpec
from midbench.defenses.options import check_non_negative, option
from midbench.defenses.single_attack import SingleAttackTraining


@dataclass(frozen=True)
class BetaOptions:
    """TRADES' and MART's option: the weight of the robustness term."""

    beta: float = option(6.0, "TRADES/MART: weight β of the KL robustness term (the papers' 6).")

    def __post_init__(self) -> None:
        check_non_negative(self, "beta")


class PairedLossTraining(SingleAttackTraining):
    """A method whose loss is ``paired_loss(f(x), f(x'), y, β)``, x' from its training attack; the training
    accuracy is measured on x'."""

    Options = BetaOptions

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        self.beta = float(self.options.beta)

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

    def describe(self) -> dict[str, Any]:
        return {"beta": self.beta, "train_attack": self.attack_spec.to_dict()}

    def summary(self) -> str:
        return f"β = {self.beta:g}"
