"""Minimal-norm attacks: C&W-L2, DDN (midbench.attacks.minimal_norm) and DeepFool (midbench.attacks.deepfool).

Budgets are small for CPU (C&W: 50 iterations × 3 binary-search steps). The tiny ``standard_model`` is less
fragile in L2 than a real MNIST network: at ε = 2.0 even 200-step PGD-L2 or DDN leave about a quarter of the 64
examples correctly classified (their minimal adversarial perturbation is larger than 2), so "breaks the model"
is checked against PGD-L2 on the same examples rather than as an absolute ≤ 10%; DeepFool-L∞ at 0.3 does reach
≤ 10%.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midbench.attacks.base import Attack
from midbench.attacks.deepfool import DeepFool
from midbench.attacks.gradient import PGD
from midbench.attacks.minimal_norm import DDN, CarliniWagnerL2
from midbench.attacks.norms import Norm, distance
from midbench.errors import UsageError

L2_EPS, LINF_EPS = 2.0, 0.3  # MNIST's default ε
# A short C&W: larger first constant and learning rate than the paper's, so 150 Adam steps are enough.
CW_FAST = {"steps": 50, "search_steps": 3, "initial_const": 10.0, "lr": 0.2}


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _attack(attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    torch.manual_seed(0)
    return attack(model, x, y)


L2_ATTACKS = {
    "cw-l2": lambda: CarliniWagnerL2(L2_EPS, Norm.L2, **CW_FAST),
    "ddn-l2": lambda: DDN(L2_EPS, Norm.L2, steps=50),
    "deepfool-l2": lambda: DeepFool(L2_EPS, Norm.L2),
}
SLOW_CW = pytest.mark.slow  # C&W's 150 iterations take a few seconds on a loaded CPU


@pytest.fixture(scope="module")
def l2_adversarials(standard_model: nn.Module, small_batch: tuple[torch.Tensor, torch.Tensor]):  # noqa: ANN201
    """Each L2 attack's output at ε = 2.0 on ``small_batch``, computed once and shared by the tests below."""
    cache: dict[str, torch.Tensor] = {}

    def get(attack_id: str) -> torch.Tensor:
        if attack_id not in cache:
            cache[attack_id] = _attack(L2_ATTACKS[attack_id](), standard_model, *small_batch)
        return cache[attack_id]

    return get


@pytest.fixture(scope="module")
def pgd_l2_accuracy(standard_model: nn.Module, small_batch: tuple[torch.Tensor, torch.Tensor]) -> float:
    """Accuracy under the registry's PGD-L2 (40 steps of ε/16) at ε = 2.0: the bar the L2 attacks must meet."""
    x, y = small_batch
    return _accuracy(standard_model, _attack(PGD(L2_EPS, Norm.L2, 40, L2_EPS / 16), standard_model, x, y), y)


@pytest.mark.parametrize("attack_id", [pytest.param("cw-l2", marks=SLOW_CW), "ddn-l2", "deepfool-l2"])
def test_l2_attacks_break_the_undefended_model(attack_id: str, l2_adversarials,  # noqa: ANN001
                                               standard_model: nn.Module,
                                               small_batch: tuple[torch.Tensor, torch.Tensor],
                                               pgd_l2_accuracy: float) -> None:
    x, y = small_batch
    x_adv = l2_adversarials(attack_id)
    clean, robust = _accuracy(standard_model, x, y), _accuracy(standard_model, x_adv, y)
    assert float(distance(x_adv - x, Norm.L2).max()) <= L2_EPS * (1 + 1e-5)
    assert robust <= clean - 0.4, f"robust accuracy {robust:.3f} vs clean {clean:.3f}"
    assert robust <= pgd_l2_accuracy + 0.1, f"robust accuracy {robust:.3f} vs PGD-L2's {pgd_l2_accuracy:.3f}"


