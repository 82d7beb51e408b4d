"""First-order Lp attacks: FGSM and PGD.

- FGSM: Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015.
  One step of size ε along the sign of the input gradient (L∞) or the normalised gradient (L2, the "fast
  gradient method").
- N-FGSM: de Jorge et al., "Make Some Noise: Reliable and Efficient Single-Step Adversarial Training", NeurIPS
  2022. FGSM from x plus strong uniform noise, not projected back onto a smaller ball: a training attack that avoids
  catastrophic overfitting at large ε (fast-AT's ``--fast-at-noise``).
- PGD: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018. ``steps``
  steps of ``step_size`` on the cross-entropy, each followed by projection onto the ε-ball and [0, 1], from a
  uniformly random start in the ball (``random_start``). The L1 step is the steepest-ascent direction of the
  L1 norm (all mass on the largest-magnitude gradient coordinate), projected with Duchi et al. (2008).

Targeted variants descend the cross-entropy of the target label instead of ascending that of the true label.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.norms import Norm, distance, project, random_in_ball
from midbench.errors import UsageError


def input_gradient(model: nn.Module, x_adv: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """∂loss/∂x for the loss an attacker *ascends*: CE(true) untargeted, −CE(target) targeted.

    One forward and one backward pass; ``autograd.grad`` on the input only (no parameter gradients).
    The loss is summed, not averaged, so a per-example step does not depend on the batch size.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x_adv), labels, reduction="sum")
    if targeted:
        loss = -loss
    (gradient,) = torch.autograd.grad(loss, x_adv)
    return gradient


def steepest_step(gradient: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The unit-norm steepest-ascent direction for ``norm``."""
    if norm is Norm.LINF:
        return gradient.sign()
    shape = (-1, *([1] * (gradient.dim() - 1)))
    if norm is Norm.L2:
        return gradient / distance(gradient, Norm.L2).clamp_min(1e-12).view(shape)
    # L1: all mass on the largest-magnitude coordinate of each example.
    flat = gradient.flatten(1)
    index = flat.abs().argmax(dim=1, keepdim=True)
    step = torch.zeros_like(flat).scatter_(1, index, flat.gather(1, index).sign())
    return step.view_as(gradient)


class FGSM(Attack):
    """Fast gradient (sign) method: one step of size ε (Goodfellow et al. 2015). Cost: 1 forward + 1 backward."""

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.norm is not None
        labels = self.choose_targets(model, x, y) if self.targeted else y
        gradient = input_gradient(model, x, labels, self.targeted)
        return x + self.eps * steepest_step(gradient, self.norm)


class NoisyFGSM(Attack):
    """N-FGSM (de Jorge et al., NeurIPS 2022): x + η with η uniform in [−noise, noise] per coordinate (clipped to
    [0, 1], the model's input range), then one step of ``step_size`` along the sign of the input gradient there.
    The result is *not* projected back onto a smaller ball: the paper finds that strong noise without that clipping
    is what keeps single-step training from overfitting catastrophically. The perturbation is therefore bounded by
    ``noise + step_size``, and ``eps`` (the ball the attack contract projects onto) must hold it. The paper's
    defaults are noise 2ε and step ε, so ``eps`` = 3ε. L∞ only. Cost: 1 forward + 1 backward.
    """

    def __init__(self, eps: float, norm: Norm, noise: float, step_size: float, target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        if norm is not Norm.LINF:
            raise UsageError(f"N-FGSM is an L∞ attack (de Jorge et al. 2022); got norm {norm}")
        require_at_least("N-FGSM", {"noise": (noise, 0), "step_size": (step_size, 0)})
        if noise + step_size > eps * (1 + 1e-9):
            raise UsageError(f"N-FGSM moves a pixel by up to noise + step_size = {noise + step_size:g}, beyond its "
                             f"ε = {eps:g}; set ε to at least their sum")
        self.noise = float(noise)
        self.step_size = float(step_size)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = self.choose_targets(model, x, y) if self.targeted else y
        start = (x + randomness.uniform_like(x, -self.noise, self.noise)).clamp(0.0, 1.0)
        gradient = input_gradient(model, start, labels, self.targeted)
        return start + self.step_size * gradient.sign()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "noise": self.noise, "step_size": self.step_size}


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018). Cost: ``steps`` forwards + ``steps`` backwards.

    Args:
        steps: number of gradient steps (≥ 1).
        step_size: size of each step in ``norm``.
        random_start: start from a random point of the ε-ball instead of ``x``.
    """

    def __init__(self, eps: float, norm: Norm, steps: int, step_size: float, random_start: bool = True,
                 target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        require_at_least("PGD", {"steps": (steps, 1), "step_size": (step_size, 0)})
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.random_start = bool(random_start)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.norm is not None
        labels = self.choose_targets(model, x, y) if self.targeted else y
        x_adv = random_in_ball(x, self.eps, self.norm) if self.random_start else x.clone()
        for _ in range(self.steps):
            gradient = input_gradient(model, x_adv, labels, self.targeted)
            x_adv = project(x_adv + self.step_size * steepest_step(gradient, self.norm), x, self.eps, self.norm)
        return x_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "step_size": self.step_size,
                "random_start": self.random_start}
