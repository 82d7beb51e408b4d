"""Momentum iterative fast gradient sign method (MI-FGSM).

Dong, Liao, Pang, Su, Zhu, Hu & Li, "Boosting Adversarial Attacks with Momentum", CVPR 2018 (Algorithm 1 and
its L2 variant, Eq. 7–8). The attack accumulates a velocity of L1-normalised input gradients,

    g_{t+1} = μ · g_t + ∇_x J(x*_t, y) / ‖∇_x J(x*_t, y)‖₁          (per example)

and steps along its sign (L∞: x*_{t+1} = x*_t + α · sign(g_{t+1})) or its L2-normalised direction
(L2: x*_{t+1} = x*_t + α · g_{t+1} / ‖g_{t+1}‖₂). The paper uses α = ε/T so that T steps cannot leave the
ball; midbench projects onto the ε-ball and [0, 1] after every step instead, so any step size is allowed
(the MID release runs 40 steps of 0.01 at ε = 0.3).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.gradient import input_gradient, steepest_step
from midbench.attacks.norms import Norm, distance, project, random_in_ball
from midbench.errors import UsageError


class MomentumIterative(Attack):
    """MI-FGSM (Dong et al., CVPR 2018) in L∞ or L2, untargeted or targeted.

    Cost: ``steps`` forwards + ``steps`` backwards per example (plus one forward to choose targets when
    targeted, as for :class:`midbench.attacks.gradient.PGD`).

    Args:
        eps: radius of the ε-ball.
        norm: :attr:`Norm.LINF` or :attr:`Norm.L2` (the paper defines no L1 step; use
            :class:`midbench.attacks.l1.SparseL1Descent` for L1).
        steps: number of iterations T (≥ 1).
        step_size: α, the size of each step in ``norm``.
        decay: the momentum decay factor μ (the paper's default 1.0; 0 gives iterative FGSM).
        random_start: start from a random point of the ε-ball; off by default, as in the paper.
        target: ``None`` (untargeted) or a target policy.
    """

    def __init__(self, eps: float, norm: Norm, steps: int, step_size: float, decay: float = 1.0,
                 random_start: bool = False, target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        if norm not in (Norm.LINF, Norm.L2):
            raise UsageError(f"MI-FGSM is defined for Linf and L2, not {norm}; use SparseL1Descent for L1")
        require_at_least("MI-FGSM", {"steps": (steps, 1), "step_size": (step_size, 0), "decay": (decay, 0)})
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.decay = float(decay)
        self.random_start = bool(random_start)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.norm is not None
        labels = self.choose_targets(model, x, y) if self.targeted else y
        x_adv = random_in_ball(x, self.eps, self.norm) if self.random_start else x.clone()
        velocity = torch.zeros_like(x)
        shape = (-1, *([1] * (x.dim() - 1)))
        for _ in range(self.steps):
            # input_gradient already negates the loss for targeted attacks, so "ascend" is right either way.
            gradient = input_gradient(model, x_adv, labels, self.targeted)
            # Per-example L1 normalisation makes every step's contribution to the velocity comparable, so the
            # momentum is not dominated by the iterations where the gradient happens to be large. (Dividing by
            # the mean |∇| instead, a common implementation choice, rescales every term by the same d and
            # leaves the sign and the L2 direction unchanged.)
            l1 = distance(gradient, Norm.L1).clamp_min(1e-12).view(shape)
            velocity = self.decay * velocity + gradient / l1
            # steepest_step is sign(g) for L∞ and g/‖g‖₂ for L2: exactly the paper's two update rules.
            x_adv = project(x_adv + self.step_size * steepest_step(velocity, self.norm), x, self.eps, self.norm)
        return x_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "step_size": self.step_size, "decay": self.decay,
                "random_start": self.random_start}
