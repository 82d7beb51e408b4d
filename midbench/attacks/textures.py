"""Optimised overlays: Gabor noise, snow, fog, wood grain and kaleidoscope shapes.

These are five threat models of ImageNet-UA (Kaufmann et al., "Testing Robustness Against Unforeseen Adversaries",
2023; Gabor and snow already in Kang et al. 2019): a structured pattern laid over the image whose strength the
attacker optimises (:mod:`midbench.attacks.latent`: latents in ``[-1, 1]``, the budget the size of the pattern at
``|v| = 1``). Reimplemented from the paper's descriptions, with the changes docs/unforeseen.md lists; the main one:
every overlay vanishes at latents 0, so strength 0 is the clean image (the paper's snow also whitens the whole
image, and its kaleidoscope and wood draw their pattern whatever the latents).

- **gabor**: a sparse field of points (each pixel one with probability ``density``) convolved with a Gabor kernel
  (Gaussian envelope ``sigma``, ``wavelength`` pixels, a random orientation θ per image, plus fainter copies at
  θ + π i / ``orientations``); the points' weights, at most ``amplitude``, are the latents; x′ = clip(x + noise).
- **snow**: ``layers`` sparse fields of flakes (probability ``density`` per pixel), each convolved with a line
  ``length`` pixels long at a random angle per layer (falling snow), the flakes' brightness ``max_flake`` · v² the
  latents; x′ = clip(x + snow) on every channel.
- **fog**: the diamond-square fractal (Fournier, Fussell & Carpenter 1982) on a torus, whose random displacements
  at every level are the latents (at most ``max_fog``, the amplitude shrinking by ``decay`` per level);
  fog = clip(|map|, 0, 1) and x′ = (1 − fog) x + fog · ``grey``.
- **wood**: rings around the centre, w = |sin(π · ``rings`` · (r + warp))|^``sharpness``, r the normalised
  radius and the warp a ``grid`` × ``grid`` latent field (at most ``max_warp``) upsampled bilinearly; along the
  rings the image moves towards black or white by a latent share |a| ≤ ``max_blend`` per image (the sign of a picks the
  colour): x′ = x · (1 − |a| (1 − w)) for a < 0, as the paper's (which fixes |a| = 1), and
  x′ = x + a (1 − w)(1 − x) for a > 0, since dark rings vanish on a black background such as MNIST's.
- **kaleidoscope**: ``shapes`` circles, squares and equilateral triangles of side ``size`` pixels, each at a random
  place and angle with a random colour; per shape the latents are its opacity (at most ``max_opacity``) and its
  colour (the random one moved by up to 0.5 per channel); shapes are painted in turn, x ← x + α M (κ − x).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch.nn import functional

from midbench.attacks import randomness
from midbench.attacks.latent import LatentAttack
from midbench.attacks.parametric import Render


def _draw(n: int, shape: tuple[int, ...], low: float, high: float, like: torch.Tensor) -> torch.Tensor:
    """Uniform numbers of shape (n, *shape) from the examples' generators (:mod:`midbench.attacks.randomness`)."""
    return randomness.uniform_like(torch.empty((n, *shape), dtype=like.dtype, device=like.device), low, high)


