"""Optimised local filters: pixelation and blur, each mixed into the image by a latent weight per region.

Two threat models of ImageNet-UA (Kaufmann et al., "Testing Robustness Against Unforeseen Adversaries", 2023),
reimplemented from the paper's descriptions (:mod:`midbench.attacks.latent`: latents in ``[-1, 1]``, identity at
0; docs/unforeseen.md).

- **pixel**: the image cut into ``block`` × ``block`` blocks; in each block and channel, x′ = (1 − w) x + w x̄,
  x̄ the block's mean and w = ``max_mix`` · |v| (the paper mixes with one pixel of the block instead of its mean).
- **blur**: a weight map m = ``max_blur`` · |v| per pixel, smoothed by a Gaussian of ``smoothing`` pixels and
  capped at 1, mixes in a Gaussian blur of ``sigma`` pixels: x′ = m · blur(x) + (1 − m) · x.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.nn import functional

from midbench.attacks.elastic import gaussian_kernel, smooth_flow
from midbench.attacks.latent import LatentAttack
from midbench.attacks.parametric import Render


class Pixel(LatentAttack):
    """Optimised pixelation: each block mixed with its mean by a latent weight (module docstring)."""

    NAME: ClassVar[str] = "pixel"
    BUDGET: ClassVar[dict[str, float]] = {"max_mix": 1.0}
    FIXED: ClassVar[dict[str, float]] = {"block": 7}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        block = max(int(self.fixed["block"]), 1)
        return (*x.shape[:2], -(-x.shape[2] // block), -(-x.shape[3] // block))

    def renderer(self, x: torch.Tensor) -> Render:
        block = max(int(self.fixed["block"]), 1)
        height, width = x.shape[-2:]
        rows, cols = -(-height // block), -(-width // block)
        # blocks cut by the border average what they hold: repeat the last row and column to fill them
        padded = functional.pad(x, (0, cols * block - width, 0, rows * block - height), mode="replicate")
        means = functional.avg_pool2d(padded, block).repeat_interleave(block, 2).repeat_interleave(block, 3)
        means = means[..., :height, :width]

        def render(latent: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
            weight = (self.budget["max_mix"] * latent.abs()).repeat_interleave(block, 2).repeat_interleave(block, 3)
            weight = weight[..., :height, :width].clamp(max=1.0)
            return ((1 - weight) * x[chosen] + weight * means[chosen]).clamp(0.0, 1.0)

        return render


class Blur(LatentAttack):
    """Optimised blur: a smooth per-pixel weight mixes in a blurred image (module docstring)."""

    NAME: ClassVar[str] = "blur"
    BUDGET: ClassVar[dict[str, float]] = {"max_blur": 1.0}
    FIXED: ClassVar[dict[str, float]] = {"sigma": 3.0, "smoothing": 1.5}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], 1, *x.shape[2:])

    def renderer(self, x: torch.Tensor) -> Render:
        blurred = smooth_flow(x, gaussian_kernel(self.fixed["sigma"], x))
        kernel = gaussian_kernel(self.fixed["smoothing"], x)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            weight = smooth_flow(self.budget["max_blur"] * latent.abs(), kernel).clamp(max=1.0)
            return (weight * blurred[rows] + (1 - weight) * x[rows]).clamp(0.0, 1.0)

        return render
