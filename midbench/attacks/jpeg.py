"""The JPEG attack of Kang, Sun, Hendrycks, Brown & Steinhardt, "Testing Robustness Against Unforeseen
Adversaries" (2019): an L∞-bounded perturbation of the image's JPEG coefficients.

The image is encoded as a baseline JPEG encoder would before entropy coding (ITU-T T.81, JFIF): colour images
go to YCbCr (JFIF's full-range BT.601 matrix), every channel is level-shifted by one half, cut into 8 × 8
blocks (the image is padded by repeating its last row and column, as encoders do) and transformed by the 2-D
DCT-II; T.81's DCT is the orthonormal one, so decoding is its transpose. The attacker changes every coefficient
by at most ``quant_steps`` steps of the quality-50 quantisation table of T.81 Annex K (the luminance table for Y
and grey images, the chrominance one for Cb and Cr): high frequencies, which JPEG quantises coarsely, may move
more than low ones. The decoded image is clipped to [0, 1]. Nothing is rounded, so the attack is differentiable
(Kang et al. perturb the quantised coefficients in the same way).

The budget is ``quant_steps``; the registry's strength ladder scales it.
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
from midbench.errors import UsageError

BLOCK = 8
#: ITU-T T.81 Annex K, Table K.1: luminance quantisation table (quality 50), row-major, in 8-bit units
LUMINANCE_TABLE = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
#: ITU-T T.81 Annex K, Table K.2: chrominance quantisation table (quality 50)
CHROMINANCE_TABLE = (
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
    47, 66, 99, 99, 99, 99, 99, 99, *([99] * 32))
#: JFIF's RGB → YCbCr matrix (full-range ITU-R BT.601); Cb and Cr are offset by one half
RGB_TO_YCBCR = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))


def dct_matrix(size: int, like: torch.Tensor) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (``D @ v`` transforms a column vector; ``D.T`` inverts it)."""
    k = torch.arange(size, dtype=torch.float64)[:, None]
    i = torch.arange(size, dtype=torch.float64)[None, :]
    matrix = torch.cos(math.pi * (2 * i + 1) * k / (2 * size)) * math.sqrt(2.0 / size)
    matrix[0] /= math.sqrt(2.0)
    return matrix.to(dtype=like.dtype, device=like.device)


def quantisation_steps(channels: int, like: torch.Tensor) -> torch.Tensor:
    """Per channel, the 8 × 8 quantisation steps in [0, 1] pixel units: (channels, 8, 8)."""
    luminance = torch.tensor(LUMINANCE_TABLE, dtype=like.dtype, device=like.device).view(BLOCK, BLOCK) / 255
    chrominance = torch.tensor(CHROMINANCE_TABLE, dtype=like.dtype, device=like.device).view(BLOCK, BLOCK) / 255
    if channels == 3:
        return torch.stack((luminance, chrominance, chrominance))
    return luminance.expand(channels, BLOCK, BLOCK)


