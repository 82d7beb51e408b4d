"""The Elastic attack of Kang, Sun, Hendrycks, Brown & Steinhardt, "Testing Robustness Against Unforeseen
Adversaries" (2019): a flow field, smoothed by a Gaussian kernel, that resamples the image.

The attacker chooses a flow ``V`` (two components per pixel, in pixels) with ``‖V‖∞ ≤ max_flow``; the image is
resampled (bilinearly, :func:`midbench.attacks.spatial.flow_warp`) along ``G_σ * V``, the flow convolved with a
normalised Gaussian kernel of standard deviation ``sigma`` pixels, truncated at three standard deviations
(edges repeated). The kernel's weights are non-negative and sum to one, so the smoothed flow obeys the same
bound: no pixel moves more than ``max_flow`` pixels along either axis. Smoothing makes the deformation local
and rubbery (Simard et al. 2003's elastic distortions) rather than stAdv's per-pixel flow, which is penalised,
not smoothed. PGD with sign steps optimises ``V`` (:func:`midbench.attacks.parametric.optimise`).

The budget is ``max_flow``; the registry's strength ladder scales it (``sigma`` stays: it is the shape of the
deformation, not its size).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.norms import Norm
from midbench.attacks.parametric import check_restarts, optimise
from midbench.attacks.spatial import flow_warp
from midbench.errors import UsageError


def gaussian_kernel(sigma: float, like: torch.Tensor) -> torch.Tensor:
    """A normalised 1-D Gaussian of standard deviation ``sigma``, truncated at ⌈3σ⌉ (a single 1 for σ = 0)."""
    radius = math.ceil(3 * sigma)
    positions = torch.arange(-radius, radius + 1, dtype=torch.float64)
    weights = torch.exp(-positions**2 / (2 * sigma**2)) if sigma > 0 else torch.ones(1, dtype=torch.float64)
    return (weights / weights.sum()).to(dtype=like.dtype, device=like.device)


def smooth_flow(flow: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``flow`` (N, 2, H, W) convolved with the separable kernel ``kernel ⊗ kernel``, edges repeated."""
    radius = kernel.numel() // 2
    if radius == 0:
        return flow
    channels = flow.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    cols = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    padded = functional.pad(flow, (radius, radius, radius, radius), mode="replicate")
    return functional.conv2d(functional.conv2d(padded, rows, groups=channels), cols, groups=channels)


class ElasticAttack(Attack):
    """Elastic deformation attack (Kang et al. 2019; module docstring).

    After a call, ``last_flow`` (N, 2, H, W, pixels) holds the smoothed flow applied (``|flow| ≤ max_flow``) and
    ``last_success`` (N,) whether it fooled the model; the returned image is ``flow_warp(x, last_flow)``.

    Args:
        eps: ignored (the registry passes the dataset's L∞ ε to every entry); the budget is ``max_flow``.
        norm: must be ``None``.
        max_flow: largest displacement of any pixel along either axis, in pixels (≥ 0).
        sigma: standard deviation of the smoothing kernel, in pixels (≥ 0; 0 means no smoothing).
        steps: PGD steps (≥ 1).
        relative_step: step size as a fraction of ``max_flow``.
        restarts: runs of the attack while an example is unbroken, each from a new random start (≥ 1;
            :func:`midbench.attacks.parametric.optimise`).
        losses: the loss of each restart in turn: ``ce`` (cross-entropy) and ``margin`` (Carlini & Wagner);
            under ``apgd``, the losses run in sequence, each ``restarts`` times (:data:`midbench.attacks.apgd.LOSSES`).
        schedule: ``constant`` step, or ``cosine`` (from the step size down to 0 over each run).
        optimizer: ``pgd`` (sign steps of ``relative_step``, as Kang et al.) or ``apgd`` (Auto-PGD on the
            variables, which sets its own steps; untargeted; :func:`midbench.attacks.parametric.latent_apgd`).
        n_targets: under ``apgd``, the targets of the ``dlr-targeted`` loss.
        random_start: start from a uniformly random flow inside the budget.
        target: ``None`` (untargeted) or a target policy.

    Cost per example: ``steps + 1`` forward and ``steps`` backward passes per restart, at most (one more forward
    when targeted); under ``apgd``, per run (``restarts`` per loss, and per target of ``dlr-targeted``), plus one
    clean forward.
    """

    def __init__(self, eps: float = 0.0, norm: Norm | None = None, max_flow: float = 2.0, sigma: float = 2.0,
                 steps: int = 20, relative_step: float = 0.125, random_start: bool = True,
                 restarts: int = 1, losses: str | list[str] = "ce", schedule: str = "constant",
                 optimizer: str = "pgd", n_targets: int = 3, target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        if norm is not None:
            raise UsageError(f"the Elastic attack is bounded by max_flow pixels; give it no norm (got {norm})")
        require_at_least("Elastic", {"max_flow": (max_flow, 0), "sigma": (sigma, 0), "steps": (steps, 1),
                                     "relative_step": (relative_step, 0), "n_targets": (n_targets, 1)})
        self.restarts, self.losses, self.schedule = check_restarts(restarts, losses, schedule, "Elastic",
                                                                    optimizer, target is not None)
        self.optimizer = optimizer
        self.n_targets = int(n_targets)
        self.max_flow = float(max_flow)
        self.sigma = float(sigma)
        self.steps = int(steps)
        self.relative_step = float(relative_step)
        self.random_start = bool(random_start)
        self.last_flow: torch.Tensor | None = None
        self.last_success: torch.Tensor | None = None

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = self.choose_targets(model, x, y) if self.targeted else y
        kernel = gaussian_kernel(self.sigma, x)
        n, _, height, width = x.shape

        def render(flow: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return flow_warp(x[rows], smooth_flow(flow, kernel))

        result = optimise(model, render, (n, 2, height, width), labels, self.targeted, self.max_flow, self.steps,
                          self.relative_step * self.max_flow, self.random_start, x, self.restarts, self.losses,
                          self.schedule, self.optimizer, self.n_targets)
        with torch.no_grad():
            self.last_flow = smooth_flow(result.variables, kernel)
        self.last_success = result.success
        return result.images

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_flow": self.max_flow, "sigma": self.sigma, "steps": self.steps,
                "relative_step": self.relative_step, "random_start": self.random_start, "restarts": self.restarts,
                "losses": list(self.losses), "schedule": self.schedule,
                "optimizer": self.optimizer, "n_targets": self.n_targets}
