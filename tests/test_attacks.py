"""Properties every registered attack must have (parametrised over the registry, so new entries are tested).

- the result lies in the ε-ball (its norm) and in [0, 1];
- accuracy under attack is at most clean accuracy (robust-points-only evaluation makes this structural, so
  it is checked on the raw attack output here);
- the same seed gives the same adversarial examples;
- the model's train/eval mode and requires_grad flags are restored, and no parameter gradient is left behind.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midbench.attacks.norms import Norm, distance, project, project_l1
from midbench.attacks.specs import load_registry
from midbench.data import get_dataset
from midbench.errors import UsageError

REGISTRY = load_registry()
MNIST_EPS = get_dataset("mnist5k").eps
SLOW_FAMILIES = {"ensemble"}


def _resolved(attack_id: str):  # noqa: ANN202
    spec = REGISTRY.get(attack_id).resolve(MNIST_EPS)
    if "steps" in spec.params:  # property tests do not need full budgets
        spec.params["steps"] = min(int(spec.params["steps"]), 5)
    return spec


ATTACK_IDS = [pytest.param(a, marks=pytest.mark.slow) if REGISTRY.get(a).family in SLOW_FAMILIES else a
              for a in sorted(REGISTRY.attacks)]


@pytest.mark.parametrize("attack_id", ATTACK_IDS)
def test_attack_contract(attack_id: str, standard_model: nn.Module,
                         small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    spec = _resolved(attack_id)
    x, y = small_batch[0][:24], small_batch[1][:24]
    model = standard_model
    model.train()  # the attack must switch to eval and back
    flags_before = [p.requires_grad for p in model.parameters()]

    torch.manual_seed(0)
    x_adv = spec.build(seed=0, batch_size=16)(model, x, y)
    torch.manual_seed(0)
    x_again = spec.build(seed=0, batch_size=16)(model, x, y)

    assert model.training, "train mode must be restored"
    assert [p.requires_grad for p in model.parameters()] == flags_before
    assert all(p.grad is None for p in model.parameters()), "no parameter gradients may be left behind"
    model.eval()
    assert x_adv.shape == x.shape and float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    if spec.norm is not None:
        assert float(distance(x_adv - x, spec.norm).max()) <= spec.eps * (1 + 1e-5) + 1e-6
    assert torch.equal(x_adv, x_again), "same seed, same adversarial examples"
    with torch.no_grad():
        clean_correct = model(x).argmax(1) == y
        adv_correct = model(x_adv).argmax(1) == y
    # Attacks keep their unsuccessful examples at the clean point or somewhere in the ball; on this undefended
    # model they must not make accuracy rise above clean on the examples that were correct.
    assert int((adv_correct & clean_correct).sum()) <= int(clean_correct.sum())


@pytest.mark.parametrize("attack_id", ["fgsm-linf", "pgd-linf", "fgsm-l2", "pgd-l2"])
def test_gradient_attacks_break_an_undefended_model(attack_id: str, standard_model: nn.Module,
                                                    small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """At MNIST's default ε (0.3 L∞, 2.0 L2) an undefended model must lose most of its accuracy; PGD at
    least as strong as FGSM on the same examples."""
    x, y = small_batch
    spec = REGISTRY.get(attack_id).resolve(MNIST_EPS)
    torch.manual_seed(0)
    with torch.no_grad():
        clean = (standard_model(x).argmax(1) == y).float().mean()
        robust = (standard_model(spec.build()(standard_model, x, y)).argmax(1) == y).float().mean()
    assert clean > 0.6
    assert robust < clean - 0.3


def test_pgd_at_least_as_strong_as_fgsm(standard_model: nn.Module,
                                        small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch
    accuracies = {}
    for attack_id in ("fgsm-linf", "pgd-linf"):
        torch.manual_seed(0)
        x_adv = REGISTRY.get(attack_id).resolve({"Linf": 0.1}).build()(standard_model, x, y)
        with torch.no_grad():
            accuracies[attack_id] = float((standard_model(x_adv).argmax(1) == y).float().mean())
    assert accuracies["pgd-linf"] <= accuracies["fgsm-linf"]


def test_attack_refuses_inputs_outside_unit_range(standard_model: nn.Module) -> None:
    attack = REGISTRY.get("fgsm-linf").resolve(MNIST_EPS).build()
    with pytest.raises(UsageError, match="normalisation belongs inside the model"):
        attack(standard_model, torch.rand(2, 1, 28, 28) * 255, torch.tensor([0, 1]))
    with pytest.raises(UsageError, match="float images"):
        attack(standard_model, torch.zeros(2, 1, 28, 28, dtype=torch.uint8), torch.tensor([0, 1]))


@pytest.mark.parametrize("norm", list(Norm))
def test_projection_lands_in_ball_and_box(norm: Norm) -> None:
    torch.manual_seed(0)
    x = torch.rand(8, 1, 6, 6)
    x_far = x + torch.randn_like(x) * 3
    eps = {Norm.LINF: 0.1, Norm.L2: 0.5, Norm.L1: 2.0}[norm]
    projected = project(x_far, x, eps, norm)
    assert float(distance(projected - x, norm).max()) <= eps * (1 + 1e-5)
    assert float(projected.min()) >= 0 and float(projected.max()) <= 1


def test_l1_projection_is_the_euclidean_projection() -> None:
    """Duchi et al.'s projection is the closest point of the L1 ball: no random point of the ball is closer."""
    torch.manual_seed(1)
    delta = torch.randn(1, 20)
    projected = project_l1(delta, 1.0)
    assert abs(float(projected.abs().sum()) - 1.0) < 1e-5
    candidates = torch.randn(2000, 20)
    candidates = candidates / candidates.abs().sum(1, keepdim=True) * torch.rand(2000, 1)
    assert float((projected - delta).norm()) <= float((candidates - delta).norm(dim=1).min()) + 1e-6
