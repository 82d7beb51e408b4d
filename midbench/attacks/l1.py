"""L1-bounded PGD with the sparse steepest-ascent step (SLIDE).

Tramèr & Boneh, "Adversarial Training and Robustness for Multiple Perturbations", NeurIPS 2019
("Sparse ℓ1 Descent", SLIDE). The exact steepest-ascent direction of the L1 norm puts all the step on the
single largest gradient coordinate (:func:`midbench.attacks.gradient.steepest_step`), so PGD in L1 moves one
pixel per step and needs far too many steps. SLIDE instead spreads each step over the coordinates whose
|gradient| lies in the top ``100 − q`` percent:

    e_i = sign(g_i) if |g_i| ≥ P_q(|g|) else 0,      δ ← Π_{B₁(ε)}(δ + γ · e / ‖e‖₁)

with Π the Euclidean projection onto the L1 ball (Duchi et al. 2008, :func:`midbench.attacks.norms.project_l1`)
followed by clipping to [0, 1].

Box awareness. On images many coordinates sit at 0 or 1 (MNIST's background), and their gradient often
points out of the box; a step spent there is clipped away and the attack stalls (Croce & Hein, "Mind the Box:
l1-APGD for Sparse Adversarial Attacks on Image Classifiers", ICML 2021, analyse this). Coordinates that
cannot move in their gradient's direction are therefore removed *before* the top coordinates are chosen, so
the whole L1 budget of a step goes to coordinates that can use it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.gradient import input_gradient
from midbench.attacks.norms import Norm, project, random_in_ball
from midbench.errors import UsageError


def coordinates_per_step(num_coordinates: int, sparsity: float) -> int:
    """How many coordinates a SLIDE step moves: ceil((100 − sparsity)% of them), at least one."""
    # The small tolerance keeps exact products (e.g. 10% of 1000) from being rounded up by float error.
    return max(1, math.ceil((100.0 - sparsity) * num_coordinates / 100.0 - 1e-9))


def movable_magnitude(gradient: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """|gradient| per coordinate, flattened to (N, d), and 0 where the coordinate cannot move in its gradient's
    direction: at 0 with a negative gradient, or at 1 with a positive one (the box would clip the move back)."""
    flat = gradient.flatten(1)
    position = x_adv.flatten(1)
    blocked = ((position <= 0.0) & (flat < 0)) | ((position >= 1.0) & (flat > 0))
    return flat.abs().masked_fill(blocked, 0.0)


def sparse_l1_direction(gradient: torch.Tensor, x_adv: torch.Tensor, sparsity: float) -> torch.Tensor:
    """SLIDE's step direction with unit L1 norm per example (zero where no coordinate can move).

    Args:
        gradient: ∂loss/∂x of the loss to ascend, shape (N, ...).
        x_adv: the current iterate in [0, 1] (to know which coordinates sit at the box bound).
        sparsity: percentile q in [0, 100); the top ``100 − q`` percent of coordinates by |gradient| move.
    """
    count = coordinates_per_step(gradient[0].numel(), sparsity)
    counts = torch.full((gradient.shape[0],), count, dtype=torch.long, device=gradient.device)
    return top_coordinates_direction(gradient, x_adv, counts)


def top_coordinates_direction(gradient: torch.Tensor, x_adv: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """sign(gradient) on the ``counts[i]`` coordinates of example i with the largest |gradient| among those that
    can move (:func:`movable_magnitude`), scaled to an L1 norm of 1 (0 where none can move).

    Exactly ``counts[i]`` coordinates at most: SLIDE's "|g_i| ≥ P_q" may pick more on ties, which would break the
    sparsity (MNIST gradients have many exact zeros). Ties are broken by position, so the choice depends on the
    example alone, never on its batch (the nested profile relies on that).
    """
    magnitude = movable_magnitude(gradient, x_adv)
    order = magnitude.argsort(dim=1, descending=True, stable=True)
    positions = torch.arange(magnitude.shape[1], device=gradient.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(1, order, positions)
    chosen = (rank < counts[:, None]) & (magnitude > 0)
    direction = gradient.flatten(1).sign() * chosen
    # Normalising by the number of moved coordinates gives the step an L1 norm of exactly 1.
    return (direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1.0)).view_as(gradient)


class SparseL1Descent(Attack):
    """PGD in L1 with SLIDE's sparse, box-aware step (Tramèr & Boneh, NeurIPS 2019).

    Cost: ``steps`` forwards + ``steps`` backwards per example (plus one forward to choose targets when
    targeted).

    Args:
        eps: radius of the L1 ball.
        norm: must be :attr:`Norm.L1`.
        steps: number of steps k (≥ 1).
        step_size: γ, the L1 norm of each step.
        sparsity: percentile q in [0, 100): each step moves the top ``100 − q`` percent of coordinates by
            |gradient| (99 → the top 1%, Tramèr & Boneh's MNIST setting).
        random_start: start from a random point of the L1 ball (:func:`midbench.attacks.norms.random_in_ball`).
        target: ``None`` (untargeted) or a target policy.
    """

    def __init__(self, eps: float, norm: Norm, steps: int, step_size: float, sparsity: float = 99.0,
                 random_start: bool = False, target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        if norm is not Norm.L1:
            raise UsageError(f"SparseL1Descent is an L1 attack, got norm {norm}")
        require_at_least("SparseL1Descent", {"steps": (steps, 1), "step_size": (step_size, 0)})
        if not 0.0 <= sparsity < 100.0:
            raise UsageError(f"sparsity is a percentile in [0, 100), got {sparsity}")
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.sparsity = float(sparsity)
        self.random_start = bool(random_start)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = self.choose_targets(model, x, y) if self.targeted else y
        x_adv = random_in_ball(x, self.eps, Norm.L1) if self.random_start else x.clone()
        for _ in range(self.steps):
            gradient = input_gradient(model, x_adv, labels, self.targeted)
            step = self.step_size * sparse_l1_direction(gradient, x_adv, self.sparsity)
            x_adv = project(x_adv + step, x, self.eps, Norm.L1)
        return x_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "step_size": self.step_size,
                "sparsity": self.sparsity, "random_start": self.random_start}
