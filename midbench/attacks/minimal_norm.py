"""Minimal-norm L2 attacks: they look for the *smallest* adversarial perturbation rather than the worst loss inside
a fixed ball. The framework then projects onto the ε-ball, so a minimal perturbation of norm ≤ ε survives
unchanged and a larger one is shrunk (and usually stops being adversarial).

- C&W-L2: Carlini & Wagner, "Towards Evaluating the Robustness of Neural Networks", IEEE S&P 2017.
- DDN: Rony et al., "Decoupling Direction and Norm for Efficient Gradient-Based L2 Adversarial Attacks and
  Defenses", CVPR 2019.

Both keep, per example, the smallest-L2 adversarial point met during the search and return the clean input for
examples where none was found (the clean point is "no attack", never a worse guess).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from midbench.attacks.base import Attack
from midbench.attacks.norms import Norm, distance
from midbench.errors import UsageError

# C&W's change of variables maps [0, 1] onto (-∞, ∞) with atanh; exact 0s and 1s would map to ±∞, so the clean
# image is shrunk by this factor around 0.5 before the atanh (the tanh of the start point is x up to ~1e-6).
_TANH_SHRINK = 1.0 - 1e-6
# Adam's constants (Kingma & Ba, ICLR 2015), the optimiser the C&W paper uses.
_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
# Binary search bounds: an upper bound this large means "no successful constant seen yet" (multiply by 10).
_NO_UPPER_BOUND = 1e10


def _per_example(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape (N,) to (N, 1, 1, ...) to broadcast against an image batch ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def _require_l2(norm: Norm | None, name: str) -> None:
    if norm is not Norm.L2:
        raise UsageError(f"{name} is an L2 attack; use norm = \"L2\" (got {norm.value if norm else None})")


def _margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """How far the attack is from success, per example, as a logit difference (C&W's f before clamping at −κ).

    Untargeted: Z_y − max_{i≠y} Z_i (positive while ``y`` still wins). Targeted: max_{i≠t} Z_i − Z_t (positive
    while the target ``t`` has not won yet). The attack succeeds with confidence κ once this is below −κ.
    """
    label_logit = logits.gather(1, labels.unsqueeze(1)).squeeze(1)
    others = logits.scatter(1, labels.unsqueeze(1), float("-inf"))
    best_other = others.amax(dim=1)
    return best_other - label_logit if targeted else label_logit - best_other


class CarliniWagnerL2(Attack):
    """Carlini & Wagner's L2 attack (IEEE S&P 2017, Section V-A).

    The box constraint is removed by the change of variables x' = ½(tanh(w) + 1), and for each example

        minimise ‖x' − x‖₂² + c · f(x'),   f(x') = max(max_{i≠t} Z(x')_i − Z(x')_t, −κ)  (targeted, target t)
                                           f(x') = max(Z(x')_y − max_{i≠y} Z(x')_i, −κ)  (untargeted, label y)

    over w with Adam, where Z are the logits and κ is ``confidence``. The constant c is found per example by
    binary search: start at ``initial_const``; after a search step that found an adversarial example, c is
    halved towards the largest failing c; after one that did not, c is bisected upwards or, while no c has
    succeeded yet, multiplied by 10. Every search step restarts from w = atanh(2x − 1) with a fresh Adam state.
    Among all iterates that are adversarial with confidence κ (f = −κ), the one of smallest L2 distance is kept.

    The framework projects the result onto the L2 ball of radius ε: a kept perturbation of norm ≤ ε is returned
    unchanged, so robust accuracy at ε counts exactly the examples whose minimal perturbation found exceeds ε.

    Args:
        eps: L2 radius of the threat model (the result is projected onto it).
        norm: must be :attr:`Norm.L2`.
        steps: Adam iterations per binary-search step.
        search_steps: binary-search steps over the constant c.
        initial_const: the first c tried.
        lr: Adam's learning rate (on w, the tanh-space variable).
        confidence: κ, the logit margin an example must reach to count as adversarial.
        target: ``None`` (untargeted) or a target policy.

    Cost per example: ``steps * search_steps`` forward and ``steps * search_steps`` backward passes (plus one
    forward pass to choose targets when targeted). The success check reuses each iteration's forward pass.
    """

    def __init__(self, eps: float, norm: Norm | None = Norm.L2, steps: int = 1000, search_steps: int = 9,
                 initial_const: float = 1e-3, lr: float = 1e-2, confidence: float = 0.0,
                 target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        _require_l2(norm, "C&W-L2")
        if steps < 1 or search_steps < 1:
            raise UsageError(f"C&W needs steps ≥ 1 and search_steps ≥ 1, got {steps} and {search_steps}")
        if initial_const <= 0 or lr <= 0 or confidence < 0:
            raise UsageError("C&W needs initial_const > 0, lr > 0 and confidence ≥ 0, got "
                             f"{initial_const}, {lr} and {confidence}")
        self.steps = int(steps)
        self.search_steps = int(search_steps)
        self.initial_const = float(initial_const)
        self.lr = float(lr)
        self.confidence = float(confidence)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.clone()
        labels = self.choose_targets(model, x, y) if self.targeted else y
        n = x.shape[0]
        w_start = torch.atanh((2.0 * x - 1.0) * _TANH_SHRINK)

        # Binary-search state, per example (float64 so repeated bisection does not lose precision).
        const = torch.full((n,), self.initial_const, dtype=torch.float64, device=x.device)
        lower = torch.zeros_like(const)
        upper = torch.full_like(const, _NO_UPPER_BOUND)
        best_dist = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        best_adv = x.clone()

        for _ in range(self.search_steps):
            c = const.to(x.dtype)
            succeeded = torch.zeros(n, dtype=torch.bool, device=x.device)
            modifier = torch.zeros_like(x)  # Adam optimises the perturbation of w, from 0
            first_moment = torch.zeros_like(x)
            second_moment = torch.zeros_like(x)
            for step in range(1, self.steps + 1):
                modifier.requires_grad_(True)
                x_new = 0.5 * (torch.tanh(w_start + modifier) + 1.0)
                logits = model(x_new)
                margin = _margin(logits, labels, self.targeted)
                dist = (x_new - x).flatten(1).pow(2).sum(dim=1)
                # Summed over the batch, so each example's gradient is its own objective's (no coupling).
                loss = (dist + c * margin.clamp_min(-self.confidence)).sum()
                (gradient,) = torch.autograd.grad(loss, modifier)

                with torch.no_grad():
                    # This iterate is judged on the forward pass just made: success means a margin of κ.
                    success = margin < -self.confidence
                    improved = success & (dist < best_dist)
                    best_dist = torch.where(improved, dist, best_dist)
                    best_adv[improved] = x_new[improved]
                    succeeded |= success

                    # Adam update (elementwise, so per example independent), descending the loss.
                    modifier = modifier.detach()
                    first_moment.mul_(_ADAM_BETA1).add_(gradient, alpha=1 - _ADAM_BETA1)
                    second_moment.mul_(_ADAM_BETA2).addcmul_(gradient, gradient, value=1 - _ADAM_BETA2)
                    corrected_first = first_moment / (1 - _ADAM_BETA1 ** step)
                    corrected_second = second_moment / (1 - _ADAM_BETA2 ** step)
                    modifier -= self.lr * corrected_first / (corrected_second.sqrt() + _ADAM_EPS)

            # Binary search on c: success → the smallest successful c is an upper bound; failure → lower bound.
            upper = torch.where(succeeded, torch.minimum(upper, const), upper)
            lower = torch.where(succeeded, lower, torch.maximum(lower, const))
            bracketed = upper < _NO_UPPER_BOUND
            const = torch.where(bracketed, (lower + upper) / 2, const * 10)

        return best_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "search_steps": self.search_steps,
                "initial_const": self.initial_const, "lr": self.lr, "confidence": self.confidence}


class DDN(Attack):
    """Decoupled Direction and Norm (Rony et al., CVPR 2019, Algorithm 1).

    The perturbation δ is kept on a sphere of radius ε_k around x whose radius and direction are updated
    separately. At step k, with x̃ = clip(x + δ, 0, 1):

    - direction: δ ← δ + α_k g/‖g‖₂, where g = ∇ₓ CE(x̃, y) untargeted or −∇ₓ CE(x̃, t) targeted;
    - norm: ε_k = (1 − γ) ε_{k−1} if x̃ is already adversarial, else (1 + γ) ε_{k−1};
    - δ ← ε_k δ/‖δ‖₂, then clipped so that x + δ lies in [0, 1].

    The step size α_k follows the cosine annealing the paper uses, from ``alpha_init`` at the first step to
    ``alpha_min`` at the last: α_k = α_min + (α_init − α_min)(1 + cos(πk/K))/2. ε_k is capped at the L2 diameter
    of the image box (√d), beyond which growing it cannot change x̃. The adversarial iterate of smallest L2 norm
    is returned (the clean input where none was found).

    After clipping, δ is reset to the perturbation actually applied, so the next direction step starts from the
    point the gradient was evaluated at.

    Args:
        eps: L2 radius of the threat model (the result is projected onto it).
        norm: must be :attr:`Norm.L2`.
        steps: number of iterations K.
        init_norm: ε_0, the initial radius of the sphere.
        gamma: γ, the relative change of the radius per step.
        alpha_init: the first (largest) direction step α.
        alpha_min: the last (smallest) direction step α.
        target: ``None`` (untargeted) or a target policy.

    Cost per example: ``steps`` forward and ``steps`` backward passes (plus one forward pass to choose targets
    when targeted). The last iterate is not evaluated: its radius change is the smallest of the schedule.
    """

    def __init__(self, eps: float, norm: Norm | None = Norm.L2, steps: int = 100, init_norm: float = 1.0,
                 gamma: float = 0.05, alpha_init: float = 1.0, alpha_min: float = 0.01,
                 target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        _require_l2(norm, "DDN")
        if steps < 1:
            raise UsageError(f"DDN needs at least one step, got {steps}")
        if init_norm <= 0 or not 0 < gamma < 1:
            raise UsageError(f"DDN needs init_norm > 0 and 0 < gamma < 1, got {init_norm} and {gamma}")
        if not 0 <= alpha_min <= alpha_init:
            raise UsageError(f"DDN needs 0 ≤ alpha_min ≤ alpha_init, got {alpha_min} and {alpha_init}")
        self.steps = int(steps)
        self.init_norm = float(init_norm)
        self.gamma = float(gamma)
        self.alpha_init = float(alpha_init)
        self.alpha_min = float(alpha_min)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 0:
            return x.clone()
        labels = self.choose_targets(model, x, y) if self.targeted else y
        n = x.shape[0]
        # m in Algorithm 1: ascend the true label's loss, or descend the target's.
        sign = -1.0 if self.targeted else 1.0
        max_norm = math.sqrt(x[0].numel())  # the L2 diameter of [0, 1]^d

        delta = torch.zeros_like(x)
        radius = torch.full((n,), self.init_norm, dtype=x.dtype, device=x.device)
        best_norm = torch.full((n,), float("inf"), dtype=x.dtype, device=x.device)
        best_adv = x.clone()

        for k in range(self.steps):
            alpha = self.alpha_min + (self.alpha_init - self.alpha_min) * (1 + math.cos(math.pi * k / self.steps)) / 2
            x_adv = (x + delta).requires_grad_(True)
            logits = model(x_adv)
            loss = sign * nn.functional.cross_entropy(logits, labels, reduction="sum")  # summed: no coupling
            (gradient,) = torch.autograd.grad(loss, x_adv)

            with torch.no_grad():
                prediction = logits.argmax(dim=1)
                adversarial = prediction == labels if self.targeted else prediction != y
                norm_now = distance(delta, Norm.L2)
                improved = adversarial & (norm_now < best_norm)
                best_norm = torch.where(improved, norm_now, best_norm)
                best_adv[improved] = x_adv.detach()[improved]

                gradient_norm = distance(gradient, Norm.L2).clamp_min(1e-12)
                direction = delta + alpha * gradient / _per_example(gradient_norm, x)
                radius = torch.where(adversarial, radius * (1 - self.gamma), radius * (1 + self.gamma))
                radius = radius.clamp(max=max_norm)
                direction_norm = distance(direction, Norm.L2).clamp_min(1e-12)
                delta = direction * _per_example(radius / direction_norm, x)
                delta = (x + delta).clamp(0.0, 1.0) - x

        return best_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "init_norm": self.init_norm, "gamma": self.gamma,
                "alpha_init": self.alpha_init, "alpha_min": self.alpha_min}
