"""Optimised geometric warps: an affine map and a perspective (projective) map of the whole image.

Spatial robustness is usually measured by a grid search over rotations and translations (Engstrom et al.,
"Exploring the Landscape of Spatial Robustness", ICML 2019; :class:`midbench.attacks.spatial.RotationTranslation`).
These two threat models are broader and are optimised by gradient, as MultiRobustBench's affine and perspective
warps are (Dai et al., "MultiRobustBench", ICML 2023): the warp's parameters are latents in ``[-1, 1]``
(:mod:`midbench.attacks.latent`) and the image is resampled bilinearly by kornia's differentiable warps
(``warp_affine``, ``warp_perspective``; Riba et al., "Kornia", WACV 2020). What comes in from outside the image is
black, as in Engstrom et al.

- **affine**: x′(p) = x(A p + t) about the image centre, A = I + ``max_deform`` · V (the four entries of V in
  [-1, 1]: rotation, scale and shear at once) and t = ``max_shift`` · u pixels (u in [-1, 1]²).
- **perspective**: each corner of the image moves by at most ``max_shift`` pixels along each axis, and the image
  follows the projective map that takes the corners to their new places (the homography of the four point pairs).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.nn import functional

from midbench.attacks.latent import LatentAttack
from midbench.attacks.parametric import Render
from midbench.attacks.spatial import identity_grid

# kornia is imported where a render is made, not here: listing the registry loads every attack class (to know
# which need colour) and should not pay for kornia's import.


def _corners(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """The image's corners (4, 2) as (column, row) pixel coordinates, clockwise from the top left."""
    return torch.tensor([[0.0, 0.0], [width - 1.0, 0.0], [width - 1.0, height - 1.0], [0.0, height - 1.0]],
                        dtype=like.dtype, device=like.device)


class AffineWarp(LatentAttack):
    """An optimised affine warp about the image centre (module docstring).

    Budget: ``max_deform`` (largest change of an entry of the 2 × 2 linear part; 0.1 is about 6° of rotation or
    a 10% zoom) and ``max_shift`` (pixels per axis).
    """

    NAME: ClassVar[str] = "affine"
    BUDGET: ClassVar[dict[str, float]] = {"max_deform": 0.25, "max_shift": 4.0}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], 6)

    def renderer(self, x: torch.Tensor) -> Render:
        from kornia.geometry.transform import warp_affine

        _, _, height, width = x.shape
        centre = torch.tensor([(width - 1) / 2, (height - 1) / 2], dtype=x.dtype, device=x.device)
        eye = torch.eye(2, dtype=x.dtype, device=x.device)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            linear = eye + self.budget["max_deform"] * latent[:, :4].view(-1, 2, 2)
            shift = self.budget["max_shift"] * latent[:, 4:]
            # x′(p) = x(A (p − c) + c + t): warp_affine takes the map from source to output, so invert it
            source_to_output = torch.linalg.inv(linear)
            offset = centre - (source_to_output @ (centre + shift).unsqueeze(-1)).squeeze(-1)
            matrix = torch.cat((source_to_output, offset.unsqueeze(-1)), dim=2)
            return warp_affine(x[rows], matrix, (height, width), mode="bilinear", padding_mode="zeros",
                               align_corners=True).clamp(0.0, 1.0)

        return render


class PerspectiveWarp(LatentAttack):
    """An optimised perspective warp: the image's corners move by at most ``max_shift`` pixels per axis, the
    image follows their homography (module docstring)."""

    NAME: ClassVar[str] = "perspective"
    BUDGET: ClassVar[dict[str, float]] = {"max_shift": 4.0}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], 4, 2)

    def renderer(self, x: torch.Tensor) -> Render:
        from kornia.geometry.transform import get_perspective_transform, warp_perspective

        _, _, height, width = x.shape
        corners = _corners(height, width, x)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            source = corners.expand(latent.shape[0], 4, 2)
            moved = source + self.budget["max_shift"] * latent
            matrix = get_perspective_transform(source, moved)
            return warp_perspective(x[rows], matrix, (height, width), mode="bilinear", padding_mode="zeros",
                                    align_corners=True).clamp(0.0, 1.0)

        return render


class Glitch(LatentAttack):
    """Optimised glitch: the image cut into horizontal bands of ``band`` rows, each channel of each band shifted
    sideways by at most ``max_shift`` pixels (Kaufmann et al. 2023; on colour images the channels tear apart).

    Shifted rows are resampled bilinearly; what comes in from outside the image is its mirror image."""

    NAME: ClassVar[str] = "glitch"
    BUDGET: ClassVar[dict[str, float]] = {"max_shift": 4.0}
    FIXED: ClassVar[dict[str, float]] = {"band": 2}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (*x.shape[:2], -(-x.shape[2] // max(int(self.fixed["band"]), 1)))

    def renderer(self, x: torch.Tensor) -> Render:
        _, channels, height, width = x.shape
        band = max(int(self.fixed["band"]), 1)
        base = identity_grid(height, width, x)  # (H, W, 2), align_corners=True coordinates
        pixel = 2.0 / max(width - 1, 1)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            shift = (self.budget["max_shift"] * pixel * latent).repeat_interleave(band, dim=2)[..., :height]
            grid = base.expand(latent.shape[0] * channels, -1, -1, -1).clone()
            grid[..., 0] = grid[..., 0] + shift.reshape(-1, height, 1)
            images = x[rows].reshape(-1, 1, height, width)
            out = functional.grid_sample(images, grid, mode="bilinear", padding_mode="reflection",
                                         align_corners=True)
            return out.view(-1, channels, height, width).clamp(0.0, 1.0)

        return render
