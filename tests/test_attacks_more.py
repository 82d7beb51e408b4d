"""MI-FGSM, SLIDE (sparse L1 descent) and the random-noise baselines on the undefended tiny CNN.

Strength tests use MNIST's default ε (0.3 L∞, 10 L1; the test CNN is not brittle in L1, so the L1 bar is relative
to clean accuracy and to l1-APGD rather than absolute); structural tests check one SLIDE step's sparsity and box
awareness, and that noise baselines stay in the ball, are seeded by torch's RNG and never differentiate.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from midbench.attacks.base import Attack, frozen_eval_mode
from midbench.attacks.gradient import FGSM, PGD, input_gradient
from midbench.attacks.l1 import SparseL1Descent, coordinates_per_step, sparse_l1_direction
from midbench.attacks.momentum import MomentumIterative
from midbench.attacks.noise import GaussianNoise, UniformNoise
from midbench.attacks.norms import Norm, distance
from midbench.errors import UsageError
from midbench.evaluation.counting import PassCounter

Batch = tuple[torch.Tensor, torch.Tensor]


def _accuracy(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> float:
    torch.manual_seed(seed)
    x_adv = attack(model, x, y)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def _in_threat_model(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> bool:
    in_box = float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    return in_box and float(distance(x_adv - x, norm).max()) <= eps * (1 + 1e-5) + 1e-6


# --- MI-FGSM -------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_mifgsm_breaks_undefended_model(standard_model: nn.Module, small_batch: Batch) -> None:
    """The MID release's setting: 40 steps of 0.01 at ε 0.3, μ = 1."""
    x, y = small_batch
    attack = MomentumIterative(eps=0.3, norm=Norm.LINF, steps=40, step_size=0.01, decay=1.0)
    assert _accuracy(standard_model, attack, x, y) <= 0.10


def test_mifgsm_at_least_as_strong_as_fgsm(standard_model: nn.Module, small_batch: Batch) -> None:
    x, y = small_batch
    eps = 0.1  # small enough that FGSM leaves some accuracy to compare against
    fgsm = _accuracy(standard_model, FGSM(eps=eps, norm=Norm.LINF), x, y)
    mim = _accuracy(standard_model, MomentumIterative(eps=eps, norm=Norm.LINF, steps=10, step_size=eps / 10), x, y)
    assert mim <= fgsm


def test_mifgsm_l2_and_targeted(standard_model: nn.Module, small_batch: Batch) -> None:
    x, y = small_batch[0][:32], small_batch[1][:32]
    l2 = MomentumIterative(eps=2.0, norm=Norm.L2, steps=10, step_size=0.25)
    torch.manual_seed(0)
    x_adv = l2(standard_model, x, y)
    assert _in_threat_model(x_adv, x, 2.0, Norm.L2)
    with torch.no_grad():
        assert float((standard_model(x_adv).argmax(1) == y).float().mean()) <= 0.5

    targeted = MomentumIterative(eps=0.3, norm=Norm.LINF, steps=20, step_size=0.02, target="fixed:3")
    x_t = targeted(standard_model, x, y)
    with torch.no_grad():
        hit = (standard_model(x_t).argmax(1) == 3).float().mean()
    assert hit >= 0.8


def test_mifgsm_rejects_l1() -> None:
    with pytest.raises(UsageError, match="SparseL1Descent"):
        MomentumIterative(eps=10.0, norm=Norm.L1, steps=10, step_size=1.0)


# --- SLIDE ---------------------------------------------------------------------------------------------------

def _slide_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack) -> float:
    """Accuracy on the raw output of ``attack.run``, after checking that the attack stays in the threat model
    by itself and not only thanks to the framework's final projection."""
    torch.manual_seed(0)
    with frozen_eval_mode(model), torch.enable_grad():
        x_adv = attack.run(model, x, y).detach()
    assert _in_threat_model(x_adv, x, attack.eps, Norm.L1)
    with torch.no_grad():
        return float((model(x_adv).argmax(1) == y).float().mean())


