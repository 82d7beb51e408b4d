"""Random-noise baselines: is the model robust to random perturbations of the threat model's size at all?

Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry & Kurakin, "On Evaluating Adversarial
Robustness", arXiv:1902.06705 (2019), recommend checking that gradient attacks beat random noise of the same
budget, and that a model is not already fooled by it: a defence whose accuracy under PGD is *higher* than
under noise points to a broken attack (gradient masking), and a model that noise alone breaks needs no attack.

Each baseline draws ``samples`` random perturbations per example, projects each onto the ε-ball and [0, 1],
and keeps per example the first draw that is misclassified (that hits the target, when targeted), else the
last draw. Only forward passes under ``torch.no_grad()``: no gradient is ever computed. Randomness comes from
torch's global RNG, so ``torch.manual_seed`` makes the result reproducible.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.base import Attack
from midbench.attacks.norms import Norm, distance, project
from midbench.errors import UsageError


class _RandomSearch(Attack):
    """Shared loop of the noise baselines; subclasses implement :meth:`draw`.

    Cost: ``samples`` forwards, 0 backwards per example (plus one forward to choose targets when targeted).
    """

    uses_gradients: ClassVar[bool] = False

    def __init__(self, eps: float, norm: Norm | None, samples: int = 10, target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        if samples < 1:
            raise UsageError(f"a noise baseline needs at least one sample, got {samples}")
        self.samples = int(samples)

    def draw(self, x: torch.Tensor) -> torch.Tensor:
        """One random candidate per example, inside the threat model (ball and [0, 1])."""
        raise NotImplementedError

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = self.choose_targets(model, x, y) if self.targeted else y
        shape = (-1, *([1] * (x.dim() - 1)))
        x_adv = x.clone()
        found = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        with torch.no_grad():
            for _ in range(self.samples):
                # Every draw covers the whole batch, even the examples already fooled: the cost is then exactly
                # `samples` forwards per example and the RNG stream does not depend on the model's answers.
                candidate = self.draw(x)
                prediction = model(candidate).argmax(dim=1)
                success = prediction == labels if self.targeted else prediction != labels
                # Overwrite until the first success, so a never-fooled example ends at the last draw.
                x_adv = torch.where(found.view(shape), x_adv, candidate)
                found |= success
        return x_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "samples": self.samples}


class UniformNoise(_RandomSearch):
    """Noise drawn uniformly from the ε-ball (Carlini et al. 2019's random-noise sanity check).

    L∞: each coordinate uniform in [−ε, ε] (uniform in the ε-cube). L2 and L1: uniform in the ball's volume,
    i.e. a uniformly random direction (normalised Gaussian for L2, normalised Laplace for L1) at radius
    ε·U^(1/d); in image dimensions that is almost always near the sphere, the strongest place for noise.
    Each draw is then clipped to [0, 1].

    Cost: ``samples`` forwards, 0 backwards per example.

    Args:
        eps: radius of the ball.
        norm: L∞, L2 or L1.
        samples: random draws per example (≥ 1).
        target: ``None`` (untargeted) or a target policy (success means predicting the target).
    """

    def __init__(self, eps: float, norm: Norm, samples: int = 10, target: str | None = None) -> None:
        if norm is None:
            raise UsageError("UniformNoise needs a norm (Linf, L2 or L1) to define its ball")
        super().__init__(eps, norm, samples, target)

    def draw(self, x: torch.Tensor) -> torch.Tensor:
        assert self.norm is not None
        if self.norm is Norm.LINF:
            delta = randomness.uniform_like(x, -self.eps, self.eps)
        else:
            if self.norm is Norm.L2:
                direction = randomness.randn_like(x)
            else:  # i.i.d. Laplace coordinates, normalised, are uniform on the L1 sphere
                direction = randomness.exponential_like(x) * randomness.random_signs_like(x)
            shape = (-1, *([1] * (x.dim() - 1)))
            direction = direction / distance(direction, self.norm).clamp_min(1e-12).view(shape)
            # The volume within radius r grows as r^d, so radius = ε·U^(1/d) is uniform in the ball.
            dims = x[0].numel()
            radius = self.eps * randomness.rand_per_example(x).pow(1.0 / dims)
            delta = direction * radius.view(shape)
        return (x + delta).clamp(0.0, 1.0)


class GaussianNoise(_RandomSearch):
    """Gaussian noise, projected onto the ε-ball (Carlini et al. 2019's random-noise sanity check).

    Each draw is x + σ·N(0, I), projected onto the ``norm`` ball of radius ε (skipped when ``norm`` is
    ``None``) and clipped to [0, 1]. With σ·√d above ε the projection lands on the sphere, so the baseline is
    a Gaussian-direction perturbation at full budget.

    Cost: ``samples`` forwards, 0 backwards per example.

    Args:
        eps: radius of the ball.
        norm: the bounding norm (typically L2), or ``None`` for unbounded noise (then only clipped).
        sigma: standard deviation of each coordinate (registry entries may write it relative to ε).
        samples: random draws per example (≥ 1).
        target: ``None`` (untargeted) or a target policy (success means predicting the target).
    """

    def __init__(self, eps: float, norm: Norm | None, sigma: float, samples: int = 10,
                 target: str | None = None) -> None:
        super().__init__(eps, norm, samples, target)
        if sigma < 0:
            raise UsageError(f"GaussianNoise sigma must be non-negative, got {sigma}")
        self.sigma = float(sigma)

    def draw(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x + self.sigma * randomness.randn_like(x)
        if self.norm is None:
            return noisy.clamp(0.0, 1.0)
        return project(noisy, x, self.eps, self.norm)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sigma": self.sigma}