class JpegCodec:
    """The lossless part of a JPEG codec for images of one shape: ``encode`` to block DCT coefficients
    (N, C, rows, cols, 8, 8) and ``decode`` back (exact up to float rounding)."""

    def __init__(self, like: torch.Tensor) -> None:
        _, self.channels, self.height, self.width = like.shape
        self.rows, self.cols = -(-self.height // BLOCK), -(-self.width // BLOCK)
        self.dct = dct_matrix(BLOCK, like)
        self.colour = self.channels == 3
        self.matrix = torch.tensor(RGB_TO_YCBCR, dtype=like.dtype, device=like.device)
        self.offset = torch.tensor([0.0, 0.5, 0.5], dtype=like.dtype, device=like.device).view(1, 3, 1, 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        if self.colour:
            x = torch.einsum("ij,njhw->nihw", self.matrix, x) + self.offset
        pad_h, pad_w = self.rows * BLOCK - self.height, self.cols * BLOCK - self.width
        if pad_h or pad_w:
            x = functional.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        blocks = (x - 0.5).unflatten(2, (self.rows, BLOCK)).unflatten(4, (self.cols, BLOCK)).permute(0, 1, 2, 4, 3, 5)
        return self.dct @ blocks @ self.dct.T

    def decode(self, coefficients: torch.Tensor) -> torch.Tensor:
        blocks = self.dct.T @ coefficients @ self.dct
        x = blocks.permute(0, 1, 2, 4, 3, 5).flatten(4, 5).flatten(2, 3) + 0.5
        x = x[:, :, :self.height, :self.width]
        if self.colour:
            x = torch.einsum("ij,njhw->nihw", torch.linalg.inv(self.matrix), x - self.offset)
        return x


class JpegAttack(Attack):
    """L∞ attack on the JPEG coefficients (Kang et al. 2019): every DCT coefficient of every 8 × 8 block moves by
    at most ``quant_steps`` quantisation steps; PGD with sign steps finds the change (module docstring).

    After a call, ``last_change`` (N, C, rows, cols, 8, 8) holds the coefficient changes in quantisation steps
    (``|change| ≤ quant_steps``) and ``last_success`` (N,) whether they fooled the model; the returned image is
    ``clip(decode(encode(x) + change · Q), 0, 1)``.

    Args:
        eps: ignored (the registry passes the dataset's L∞ ε to every entry); the budget is ``quant_steps``.
        norm: must be ``None``.
        quant_steps: largest change of a coefficient, in steps of its quantisation table entry (≥ 0).
        steps: PGD steps (≥ 1).
        relative_step: step size as a fraction of ``quant_steps`` (so scaling the budget scales the steps).
        restarts, losses, schedule, optimizer, n_targets: how the change is optimised, as for
            :class:`midbench.attacks.elastic.ElasticAttack` (:func:`midbench.attacks.parametric.optimise`).
        random_start: start from a uniformly random change inside the budget.
        target: ``None`` (untargeted) or a target policy.

    Cost per example: ``steps + 1`` forward and ``steps`` backward passes per restart, at most (one more forward
    when targeted); under ``apgd``, per run (``restarts`` per loss, and per target of ``dlr-targeted``), plus one
    clean forward.
    """

    def __init__(self, eps: float = 0.0, norm: Norm | None = None, quant_steps: float = 1.0, steps: int = 20,
                 relative_step: float = 0.125, random_start: bool = True, restarts: int = 1,
                 losses: str | list[str] = "ce", schedule: str = "constant", optimizer: str = "pgd",
                 n_targets: int = 3, target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        if norm is not None:
            raise UsageError(f"the JPEG attack is bounded in JPEG coefficients by quant_steps; give it no norm "
                             f"(got {norm})")
        require_at_least("JPEG", {"quant_steps": (quant_steps, 0), "steps": (steps, 1),
                                  "relative_step": (relative_step, 0), "n_targets": (n_targets, 1)})
        self.restarts, self.losses, self.schedule = check_restarts(restarts, losses, schedule, "JPEG",
                                                                    optimizer, target is not None)
        self.optimizer = optimizer
        self.n_targets = int(n_targets)
        self.quant_steps = float(quant_steps)
        self.steps = int(steps)
        self.relative_step = float(relative_step)
        self.random_start = bool(random_start)
        self.last_change: torch.Tensor | None = None
        self.last_success: torch.Tensor | None = None

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = self.choose_targets(model, x, y) if self.targeted else y
        codec = JpegCodec(x)
        coefficients = codec.encode(x)
        steps = quantisation_steps(codec.channels, x).view(1, codec.channels, 1, 1, BLOCK, BLOCK)

        def render(change: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return codec.decode(coefficients[rows] + change * steps).clamp(0.0, 1.0)

        result = optimise(model, render, tuple(coefficients.shape), labels, self.targeted, self.quant_steps,
                          self.steps, self.relative_step * self.quant_steps, self.random_start, x, self.restarts,
                          self.losses, self.schedule, self.optimizer, self.n_targets)
        self.last_change, self.last_success = result.variables, result.success
        return result.images

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "quant_steps": self.quant_steps, "steps": self.steps,
                "relative_step": self.relative_step, "random_start": self.random_start, "restarts": self.restarts,
                "losses": list(self.losses), "schedule": self.schedule,
                "optimizer": self.optimizer, "n_targets": self.n_targets}
