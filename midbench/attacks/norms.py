"""Threat models: Lp norms, distances and projections onto ε-balls intersected with the image box [0, 1]."""

from __future__ import annotations

from enum import Enum

import torch

from midbench.attacks import randomness


class Norm(str, Enum):
    """The norm that bounds a perturbation."""

    LINF = "Linf"
    L2 = "L2"
    L1 = "L1"


def parse_norm(text: object) -> Norm:
    """``"linf"``/``"Linf"``/``"inf"`` → :attr:`Norm.LINF`, and so on."""
    aliases = {"linf": Norm.LINF, "inf": Norm.LINF, "l2": Norm.L2, "2": Norm.L2, "l1": Norm.L1, "1": Norm.L1}
    try:
        return aliases[str(text).strip().lower()]
    except KeyError as error:
        raise ValueError(f"unknown norm {text!r}; use Linf, L2 or L1") from error


def distance(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-example norm of ``delta`` (N, ...) → (N,)."""
    flat = delta.flatten(1)
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1)
    if norm is Norm.L2:
        return flat.norm(p=2, dim=1)
    return flat.abs().sum(dim=1)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x``, then clip to [0, 1].

    Clipping after an L2 or L1 projection can only shrink the perturbation (each coordinate moves towards
    ``x``), so the result lies in the intersection of the ball and the box.
    """
    delta = x_adv - x
    if norm is Norm.LINF:
        delta = delta.clamp(-eps, eps)
    elif norm is Norm.L2:
        length = distance(delta, Norm.L2).clamp_min(1e-12)
        factor = (eps / length).clamp(max=1.0).view(-1, *([1] * (delta.dim() - 1)))
        delta = delta * factor
    else:
        delta = project_l1(delta, eps)
    return (x + delta).clamp(0.0, 1.0)


def project_l1(delta: torch.Tensor, eps: float) -> torch.Tensor:
    """Euclidean projection of each example's ``delta`` onto the L1 ball of radius ``eps``.

    Duchi et al., "Efficient Projections onto the l1-Ball for Learning in High Dimensions", ICML 2008:
    soft-threshold the magnitudes by the θ that makes their sum equal ``eps``.
    """
    flat = delta.flatten(1)
    magnitude = flat.abs()
    inside = magnitude.sum(dim=1) <= eps
    if bool(inside.all()):
        return delta
    sorted_mag, _ = magnitude.sort(dim=1, descending=True)
    cumulative = sorted_mag.cumsum(dim=1)
    ranks = torch.arange(1, flat.shape[1] + 1, device=flat.device, dtype=flat.dtype)
    condition = sorted_mag * ranks > (cumulative - eps)
    rho = condition.to(flat.dtype).cumsum(dim=1).argmax(dim=1, keepdim=True)  # last index where it holds
    theta = ((cumulative.gather(1, rho) - eps) / (rho + 1).to(flat.dtype)).clamp_min(0.0)
    projected = flat.sign() * (magnitude - theta).clamp_min(0.0)
    projected = torch.where(inside.unsqueeze(1), flat, projected)
    return projected.view_as(delta)


def random_in_ball(x: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """A random point of the ε-ball around ``x`` (uniform per coordinate for L∞; a random direction with a
    uniformly drawn radius for L2 and L1), clipped to [0, 1]. Draws from :mod:`midbench.attacks.randomness`
    (torch's global RNG unless per-example generators are active)."""
    if norm is Norm.LINF:
        delta = randomness.uniform_like(x, -eps, eps)
    else:
        if norm is Norm.L2:
            direction = randomness.randn_like(x)
        else:  # Laplace-distributed coordinates give a uniformly random L1 direction
            direction = randomness.exponential_like(x) * randomness.randn_like(x).sign()
        length = distance(direction, norm).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        radius = randomness.rand_per_example(x).view(-1, *([1] * (x.dim() - 1))) * eps
        delta = direction / length * radius
    return (x + delta).clamp(0.0, 1.0)
