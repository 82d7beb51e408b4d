"""Properties every registered attack must have (parametrised over the registry, so new entries are tested).

- the result lies in the ε-ball (its norm) and in [0, 1];
- accuracy under attack is at most clean accuracy (robust-points-only evaluation makes this structural, so
  it is checked on the raw attack output, with no masking);
- the same seed gives the same adversarial examples;
- the model's train/eval mode and requires_grad flags are restored, and no parameter gradient is left behind.
"""

from __future__ import annotations

import importlib.util
import math

import pytest
import torch
from attack_inputs import model_and_batch
from torch import nn

from midbench.attacks.norms import Norm, distance, project, project_l1
from midbench.attacks.specs import load_registry
from midbench.data import get_dataset
from midbench.errors import UsageError

REGISTRY = load_registry()
MNIST_EPS = get_dataset("mnist5k").eps
SLOW_FAMILIES = {"ensemble"}


#: Property tests check the contract, not strength: iteration budgets are capped to keep them fast.
BUDGET_CAPS = {"steps": 5, "nb_iter": 2, "nb_sample": 16, "max_iterations": 10, "binary_search_steps": 2,
               "search_steps": 2, "restarts": 2, "samples": 3, "popsize": 4, "angle_steps": 5, "shift_steps": 3,
               "gamma": 0.02}  # JSMA's cost grows with the number of pixels it may change


def _resolved(attack_id: str):  # noqa: ANN202
    spec = REGISTRY.get(attack_id).resolve(MNIST_EPS)
    for name, cap in BUDGET_CAPS.items():
        if name in spec.params:
            spec.params[name] = min(type(cap)(spec.params[name]), cap)
    return spec


def _needs_backend(attack_id: str) -> bool:
    return REGISTRY.get(attack_id).implementation.startswith("torchattacks:")


def _param(attack_id: str):  # noqa: ANN202
    marks = []
    if REGISTRY.get(attack_id).family in SLOW_FAMILIES:
        marks.append(pytest.mark.slow)
    if _needs_backend(attack_id):
        marks.append(pytest.mark.skipif(importlib.util.find_spec("torchattacks") is None,
                                        reason="needs the torchattacks extra"))
    return pytest.param(attack_id, marks=marks)


ATTACK_IDS = [_param(a) for a in sorted(REGISTRY.attacks)]


def changed_pixels(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """Per example, the number of pixel positions (any channel) that changed."""
    return ((x_adv - x).abs().amax(dim=1) > 1e-6).flatten(1).sum(1)


@pytest.mark.parametrize("attack_id", ATTACK_IDS)
def test_attack_contract(attack_id: str, request: pytest.FixtureRequest) -> None:
    spec = _resolved(attack_id)
    model, x, y = model_and_batch(spec, request)
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
    if spec.family == "l0" and "pixels" in spec.params:
        assert int(changed_pixels(x, x_adv).max()) <= spec.params["pixels"]
    if spec.family == "l0" and "gamma" in spec.params:  # JSMA changes pixels in pairs
        assert int(changed_pixels(x, x_adv).max()) <= 2 * math.ceil(spec.params["gamma"] * x[0].numel() / 2)
    assert torch.equal(x_adv, x_again), "same seed, same adversarial examples"
    with torch.no_grad():
        clean_accuracy = float((model(x).argmax(1) == y).float().mean())
        raw_adversarial_accuracy = float((model(x_adv).argmax(1) == y).float().mean())
    # Even without robust-points-only masking (which makes it structural in evaluate()), an attack must not
    # raise accuracy: an implementation that denoised or returned the wrong images would.
    assert raw_adversarial_accuracy <= clean_accuracy


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


class _NoGradModel(nn.Module):
    """A classifier whose forward runs under no_grad: its output is cut from the graph."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(28 * 28, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.linear(x.flatten(1))


@pytest.mark.parametrize("attack_id", ["fgsm-linf", "pgd-linf", "pgd-l2", "ddn-l2", "deepfool-linf"])
def test_a_detached_model_gives_zero_gradient_not_a_crash(attack_id: str,
                                                          small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Gradient attacks on a model with no gradient run (with nothing to follow) instead of failing inside
    autograd with an internal error; the zero-gradients sanity flag explains such a model."""
    x, y = small_batch
    attack = load_registry([]).get(attack_id).resolve(get_dataset("mnist5k").eps).build(seed=0, batch_size=64)
    torch.manual_seed(0)
    x_adv = attack(_NoGradModel().eval(), x[:8], y[:8])
    assert x_adv.shape == x[:8].shape and torch.isfinite(x_adv).all()