def test_slide_breaks_undefended_model(standard_model: nn.Module, small_batch: Batch) -> None:
    """At MNIST's ε 10 (Tramèr & Boneh's training setting: 10 steps of 1.0, top 1%, random start).

    The tiny test CNN is not brittle in L1: even l1-APGD leaves it about 28% accurate at ε 10 (see the slow test
    below), so the bar is a large drop from clean accuracy and a large margin over the single-coordinate PGD-L1
    step of :mod:`midbench.attacks.gradient`, which barely moves on images.
    """
    x, y = small_batch
    with torch.no_grad():
        clean = float((standard_model(x).argmax(1) == y).float().mean())
    slide = _slide_accuracy(standard_model, x, y, SparseL1Descent(
        eps=10.0, norm=Norm.L1, steps=10, step_size=1.0, sparsity=99, random_start=True))
    single = _accuracy(standard_model, PGD(eps=10.0, norm=Norm.L1, steps=10, step_size=1.0), x, y)
    assert slide <= clean - 0.35
    assert slide <= single - 0.25


def test_slide_box_mask_matters(standard_model: nn.Module, small_batch: Batch,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Without masking the coordinates stuck at the box bound, steps are wasted on background pixels."""
    from midbench.attacks import l1

    x, y = small_batch
    attack = SparseL1Descent(eps=10.0, norm=Norm.L1, steps=10, step_size=1.0, sparsity=99)
    masked = _slide_accuracy(standard_model, x, y, attack)
    unaware = l1.sparse_l1_direction
    monkeypatch.setattr(l1, "sparse_l1_direction", lambda g, x_adv, q: unaware(g, torch.full_like(x_adv, 0.5), q))
    unmasked = _slide_accuracy(standard_model, x, y, attack)
    assert masked < unmasked


@pytest.mark.slow
def test_slide_close_to_l1_apgd(standard_model: nn.Module, small_batch: Batch) -> None:
    """The MNIST evaluation setting (100 steps of 0.5 at ε 10, top 1%; one restart) comes within 10 points of
    the reference l1-APGD (Croce & Hein, ICML 2021) at 100 iterations."""
    from pyautoattack.autopgd_base import APGDAttack

    x, y = small_batch
    slide = _slide_accuracy(standard_model, x, y, SparseL1Descent(
        eps=10.0, norm=Norm.L1, steps=100, step_size=0.5, sparsity=99, random_start=True))
    torch.manual_seed(0)
    apgd = APGDAttack(standard_model, norm="L1", eps=10.0, n_iter=100, n_restarts=1, device="cpu", seed=0)
    with torch.no_grad():
        reference = float((standard_model(apgd.perturb(x, y)).argmax(1) == y).float().mean())
    assert slide <= reference + 0.10


@pytest.mark.parametrize("sparsity", [99.0, 95.0, 99.9])
def test_slide_step_is_sparse_and_box_aware(standard_model: nn.Module, small_batch: Batch, sparsity: float) -> None:
    x, y = small_batch
    coordinates = x[0].numel()
    limit = math.ceil((100 - sparsity) / 100 * coordinates)
    assert coordinates_per_step(coordinates, sparsity) == limit

    # The direction: at most `limit` coordinates, unit L1 norm, none pushing a coordinate out of [0, 1].
    with frozen_eval_mode(standard_model), torch.enable_grad():
        gradient = input_gradient(standard_model, x, y, targeted=False)
    direction = sparse_l1_direction(gradient, x, sparsity).flatten(1)
    position = x.flatten(1)
    assert int((direction != 0).sum(1).max()) <= limit
    assert torch.allclose(direction.abs().sum(1), torch.ones(x.shape[0]))
    assert not bool(((direction < 0) & (position <= 0)).any() or ((direction > 0) & (position >= 1)).any())
    assert bool((direction.sign() == gradient.flatten(1).sign())[direction != 0].all())

    # One step of the attack: the same sparsity, and an L1 length of at most the step size.
    step_size = 0.5
    attack = SparseL1Descent(eps=10.0, norm=Norm.L1, steps=1, step_size=step_size, sparsity=sparsity)
    delta = (attack(standard_model, x, y) - x).flatten(1)
    assert int((delta != 0).sum(1).max()) <= limit
    assert float(delta.abs().sum(1).max()) <= step_size * (1 + 1e-5)


def test_slide_rejects_bad_parameters() -> None:
    with pytest.raises(UsageError):
        SparseL1Descent(eps=10.0, norm=Norm.L1, steps=10, step_size=1.0, sparsity=100)
    with pytest.raises(UsageError):
        SparseL1Descent(eps=10.0, norm=Norm.L2, steps=10, step_size=1.0)


# --- noise baselines -----------------------------------------------------------------------------------------

NOISES = [
    pytest.param(lambda: UniformNoise(eps=0.3, norm=Norm.LINF, samples=4), id="uniform-linf"),
    pytest.param(lambda: UniformNoise(eps=2.0, norm=Norm.L2, samples=4), id="uniform-l2"),
    pytest.param(lambda: UniformNoise(eps=10.0, norm=Norm.L1, samples=4), id="uniform-l1"),
    pytest.param(lambda: GaussianNoise(eps=2.0, norm=Norm.L2, sigma=0.5, samples=4), id="gaussian-l2"),
]


@pytest.mark.parametrize("make", NOISES)
def test_noise_in_ball_seeded_and_forward_only(make, standard_model: nn.Module,  # noqa: ANN001
                                               small_batch: Batch) -> None:
    x, y = small_batch[0][:16], small_batch[1][:16]
    attack = make()
    counter = PassCounter(standard_model)
    torch.manual_seed(3)
    x_adv = attack(counter, x, y)
    torch.manual_seed(3)
    x_again = attack(standard_model, x, y)
    torch.manual_seed(4)
    x_other = attack(standard_model, x, y)

    assert _in_threat_model(x_adv, x, attack.eps, attack.norm)
    assert torch.equal(x_adv, x_again), "same torch seed, same noise"
    assert not torch.equal(x_adv, x_other)
    assert counter.backward_passes == 0
    assert counter.forward_passes == attack.samples * x.shape[0]


def test_uniform_linf_noise_fills_the_cube() -> None:
    """Draws are uniform in [−ε, ε] per coordinate (before clipping, seen here on mid-grey inputs)."""
    torch.manual_seed(0)
    x = torch.full((8, 1, 28, 28), 0.5)
    delta = UniformNoise(eps=0.3, norm=Norm.LINF).draw(x) - x
    assert float(delta.abs().max()) <= 0.3 + 1e-6
    assert abs(float(delta.mean())) < 0.01 and abs(float(delta.std()) - 0.3 / math.sqrt(3)) < 0.01


def test_noise_keeps_first_success() -> None:
    """With a model that errs on every input, the first draw is kept and later draws are not."""

    class AlwaysWrong(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 10).index_fill_(1, torch.tensor([9]), 1.0)

    x = torch.full((4, 1, 8, 8), 0.5)
    y = torch.zeros(4, dtype=torch.long)
    attack = UniformNoise(eps=0.1, norm=Norm.LINF, samples=5)
    torch.manual_seed(0)
    first = attack.draw(x)
    torch.manual_seed(0)
    assert torch.equal(attack(AlwaysWrong(), x, y), first)


def test_noise_weaker_than_pgd(standard_model: nn.Module, small_batch: Batch) -> None:
    x, y = small_batch
    noise = _accuracy(standard_model, UniformNoise(eps=0.3, norm=Norm.LINF, samples=10), x, y)
    pgd = _accuracy(standard_model, PGD(eps=0.3, norm=Norm.LINF, steps=10, step_size=0.05), x, y)
    assert noise >= pgd
    assert noise >= 0.5, "an undefended MNIST model should mostly survive random noise at ε 0.3"
