"""Native gradient attacks break an undefended model; iterative attacks are at least as strong as one-step ones.

Parametrised over the registry: every native gradient-based Lp entry (not noise, not spatial, not the
AutoAttack or torchattacks backends) must leave an undefended tiny model ≤ 10% accurate at the dataset's
default ε. Budgets are the registry's own.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midbench.attacks.specs import load_registry
from midbench.data import get_dataset
from midbench.evaluation.engine import evaluate

REGISTRY = load_registry()
MNIST_EPS = get_dataset("mnist5k").eps
#: One-step attacks other than L∞ FGSM carry no such guarantee: a single normalised-gradient step of length
#: ε = 2 (L2), or a single step towards one random target class, often stops short of the boundary.
#: Targeted C&W minimises the L2 distance to a *random* target class, which often lies beyond ε = 2; its
#: targeted success is checked in test_attacks_minimal_norm.py instead.
NO_GUARANTEE = {"fgsm-l2", "fgsm-linf-t", "cw-l2-t"}
EXPENSIVE = {"cw-l2"}

NATIVE_GRADIENT = sorted(
    attack_id for attack_id, spec in REGISTRY.attacks.items()
    if spec.implementation.startswith("midbench.attacks.") and spec.family in ("linf", "l2", "l1")
    and attack_id not in NO_GUARANTEE)


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack_id: str, eps: dict[str, float]) -> float:
    torch.manual_seed(0)
    x_adv = REGISTRY.get(attack_id).resolve(eps).build()(model, x, y)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


@pytest.mark.parametrize("attack_id", [pytest.param(a, marks=pytest.mark.slow) if a in EXPENSIVE else a
                                       for a in NATIVE_GRADIENT])
def test_breaks_an_undefended_model(attack_id: str, standard_model: nn.Module,
                                    small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch
    with torch.no_grad():
        assert float((standard_model(x).argmax(1) == y).float().mean()) > 0.8
    assert _accuracy(standard_model, x, y, attack_id, MNIST_EPS) <= 0.10


@pytest.mark.parametrize(("iterative", "one_step"), [("pgd-linf", "fgsm-linf"), ("bim-linf", "fgsm-linf"),
                                                     ("mim-linf", "fgsm-linf"), ("pgd-l2", "fgsm-l2")])
def test_iterative_at_least_as_strong_as_one_step(iterative: str, one_step: str, standard_model: nn.Module,
                                                  small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """At a small ε where FGSM leaves many examples standing, the iterative sibling leaves no more."""
    x, y = small_batch
    small = {"Linf": 0.1, "L2": 1.0, "L1": 5.0}
    assert _accuracy(standard_model, x, y, iterative, small) <= _accuracy(standard_model, x, y, one_step, small)


@pytest.mark.slow
def test_autoattack_at_least_as_strong_as_pgd(pgd_at_checkpoint: object) -> None:
    """On an adversarially trained model (where attacks differ), AutoAttack leaves no more robust examples than
    PGD-40; per example, its APGD-CE component alone runs 100 iterations with restarts of its step size."""
    from midbench.artifacts.loading import load_classifier
    from midbench.data import load_split

    model = load_classifier(pgd_at_checkpoint).model.eval()
    data = load_split("mnist5k", "test").subset(torch.arange(60))
    attacks = [(REGISTRY.get(a).resolve({"Linf": 0.2}), "unknown") for a in ("pgd-linf", "autoattack-linf")]
    evaluation = evaluate(model, data, attacks, device=torch.device("cpu"), seed=0)
    pgd, autoattack = evaluation.matrix.mean(axis=0)
    assert autoattack <= pgd