def _centred_grid(size: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel offsets (rows, columns) from the centre of a ``size`` × ``size`` kernel."""
    offsets = torch.arange(size, dtype=like.dtype, device=like.device) - (size - 1) / 2
    return torch.meshgrid(offsets, offsets, indexing="ij")


def convolve_per_example(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``images`` (N, C, H, W), each convolved (same size, zero padding) with its own ``kernels`` (N, C, k, k)."""
    n, channels, height, width = images.shape
    size = kernels.shape[-1]
    out = functional.conv2d(images.reshape(1, n * channels, height, width),
                            kernels.reshape(n * channels, 1, size, size), padding=size // 2, groups=n * channels)
    return out.view(n, channels, height, width)


class Gabor(LatentAttack):
    """Optimised Gabor noise (Kang et al. 2019; Kaufmann et al. 2023; module docstring)."""

    NAME: ClassVar[str] = "gabor"
    RANDOM_STRUCTURE: ClassVar[bool] = True
    BUDGET: ClassVar[dict[str, float]] = {"amplitude": 0.3}
    FIXED: ClassVar[dict[str, float]] = {"kernel": 11, "sigma": 3.0, "wavelength": 4.0, "density": 0.1,
                                         "orientations": 3}
    POSITIVE: ClassVar[tuple[str, ...]] = ("sigma", "wavelength")

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return tuple(x.shape)

    def kernels(self, theta: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Per example (θ of shape (N,)), the summed Gabor kernel (N, k, k)."""
        rows, cols = _centred_grid(int(self.fixed["kernel"]) | 1, like)
        envelope = torch.exp(-(rows**2 + cols**2) / (2 * self.fixed["sigma"] ** 2))
        count = max(int(self.fixed["orientations"]), 1)
        total = torch.zeros((theta.shape[0], *rows.shape), dtype=like.dtype, device=like.device)
        for i in range(count):
            angle = (theta + math.pi * i / count).view(-1, 1, 1)
            along = cols * torch.cos(angle) + rows * torch.sin(angle)
            total = total + (1.0 if i == 0 else 1.0 / count) * envelope * torch.cos(
                2 * math.pi * along / self.fixed["wavelength"])
        return total

    def renderer(self, x: torch.Tensor) -> Render:
        n, channels = x.shape[:2]
        points = (_draw(n, tuple(x.shape[1:]), 0.0, 1.0, x) < self.fixed["density"]).to(x.dtype)
        kernels = self.kernels(_draw(n, (), 0.0, math.pi, x), x).unsqueeze(1).expand(-1, channels, -1, -1)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            noise = convolve_per_example(self.budget["amplitude"] * latent * points[rows], kernels[rows])
            return (x[rows] + noise).clamp(0.0, 1.0)

        return render


def line_kernels(angles: torch.Tensor, length: int, like: torch.Tensor) -> torch.Tensor:
    """Antialiased lines through the centre of a ``length`` × ``length`` kernel at ``angles`` (any shape S):
    (*S, length, length), 1 on the line, falling to 0 one pixel across it."""
    rows, cols = _centred_grid(length, like)
    angle = angles.unsqueeze(-1).unsqueeze(-1)
    along = cols * torch.cos(angle) + rows * torch.sin(angle)
    across = (rows * torch.cos(angle) - cols * torch.sin(angle)).abs()
    return (1 - across).clamp(min=0.0) * (along.abs() <= length / 2).to(like.dtype)


class Snow(LatentAttack):
    """Optimised snow: streaks of flakes whose brightness is the latents (Kang et al. 2019; module docstring)."""

    NAME: ClassVar[str] = "snow"
    RANDOM_STRUCTURE: ClassVar[bool] = True
    BUDGET: ClassVar[dict[str, float]] = {"max_flake": 0.6}
    FIXED: ClassVar[dict[str, float]] = {"layers": 4, "density": 0.03, "length": 7}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], max(int(self.fixed["layers"]), 1), *x.shape[2:])

    def renderer(self, x: torch.Tensor) -> Render:
        n, _, height, width = x.shape
        layers = max(int(self.fixed["layers"]), 1)
        flakes = (_draw(n, (layers, height, width), 0.0, 1.0, x) < self.fixed["density"]).to(x.dtype)
        kernels = line_kernels(_draw(n, (layers,), 0.0, math.pi, x), int(self.fixed["length"]) | 1, x)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            brightness = self.budget["max_flake"] * latent**2 * flakes[rows]
            snow = convolve_per_example(brightness, kernels[rows]).sum(dim=1, keepdim=True)
            return (x[rows] + snow).clamp(0.0, 1.0)

        return render


def diamond_square(displacements: list[torch.Tensor], decay: float) -> torch.Tensor:
    """The diamond-square fractal on a torus from its displacements.

    ``displacements[i]`` (N, 3, 2^i, 2^i) holds level i's: for the square centres, and for the two kinds of
    diamond points (midpoints of horizontal and of vertical edges). Each new point is the mean of its four
    neighbours plus its displacement times the level's amplitude, 1 at the first level and divided by ``decay``
    at each next one. Returns the map (N, 1, 2^L, 2^L), L the number of levels; zero displacements give zero.
    """
    grid = torch.zeros_like(displacements[0][:, :1])
    amplitude = 1.0
    for level in displacements:
        # grid[k, l] is the point at (k, l) * step; neighbours wrap around (the map is a torus)
        right, down = grid.roll(-1, dims=3), grid.roll(-1, dims=2)
        centre = (grid + right + down + down.roll(-1, dims=3)) / 4 + amplitude * level[:, :1]
        row_mid = (grid + right + centre + centre.roll(1, dims=2)) / 4 + amplitude * level[:, 1:2]
        col_mid = (grid + down + centre + centre.roll(1, dims=3)) / 4 + amplitude * level[:, 2:]
        top = torch.stack((grid, row_mid), dim=-1).flatten(-2)  # rows 2k: grid points and edge midpoints
        bottom = torch.stack((col_mid, centre), dim=-1).flatten(-2)  # rows 2k + 1
        grid = torch.stack((top, bottom), dim=-2).flatten(-3, -2)
        amplitude /= decay
    return grid


class Fog(LatentAttack):
    """Optimised fog: a diamond-square fractal whose displacements are the latents (Kaufmann et al. 2023; module
    docstring)."""

    NAME: ClassVar[str] = "fog"
    BUDGET: ClassVar[dict[str, float]] = {"max_fog": 0.6}
    FIXED: ClassVar[dict[str, float]] = {"decay": 2.0, "grey": 0.5}
    POSITIVE: ClassVar[tuple[str, ...]] = ("decay",)

    @staticmethod
    def levels(x: torch.Tensor) -> int:
        """Levels of the fractal: its map is the smallest power of two that covers the image."""
        return max(math.ceil(math.log2(max(x.shape[-2:]))), 1)

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], 3 * sum(4**i for i in range(self.levels(x))))

    def renderer(self, x: torch.Tensor) -> Render:
        levels = self.levels(x)
        height, width = x.shape[-2:]

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            scaled = self.budget["max_fog"] * latent
            parts, start = [], 0
            for i in range(levels):
                size = 3 * 4**i
                parts.append(scaled[:, start:start + size].view(-1, 3, 2**i, 2**i))
                start += size
            fog = diamond_square(parts, self.fixed["decay"]).abs().clamp(max=1.0)[:, :, :height, :width]
            return ((1 - fog) * x[rows] + fog * self.fixed["grey"]).clamp(0.0, 1.0)

        return render


class Wood(LatentAttack):
    """Optimised wood grain: rings around the centre, warped and blended by the latents (Kaufmann et al. 2023;
    module docstring)."""

    NAME: ClassVar[str] = "wood"
    BUDGET: ClassVar[dict[str, float]] = {"max_blend": 1.0, "max_warp": 0.5}
    FIXED: ClassVar[dict[str, float]] = {"rings": 4, "grid": 7, "sharpness": 1.0}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], 1 + max(int(self.fixed["grid"]), 1) ** 2)

    def renderer(self, x: torch.Tensor) -> Render:
        height, width = x.shape[-2:]
        size = max(int(self.fixed["grid"]), 1)
        rows = (torch.arange(height, dtype=x.dtype, device=x.device) - height / 2) * 2 / height
        cols = (torch.arange(width, dtype=x.dtype, device=x.device) - width / 2) * 2 / width
        radius = torch.sqrt(rows.view(-1, 1) ** 2 + cols.view(1, -1) ** 2)

        def render(latent: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
            warp = functional.interpolate(latent[:, 1:].view(-1, 1, size, size), size=(height, width),
                                          mode="bilinear", align_corners=True)
            grain = torch.sin(math.pi * self.fixed["rings"] * (radius + self.budget["max_warp"] * warp))
            # |s|^p has an infinite slope at s = 0 for p < 1; the small floor keeps its gradient finite
            rings = (grain**2 + 1e-6) ** (self.fixed["sharpness"] / 2)
            blend = self.budget["max_blend"] * latent[:, :1].view(-1, 1, 1, 1)
            image = x[chosen]
            # rings drawn dark (blend < 0, the paper's) or light (blend > 0: dark rings vanish on a black background)
            return (image + (1 - rings) * (blend.clamp(min=0) * (1 - image) - (-blend).clamp(min=0) * image)
                    ).clamp(0.0, 1.0)

        return render


def shape_masks(kinds: torch.Tensor, centres: torch.Tensor, angles: torch.Tensor, size: float, height: int,
                width: int, like: torch.Tensor) -> torch.Tensor:
    """Antialiased masks (N, S, H, W) of circles (kind 0, diameter ``size``), squares (1, side ``size``) and
    equilateral triangles (2, side ``size``), centred at ``centres`` (N, S, 2: row, column) and turned by
    ``angles`` (N, S), from their signed distance d: mask = clip(0.5 − d, 0, 1)."""
    rows = torch.arange(height, dtype=like.dtype, device=like.device).view(1, 1, -1, 1) - centres[..., :1, None]
    cols = torch.arange(width, dtype=like.dtype, device=like.device).view(1, 1, 1, -1) - centres[..., 1:, None]
    cos, sin = torch.cos(angles)[..., None, None], torch.sin(angles)[..., None, None]
    u, v = cols * cos + rows * sin, rows * cos - cols * sin
    circle = torch.sqrt(u**2 + v**2) - size / 2
    square = torch.maximum(u.abs(), v.abs()) - size / 2
    inradius = size / (2 * math.sqrt(3))
    triangle = torch.stack([u * math.cos(a) + v * math.sin(a) for a in (math.pi / 2, 7 * math.pi / 6,
                                                                        11 * math.pi / 6)]).amax(dim=0) - inradius
    kind = kinds[..., None, None]
    distance = torch.where(kind == 0, circle, torch.where(kind == 1, square, triangle))
    return (0.5 - distance).clamp(0.0, 1.0)


class Kaleidoscope(LatentAttack):
    """Optimised kaleidoscope: random shapes whose opacity and colour are the latents (Kaufmann et al. 2023;
    module docstring)."""

    NAME: ClassVar[str] = "kaleidoscope"
    RANDOM_STRUCTURE: ClassVar[bool] = True
    BUDGET: ClassVar[dict[str, float]] = {"max_opacity": 1.0}
    FIXED: ClassVar[dict[str, float]] = {"shapes": 8, "size": 8.0}

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        return (x.shape[0], max(int(self.fixed["shapes"]), 1), 1 + x.shape[1])

    def renderer(self, x: torch.Tensor) -> Render:
        n, channels, height, width = x.shape
        count = max(int(self.fixed["shapes"]), 1)
        kinds = _draw(n, (count,), 0.0, 3.0, x).floor().clamp(max=2)
        centres = _draw(n, (count, 2), 0.0, 1.0, x) * torch.tensor([height - 1, width - 1], dtype=x.dtype,
                                                                   device=x.device)
        masks = shape_masks(kinds, centres, _draw(n, (count,), 0.0, 2 * math.pi, x), self.fixed["size"], height,
                            width, x)
        colours = _draw(n, (count, channels), 0.0, 1.0, x)

        def render(latent: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            opacity = (self.budget["max_opacity"] * latent[..., 0].abs()).clamp(max=1.0)  # a paint, not more
            colour = (colours[rows] + 0.5 * latent[..., 1:]).clamp(0.0, 1.0)
            out = x[rows]
            for s in range(count):
                weight = (opacity[:, s].view(-1, 1, 1, 1) * masks[rows, s].unsqueeze(1))
                out = out + weight * (colour[:, s].view(-1, channels, 1, 1) - out)
            return out.clamp(0.0, 1.0)

        return render
