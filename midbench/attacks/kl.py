"""TRADES' inner maximisation: projected signed-gradient ascent on the KL divergence from the clean prediction.

Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019 (TRADES).
The regulariser ``KL(f(x) ‖ f(x'))`` is maximised over the ε-ball: start at ``x + 0.001·N(0, I)``, then ``steps``
steps ``x' ← Π(x' + α·sign(∇_{x'} KL(f(x) ‖ f(x'))))``, Π projecting onto the ε-ball and [0, 1]. The attack needs no
labels: it pushes the prediction away from the model's own clean prediction.

It lives here, not in :mod:`midbench.defenses.trades`, because a TRADES checkpoint records it as its training
attack, and evaluation (``--known-attacks``) builds recorded attacks from ``midbench.attacks`` only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.gradient import steepest_step
from midbench.attacks.norms import Norm, project
from midbench.errors import UsageError


def kl_from_clean(clean_logits: torch.Tensor, adv_logits: torch.Tensor) -> torch.Tensor:
    """Per-example ``KL(softmax(clean) ‖ softmax(adv)) = Σ_k p_k (log p_k − log q_k)``, shape (N,)."""
    clean_log_probs = nn.functional.log_softmax(clean_logits, dim=1)
    adv_log_probs = nn.functional.log_softmax(adv_logits, dim=1)
    return (clean_log_probs.exp() * (clean_log_probs - adv_log_probs)).sum(dim=1)


class TradesKL(Attack):
    """TRADES' KL-maximising attack (Zhang et al., ICML 2019), L∞ (the paper's) or L2 (normalised steps).

    Cost: ``steps + 1`` forwards (one for the clean prediction) and ``steps`` backwards per example.

    Args:
        eps: radius of the ball.
        norm: :attr:`Norm.LINF` or :attr:`Norm.L2`.
        steps: number of ascent steps K (≥ 1); the paper uses 40 × 0.01 at ε = 0.3 (MNIST) and
            10 × 0.007 at ε = 0.031 (CIFAR-10).
        step_size: α, the size of each step in ``norm``.
        init_std: standard deviation of the Gaussian start around ``x`` (0.001 in the paper).
    """

    def __init__(self, eps: float, norm: Norm, steps: int, step_size: float, init_std: float = 0.001,
                 target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        if norm not in (Norm.LINF, Norm.L2):
            raise UsageError(f"TradesKL takes an L∞ or L2 ball, got {norm}")
        if target is not None:
            raise UsageError("TradesKL is untargeted: it moves away from the clean prediction")
        require_at_least("TradesKL", {"steps": (steps, 1), "step_size": (step_size, 0), "init_std": (init_std, 0)})
        self.steps = int(steps)
        self.step_size = float(step_size)
        self.init_std = float(init_std)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.norm is not None
        with torch.no_grad():
            clean_logits = model(x)
        # The paper's start x + 0.001·N(0, I), clipped to [0, 1] so the model only ever sees valid images.
        x_adv = project(x + self.init_std * randomness.randn_like(x), x, self.eps, self.norm)
        for _ in range(self.steps):
            x_adv = x_adv.detach().requires_grad_(True)
            divergence = kl_from_clean(clean_logits, model(x_adv)).sum()
            (gradient,) = torch.autograd.grad(divergence, x_adv)
            x_adv = project(x_adv.detach() + self.step_size * steepest_step(gradient, self.norm), x, self.eps,
                            self.norm)
        return x_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "step_size": self.step_size, "init_std": self.init_std}