def test_deepfool_linf_breaks_the_undefended_model(standard_model: nn.Module,
                                                   small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch
    x_adv = _attack(DeepFool(LINF_EPS, Norm.LINF), standard_model, x, y)
    assert float(distance(x_adv - x, Norm.LINF).max()) <= LINF_EPS + 1e-6
    assert _accuracy(standard_model, x_adv, y) <= 0.10


@pytest.mark.parametrize("attack_id", [pytest.param("cw-l2", marks=SLOW_CW), "ddn-l2"])
def test_minimal_norm_perturbations_are_smaller_than_eps(attack_id: str, l2_adversarials,  # noqa: ANN001
                                                         standard_model: nn.Module,
                                                         small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """PGD-L2 ends on the sphere of radius ε; a minimal-norm attack's successful perturbations lie well inside,
    and (being the kept best, which the projection leaves untouched) each of them is adversarial."""
    x, y = small_batch
    x_adv = l2_adversarials(attack_id)
    norms = distance(x_adv - x, Norm.L2)
    with torch.no_grad():
        fooled = standard_model(x_adv).argmax(1) != y
        clean_correct = standard_model(x).argmax(1) == y
    successful = fooled & clean_correct
    assert int(successful.sum()) >= 20
    assert float(norms[successful].median()) < 0.6 * L2_EPS
    moved_inside = (norms > 0) & (norms < L2_EPS * (1 - 1e-3))
    assert bool(fooled[moved_inside].all()), "a perturbation kept inside the ball must be adversarial"
    # A correctly classified example that survived got either nothing (no adversarial found: the clean input)
    # or a kept best larger than ε, projected onto the sphere.
    survived = norms[clean_correct & ~fooled]
    assert bool(((survived == 0) | (survived >= L2_EPS * (1 - 1e-3))).all())


@pytest.mark.parametrize("attack", [
    pytest.param(CarliniWagnerL2(10.0, Norm.L2, target="random", **CW_FAST), id="cw-l2-t", marks=SLOW_CW),
    pytest.param(DDN(10.0, Norm.L2, steps=50, target="random"), id="ddn-l2-t"),
])
def test_targeted_attacks_hit_their_targets(attack: Attack, standard_model: nn.Module,
                                            small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """With ε large enough not to bind, a targeted minimal-norm attack reaches the chosen (random) target."""
    x, y = small_batch
    torch.manual_seed(0)
    targets = attack.choose_targets(standard_model, x, y)  # the same draw the attack makes first
    x_adv = _attack(attack, standard_model, x, y)
    assert bool((targets != y).all())
    with torch.no_grad():
        hit = standard_model(x_adv).argmax(1) == targets
    assert float(hit.float().mean()) >= 0.8


@SLOW_CW
def test_cw_confidence_is_reached(standard_model: nn.Module,
                                  small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """With κ > 0 the kept examples beat every other logit by at least κ, and pay for it with a larger norm."""
    x, y = small_batch[0][:24], small_batch[1][:24]
    plain = _attack(CarliniWagnerL2(10.0, Norm.L2, **CW_FAST), standard_model, x, y)
    confident = _attack(CarliniWagnerL2(10.0, Norm.L2, confidence=5.0, **CW_FAST), standard_model, x, y)
    with torch.no_grad():
        logits = standard_model(confident)
    label_logit = logits.gather(1, y.unsqueeze(1)).squeeze(1)
    best_other = logits.scatter(1, y.unsqueeze(1), float("-inf")).amax(1)
    found = distance(confident - x, Norm.L2) > 0
    assert int(found.sum()) >= 12
    assert bool((best_other[found] - label_logit[found] > 5.0 - 1e-3).all())
    both = found & (distance(plain - x, Norm.L2) > 0)
    assert float(distance(confident - x, Norm.L2)[both].median()) > float(distance(plain - x, Norm.L2)[both].median())


def test_deepfool_rejects_targets_and_other_norms() -> None:
    with pytest.raises(UsageError, match="untargeted"):
        DeepFool(L2_EPS, Norm.L2, target="random")
    with pytest.raises(UsageError, match="L2 and Linf"):
        DeepFool(10.0, Norm.L1)
    with pytest.raises(UsageError, match="candidate"):
        DeepFool(L2_EPS, Norm.L2, candidates=1)


@pytest.mark.parametrize("cls", [CarliniWagnerL2, DDN])
def test_l2_attacks_reject_other_norms(cls: type[Attack]) -> None:
    with pytest.raises(UsageError, match="L2"):
        cls(LINF_EPS, Norm.LINF)
    with pytest.raises(UsageError):
        cls(L2_EPS, Norm.L2, steps=0)


SMALL = [
    pytest.param(lambda: CarliniWagnerL2(L2_EPS, Norm.L2, steps=10, search_steps=2, lr=0.1), id="cw-l2"),
    pytest.param(lambda: CarliniWagnerL2(L2_EPS, Norm.L2, steps=10, search_steps=2, lr=0.1, target="random"),
                 id="cw-l2-t"),
    pytest.param(lambda: DDN(L2_EPS, Norm.L2, steps=10), id="ddn-l2"),
    pytest.param(lambda: DDN(L2_EPS, Norm.L2, steps=10, target="least-likely"), id="ddn-l2-t"),
    pytest.param(lambda: DeepFool(L2_EPS, Norm.L2, steps=10), id="deepfool-l2"),
    pytest.param(lambda: DeepFool(LINF_EPS, Norm.LINF, steps=10, candidates=4), id="deepfool-linf"),
]


@pytest.mark.parametrize("make", SMALL)
def test_deterministic_and_model_left_as_found(make, standard_model: nn.Module,  # noqa: ANN001
                                               small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch[0][:16], small_batch[1][:16]
    model = standard_model
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    try:
        first = _attack(make(), model, x, y)
        second = _attack(make(), model, x, y)
        assert model.training, "train mode must be restored"
        assert [p.requires_grad for p in model.parameters()] == flags
        assert all(p.grad is None for p in model.parameters()), "no parameter gradients may be left behind"
    finally:
        model.eval()
    assert torch.equal(first, second), "same seed, same adversarial examples"
    assert float(first.min()) >= 0.0 and float(first.max()) <= 1.0


@pytest.mark.parametrize("make", SMALL)
def test_empty_batch(make, standard_model: nn.Module) -> None:  # noqa: ANN001
    x = torch.zeros(0, 1, 28, 28)
    assert make()(standard_model, x, torch.zeros(0, dtype=torch.long)).shape == x.shape


def test_misclassified_inputs_are_left_alone(standard_model: nn.Module,
                                             small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """An input the model already gets wrong is its own minimal adversarial example (distance 0)."""
    x, y = small_batch
    with torch.no_grad():
        wrong = standard_model(x).argmax(1) != y
    assert bool(wrong.any())
    for attack in (CarliniWagnerL2(L2_EPS, Norm.L2, steps=5, search_steps=1), DDN(L2_EPS, Norm.L2, steps=5),
                   DeepFool(L2_EPS, Norm.L2, steps=5)):
        x_adv = _attack(attack, standard_model, x[wrong], y[wrong])
        assert float(distance(x_adv - x[wrong], Norm.L2).max()) < 1e-4, type(attack).__name__
