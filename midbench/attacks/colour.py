"""Optimised photometric corruptions: brightness and contrast (any image), hue, saturation and value (colour).

MultiRobustBench (Dai et al., ICML 2023) measures brightness and contrast changes as threat models of their own,
and ImageNet-UA (Kaufmann et al. 2023) an HSV attack; both optimise the change rather than draw it at random.
Latents are in ``[-1, 1]`` and scaled by the budget (:mod:`midbench.attacks.latent`).

- **brightness-contrast**: x′ = clip((x − m) · exp(``max_contrast`` · c) + m + ``max_brightness`` · b), with m
  the image's mean and (b, c) two latents per image: a brightness offset and a log-contrast factor.
- **hsv**: a smooth field of hue, saturation and value changes (each latent channel a coarse grid, upsampled
  bilinearly to the image, so neighbouring pixels change alike): hue turns by at most ``max_hue`` of a full turn,
  saturation and value move by at most ``max_saturation`` and ``max_value``. The colour conversions are kornia's
  differentiable ``rgb_to_hsv`` and ``hsv_to_rgb`` (Riba et al., WACV 2020). Colour images only.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.nn import functional

from midbench.attacks.latent import LatentAttack
from midbench.attacks.parametric import Render

# kornia is imported where a render is made (see midbench.attacks.warps)


class BrightnessContrast(LatentAttack):
    """An optimised brightness offset and contrast factor per image (module docstring).

    Budget: ``max_brightness`` (offset in [0, 1] pixel units) and ``max_contrast`` (natural log of the largest
    contrast factor: 0.5 allows factors from 0.61 to 1.65).
    """

    NAME: ClassVar[str] = "brightness-contrast"
    BUDGET: ClassVar[dict[str, float]] = {"max_brightness": 0.5, "max_contrast": 1.0}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], 2)

    def renderer(self, x: torch.Tensor) -> Render:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            offset = self.budget["max_brightness"] * latent[:, 0].view(-1, 1, 1, 1)
            factor = torch.exp(self.budget["max_contrast"] * latent[:, 1]).view(-1, 1, 1, 1)
            return ((x[rows] - mean[rows]) * factor + mean[rows] + offset).clamp(0.0, 1.0)

        return render


class HueSaturationValue(LatentAttack):
    """An optimised smooth field of hue, saturation and value changes on a ``grid`` × ``grid`` lattice (module
    docstring). Colour images only."""

    NAME: ClassVar[str] = "hsv"
    BUDGET: ClassVar[dict[str, float]] = {"max_hue": 0.1, "max_saturation": 0.3, "max_value": 0.2}
    FIXED: ClassVar[dict[str, float]] = {"grid": 4}
    NEEDS_COLOUR: ClassVar[bool] = True

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        size = max(int(self.fixed["grid"]), 1)
        return (x.shape[0], 3, size, size)

    def renderer(self, x: torch.Tensor) -> Render:
        from kornia.color import hsv_to_rgb, rgb_to_hsv

        hsv = rgb_to_hsv(x)  # hue in radians [0, 2π), saturation and value in [0, 1]
        scale = torch.tensor([2 * math.pi * self.budget["max_hue"], self.budget["max_saturation"],
                              self.budget["max_value"]], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            field = functional.interpolate(latent, size=x.shape[-2:], mode="bilinear", align_corners=True) * scale
            hue = torch.remainder(hsv[rows, :1] + field[:, :1], 2 * math.pi)
            rest = (hsv[rows, 1:] + field[:, 1:]).clamp(0.0, 1.0)
            return hsv_to_rgb(torch.cat((hue, rest), dim=1)).clamp(0.0, 1.0)

        return render
