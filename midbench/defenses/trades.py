"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019).

The loss trades natural accuracy against robustness with a KL regulariser:

    CE(f(x), y) + β · KL(f(x) ‖ f(x')),    x' = argmax_{x' ∈ B(x, ε)} KL(f(x) ‖ f(x')),

both terms averaged over the batch, the inner maximisation approximated by :class:`midbench.attacks.kl.TradesKL`
(K signed-gradient steps on the KL from ``x + 0.001·N(0, I)``, projected onto the ε-ball and [0, 1]).
β = 6 is the paper's CIFAR-10 setting (``--beta``).

The ball, K and the step size come from the training attack (``--train-attack``, default ``pgd-linf``: 40 steps of
ε/30, i.e. the paper's MNIST 40 × 0.01 at ε = 0.3) with its ``--eps``/``--attack-steps``/``--attack-step-size``
overrides. The attack is recorded as ``trades-kl-<family>`` (version 0, a configuration of its own): it maximises a
different loss from a different start than PGD, so by specification it is not ``pgd-linf`` and evaluation
counts ``pgd-linf`` as unknown for a TRADES model.

Cost per training step and example: K + 1 forwards and K backwards for the attack (the +1 is the clean
prediction the KL is measured from, taken in eval mode like the attack), then one forward of x and one of x'
and a backward through both — K + 3 forwards and K + 2 backwards.
"""

from __future__ import annotations

import torch
from torch import nn

from midbench.attacks.kl import TradesKL, kl_from_clean
from midbench.attacks.norms import Norm
from midbench.attacks.specs import ResolvedAttack
from midbench.attacks.training import resolve_training_attack
from midbench.config import TrainConfig
from midbench.data.datasets import DatasetSpec
from midbench.defenses.base import METHODS
from midbench.defenses.paired import PairedLossTraining
from midbench.errors import UsageError

#: standard deviation of the Gaussian start of the KL attack (the paper's 0.001)
INIT_STD = 0.001


def trades_loss(clean_logits: torch.Tensor, adv_logits: torch.Tensor, y: torch.Tensor, beta: float
                ) -> dict[str, torch.Tensor]:
    """The TRADES objective given the logits of x and x': ``CE(f(x), y) + β·mean_i KL(f(x_i) ‖ f(x'_i))``.

    Returns:
        ``loss``, and its parts ``natural`` (the cross-entropy) and ``robust`` (the mean KL).
    """
    natural = nn.functional.cross_entropy(clean_logits, y)
    robust = kl_from_clean(clean_logits, adv_logits).mean()
    return {"loss": natural + beta * robust, "natural": natural, "robust": robust}


def resolve_kl_attack(config: TrainConfig, dataset: DatasetSpec, scale: float = 1.0) -> ResolvedAttack:
    """TRADES' inner attack: the training attack's ball, steps and step size (at ``scale`` of its budget), as a
    :class:`TradesKL`."""
    base = resolve_training_attack(config, dataset, scale=scale)
    if base.norm not in (Norm.LINF, Norm.L2) or "steps" not in base.params or "step_size" not in base.params:
        raise UsageError(f"TRADES takes its ball, steps and step size from an L∞ or L2 attack with steps "
                         f"(like pgd-linf); --train-attack {base.id} is not one")
    if base.targeted:
        raise UsageError(f"TRADES' inner attack is untargeted; --train-attack {base.id} is targeted")
    params = {"steps": int(base.params["steps"]), "step_size": float(base.params["step_size"]),
              "init_std": INIT_STD}
    return ResolvedAttack(id=f"trades-kl-{base.family}", version=0, family=base.family, norm=base.norm,
                          implementation="midbench.attacks.kl:TradesKL", eps=base.eps, target=None, params=params)


@METHODS.register("trades")
class TradesTraining(PairedLossTraining):
    """TRADES: cross-entropy on clean images plus β·KL(f(x) ‖ f(x')) (Zhang et al., ICML 2019; β = 6)."""

    name = "trades"
    citation = "Zhang et al., Theoretically Principled Trade-off between Robustness and Accuracy, ICML 2019"
    attack: TradesKL

    def resolve_attack(self, config: TrainConfig, dataset: DatasetSpec, scale: float = 1.0) -> ResolvedAttack:
        return resolve_kl_attack(config, dataset, scale)

    paired_loss = staticmethod(trades_loss)
