"""Spatial attacks: the image is moved, not perturbed additively, so no Lp ball describes the threat.

- stAdv (:class:`FlowField`): Xiao, Zhu, Li, He, Liu & Song, "Spatially Transformed Adversarial Examples",
  ICLR 2018. Every output pixel is resampled (bilinearly) from the input at a position displaced by a per-pixel
  flow vector; the flow minimises a C&W-style margin loss plus τ times a total-variation-like smoothness loss.
- Rotation/translation grid search (:class:`RotationTranslation`): Engstrom, Tran, Tsipras, Schmidt & Madry,
  "Exploring the Landscape of Spatial Robustness", ICML 2019. Every combination of a grid of rotations and
  translations is tried and the worst one per example is kept.

Both entries have ``norm = None``: :meth:`Attack.__call__` then only clamps to [0, 1] and each attack enforces
its own budget (``max_flow`` pixels of displacement; ``max_angle`` degrees and ``max_shift`` pixels). The
transformation applied on the last call is kept (``last_flow``, ``last_params``) because the budget cannot be
read back from the images.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional

from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.norms import Norm
from midbench.errors import UsageError

# Adam's constants (Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, the defaults).
_ADAM_BETA1 = 0.9
_ADAM_BETA2 = 0.999
_ADAM_EPS = 1e-8
# Inside the square root of the smoothness loss, so its gradient exists where neighbouring flows are equal
# (in particular at the zero flow every run starts from); the value the paper's loss is usually written with.
_FLOW_LOSS_EPS = 1e-8


def _refuse_norm(norm: Norm | None, name: str) -> None:
    # A norm would make Attack.__call__ project the spatially transformed image onto an Lp ball around x: a
    # different, combined threat model that neither paper defines. Registry entries of family "spatial" omit it.
    if norm is not None:
        raise UsageError(f"{name} is a spatial attack bounded by its own parameters; give it no norm (got {norm})")


def identity_grid(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """The sampling grid (H, W, 2) of ``grid_sample(..., align_corners=True)`` that reproduces the image.

    With ``align_corners=True`` the normalised coordinates −1 and +1 are the centres of the first and last
    pixels, so one pixel is ``2 / (size − 1)`` normalised units and the identity grid hits pixel centres.
    """
    ys = torch.linspace(-1.0, 1.0, height, dtype=like.dtype, device=like.device)
    xs = torch.linspace(-1.0, 1.0, width, dtype=like.dtype, device=like.device)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1)  # grid_sample wants (x, y) = (column, row) order


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Resample ``x`` (N, C, H, W) along ``flow`` (N, 2, H, W) in pixels (Xiao et al. 2018, eq. 1–2).

    Output pixel (u, v) is the bilinear interpolation of ``x`` at (u + flow[:, 0], v + flow[:, 1]): channel 0
    is the horizontal (column) displacement, channel 1 the vertical (row) one. The same flow moves every
    colour channel. Positions outside the image take the value of the nearest border pixel: a flow only
    rearranges the image's own pixels, it does not invent a background (on MNIST the border is black anyway).
    Bilinear interpolation is a convex combination, so outputs stay in the input's range.
    """
    n, _, height, width = x.shape
    # One pixel in normalised units per axis; max(…, 1) keeps a one-pixel-wide axis from dividing by zero.
    scale = torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)], dtype=x.dtype, device=x.device)
    grid = identity_grid(height, width, x).unsqueeze(0) + flow.permute(0, 2, 3, 1) * scale
    return functional.grid_sample(x, grid.expand(n, -1, -1, -1), mode="bilinear", padding_mode="border",
                                  align_corners=True)


def flow_smoothness(flow: torch.Tensor) -> torch.Tensor:
    """L_flow of Xiao et al. (2018, eq. 4) per example: Σ_p Σ_{q∈N(p)} sqrt(‖Δu_p − Δu_q‖² + ‖Δv_p − Δv_q‖²).

    N(p) is the 4-neighbourhood inside the image. The double sum visits each adjacent pair twice (once from
    each end), hence the factor 2 over the sum of right and down neighbours. ``_FLOW_LOSS_EPS`` under the root
    keeps the loss differentiable where neighbouring flows are equal.
    """
    right = flow[:, :, :, 1:] - flow[:, :, :, :-1]
    down = flow[:, :, 1:, :] - flow[:, :, :-1, :]
    horizontal = torch.sqrt(right.pow(2).sum(dim=1) + _FLOW_LOSS_EPS).flatten(1).sum(dim=1)
    vertical = torch.sqrt(down.pow(2).sum(dim=1) + _FLOW_LOSS_EPS).flatten(1).sum(dim=1)
    return 2.0 * (horizontal + vertical)


def _margin(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """The C&W margin the attacker drives below 0 (Carlini & Wagner 2017, the f6 loss; stAdv eq. 3 with κ=0).

    Untargeted: Z_y − max_{i≠y} Z_i (negative once misclassified). Targeted: max_{i≠t} Z_i − Z_t (negative
    once the target wins).
    """
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(functional.one_hot(labels, logits.shape[1]).bool(), -math.inf).amax(dim=1)
    return others - own if targeted else own - others


class FlowField(Attack):
    """stAdv: spatially transformed adversarial examples with a hard displacement budget (Xiao et al. 2018).

    Minimises, per example, ``max(margin, 0) + tau · L_flow(f)`` over the flow ``f`` (2 × H × W, in pixels),
    where the margin is the C&W loss of the bilinearly resampled image (untargeted, or targeted at labels from
    :meth:`Attack.choose_targets`) and L_flow the smoothness loss of the paper (:func:`flow_smoothness`).

    Deviations from the paper, and why:

    - Optimiser: the paper uses L-BFGS. L-BFGS minimises one scalar over all variables with a shared line
      search and curvature history, so each example's result would depend on the other examples of its batch.
      Adam (Kingma & Ba 2015) is element-wise: examples in a batch stay independent, the run is a fixed number
      of steps (a known cost), and it is deterministic (on CPU; CUDA's grid_sample backward accumulates with
      atomics).
    - Budget: the paper's flow is unbounded (only penalised). Here every flow component is clamped to
      ``[−max_flow, max_flow]`` after each step (projected Adam), so no pixel moves more than ``max_flow``
      pixels along either axis (the L∞ norm of the flow). That is the threat model: robustness "at 1 pixel of
      flow" is well defined and comparable across models.
    - τ: the default is 0.005, not the paper's 0.05. The smoothness loss is weighed against a margin in logit
      units, so the right τ depends on the model's logit scale; small models (and many adversarially trained
      ones) have margins of a few logits, and at 0.05 the penalty outweighs them and the attack leaves most of
      its budget unused (on the test suite's 2-epoch MNIST CNN: 86% → 72% accuracy at 1 pixel, against 0%
      at 0.005). Under a hard budget τ should only shape the flow, not decide whether the budget is used, and
      a penalty that is stronger against small-logit models would favour exactly the models under test.

    Per example the attack returns the successful flow with the smallest L_flow among the iterates it
    evaluated (the paper's objective: the least visible successful flow); examples never fooled get the
    evaluated iterate with the lowest margin, the nearest the attack came. Iterate 0 is the zero flow, so an
    example the model already gets wrong keeps (up to interpolation error) its clean image.

    After a call, ``last_flow`` (N, 2, H, W, pixels) is the flow applied and ``last_success`` (N,) whether it
    fooled the model (for targeted attacks: reached the target).

    Args:
        eps: ignored (the registry passes the dataset's L∞ ε to every entry); the budget is ``max_flow``.
        norm: must be ``None``.
        steps: Adam steps (≥ 1).
        lr: Adam step size, in pixels (each step moves a flow component by about ``lr`` at most).
        tau: weight τ of the smoothness loss (the paper's value is 0.05; see above for the default).
        max_flow: maximum displacement of any pixel along either axis, in pixels (≥ 0).
        target: ``None`` (untargeted) or a target policy.

    Cost per example: ``steps + 1`` forward and ``steps`` backward passes (one forward+backward per step, one
    forward to evaluate the final iterate), plus one forward to choose targets when targeted.
    """

    def __init__(self, eps: float = 0.0, norm: Norm | None = None, steps: int = 100, lr: float = 0.05,
                 tau: float = 0.005, max_flow: float = 1.0, target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        _refuse_norm(norm, "stAdv (FlowField)")
        if not lr > 0:
            raise UsageError(f"stAdv's learning rate must be positive, got {lr}")
        require_at_least("stAdv", {"steps": (steps, 1), "tau": (tau, 0), "max_flow": (max_flow, 0)})
        self.steps = int(steps)
        self.lr = float(lr)
        self.tau = float(tau)
        self.max_flow = float(max_flow)
        self.last_flow: torch.Tensor | None = None
        self.last_success: torch.Tensor | None = None

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = self.choose_targets(model, x, y) if self.targeted else y
        n, _, height, width = x.shape
        flow = torch.zeros(n, 2, height, width, dtype=x.dtype, device=x.device)
        moment1 = torch.zeros_like(flow)
        moment2 = torch.zeros_like(flow)

        best_flow = flow.clone()
        best_image = x.clone()
        best_success = torch.zeros(n, dtype=torch.bool, device=x.device)
        best_smoothness = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)
        best_margin = torch.full((n,), math.inf, dtype=x.dtype, device=x.device)

        def record(flow: torch.Tensor, image: torch.Tensor, margin: torch.Tensor, smoothness: torch.Tensor) -> None:
            # Success means margin < 0 (misclassified, or the target is the arg-max). Among successful iterates
            # keep the smoothest; until the first success keep the iterate closest to success.
            success = margin < 0
            better = torch.where(best_success, success & (smoothness < best_smoothness),
                                 success | (margin < best_margin))
            best_flow[better] = flow[better]
            best_image[better] = image[better]
            best_smoothness[better] = torch.where(success, smoothness, best_smoothness)[better]
            best_margin[better] = margin[better]
            best_success.logical_or_(success)

        for step in range(1, self.steps + 1):
            flow_var = flow.detach().requires_grad_(True)
            image = flow_warp(x, flow_var)
            margin = _margin(model(image), labels, self.targeted)
            smoothness = flow_smoothness(flow_var)
            record(flow, image.detach(), margin.detach(), smoothness.detach())
            # Summed, not averaged: each example's gradient (and with element-wise Adam, its whole trajectory)
            # does not depend on the batch it is in.
            loss = (margin.clamp_min(0.0) + self.tau * smoothness).sum()
            (gradient,) = torch.autograd.grad(loss, flow_var)
            with torch.no_grad():
                moment1.mul_(_ADAM_BETA1).add_(gradient, alpha=1 - _ADAM_BETA1)
                moment2.mul_(_ADAM_BETA2).addcmul_(gradient, gradient, value=1 - _ADAM_BETA2)
                corrected1 = moment1 / (1 - _ADAM_BETA1**step)
                corrected2 = moment2 / (1 - _ADAM_BETA2**step)
                flow = flow - self.lr * corrected1 / (corrected2.sqrt() + _ADAM_EPS)
                # The hard budget: projection onto the L∞ ball of radius max_flow (pixels) in flow space.
                flow = flow.clamp(-self.max_flow, self.max_flow)

        with torch.no_grad():  # the final iterate has not been evaluated yet
            image = flow_warp(x, flow)
            record(flow, image, _margin(model(image), labels, self.targeted), flow_smoothness(flow))

        self.last_flow = best_flow
        self.last_success = best_success
        return best_image

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "lr": self.lr, "tau": self.tau,
                "max_flow": self.max_flow}


def rotate_translate(x: torch.Tensor, angles: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Rotate ``x`` (N, C, H, W) about its centre by ``angles`` (N,) degrees, then translate by ``shifts``
    (N, 2) pixels, as (columns, rows); positive shifts move the content right and down, positive angles rotate
    it clockwise as displayed (rows grow downwards). Uncovered pixels are black (zero padding), as Engstrom et
    al. (2019) do; for MNIST this is the background colour.

    Output pixel p samples the input at R(−θ)(p − t) in pixel coordinates centred on the image. With
    ``align_corners=False`` normalised coordinates are pixel coordinates scaled by S = diag(2/W, 2/H), so the
    affine map in normalised units is A = S R(−θ) S⁻¹ with offset −A S t; S keeps rotations rigid on
    non-square images.
    """
    n, _, height, width = x.shape
    radians = torch.deg2rad(angles.to(x.dtype))
    cos, sin = torch.cos(radians), torch.sin(radians)
    aspect = height / width
    a = torch.stack((torch.stack((cos, sin * aspect), dim=1), torch.stack((-sin / aspect, cos), dim=1)), dim=1)
    shift_normalised = shifts.to(x.dtype) * torch.tensor([2.0 / width, 2.0 / height], dtype=x.dtype,
                                                         device=x.device)
    offset = -(a @ shift_normalised.unsqueeze(-1))
    theta = torch.cat((a, offset), dim=2)
    grid = functional.affine_grid(theta, [n, x.shape[1], height, width], align_corners=False)
    return functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _grid_values(limit: float, points: int) -> torch.Tensor:
    # One grid point means "no transformation" on that axis, not the grid's lower end (which linspace gives).
    if points == 1:
        return torch.zeros(1)
    return torch.linspace(-limit, limit, points)


class RotationTranslation(Attack):
    """Worst-of-grid rotation and translation (Engstrom et al., ICML 2019, the grid-search attack).

    Every combination of ``angle_steps`` rotations evenly spaced in [−max_angle, +max_angle] degrees and
    ``shift_steps`` translations evenly spaced in [−max_shift, +max_shift] pixels on each axis is applied
    (:func:`rotate_translate`: rotation about the centre, then translation, bilinear, black padding), in grid
    order (angle, then horizontal, then vertical shift). Per example the attack keeps the first transformation
    that fools the model, as the paper counts a point as broken when any grid point is misclassified, and stops
    trying others for that example; an example no transformation fools gets the one with the highest
    cross-entropy of the true label (targeted: the lowest of the target label, success meaning the target is
    predicted), ties going to the first in grid order.
    The defaults are the paper's MNIST grid: ±30°, ±3 px, 31 × 5 × 5 = 775 transformations.

    No gradients: all forward passes run under ``torch.no_grad()``. After a call, ``last_params`` (N, 3) holds
    the chosen (angle in degrees, horizontal shift, vertical shift in pixels) and ``last_success`` (N,)
    whether it fooled the model.

    Args:
        eps: ignored (the registry passes the dataset's L∞ ε to every entry); the budget is the grid.
        norm: must be ``None``.
        max_angle: largest rotation in degrees, either direction (≥ 0).
        max_shift: largest translation in pixels along each axis, either direction (≥ 0).
        angle_steps: grid points for the angle (≥ 1; one point means no rotation).
        shift_steps: grid points per translation axis (≥ 1; one point means no translation).
        target: ``None`` (untargeted) or a target policy.

    Cost per example: at most ``angle_steps × shift_steps²`` forward passes (one more to choose targets when
    targeted), no backward pass; an example stops costing once fooled. When fewer than ``images_per_forward``
    examples remain, several transformations share a forward pass.
    """

    uses_gradients: ClassVar[bool] = False  # a grid search: forward passes only

    #: transformed images per forward pass once few examples remain (speed only: the result does not change;
    #: about the evaluation's batch size, beyond which larger CPU batches of small models get slower per image)
    images_per_forward: int = 256

    def __init__(self, eps: float = 0.0, norm: Norm | None = None, max_angle: float = 30.0, max_shift: float = 3.0,
                 angle_steps: int = 31, shift_steps: int = 5, target: str | None = None) -> None:
        super().__init__(eps, norm, target)
        _refuse_norm(norm, "RotationTranslation")
        if max_angle < 0 or max_shift < 0:
            raise UsageError(f"max_angle and max_shift must be non-negative, got {max_angle} and {max_shift}")
        if angle_steps < 1 or shift_steps < 1:
            raise UsageError(f"angle_steps and shift_steps must be at least 1, got {angle_steps} and {shift_steps}")
        self.max_angle = float(max_angle)
        self.max_shift = float(max_shift)
        self.angle_steps = int(angle_steps)
        self.shift_steps = int(shift_steps)
        self.last_params: torch.Tensor | None = None
        self.last_success: torch.Tensor | None = None

    def grid(self) -> list[tuple[float, float, float]]:
        """All (angle, horizontal shift, vertical shift) combinations, in the order they are tried."""
        angles = _grid_values(self.max_angle, self.angle_steps).tolist()
        shifts = _grid_values(self.max_shift, self.shift_steps).tolist()
        return list(itertools.product(angles, shifts, shifts))

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        labels = self.choose_targets(model, x, y) if self.targeted else y
        n = x.shape[0]
        best_image = x.clone()
        best_params = torch.zeros(n, 3, dtype=x.dtype, device=x.device)
        best_success = torch.zeros(n, dtype=torch.bool, device=x.device)
        best_score = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
        grid = torch.tensor(self.grid(), dtype=x.dtype, device=x.device)
        position = 0
        with torch.no_grad():
            while position < grid.shape[0]:
                # Only examples not yet fooled are attacked further: their outcome cannot change, so the rest
                # of the grid would be spent for nothing (on a weak model, most of it).
                active = torch.nonzero(~best_success).flatten()
                if active.numel() == 0:
                    break
                # Several transformations per forward pass when few examples remain, so batches stay large
                # enough to amortise a forward pass's fixed cost; each output row depends only on its own image.
                count = max(1, min(self.images_per_forward // active.numel(), grid.shape[0] - position))
                chunk = grid[position:position + count]
                position += count
                params = chunk.repeat_interleave(active.numel(), dim=0)  # transformation j for every active one
                images = rotate_translate(x[active].repeat(count, 1, 1, 1), params[:, 0], params[:, 1:])
                logits = model(images)
                target = labels[active]
                for j in range(count):  # in grid order, so the result does not depend on the chunking
                    rows = slice(j * active.numel(), (j + 1) * active.numel())
                    loss = functional.cross_entropy(logits[rows], target, reduction="none")
                    predicted = logits[rows].argmax(dim=1)
                    success = predicted == target if self.targeted else predicted != target
                    score = -loss if self.targeted else loss
                    # The first fooling transformation is kept for good; until then, the highest score.
                    open_ = ~best_success[active]
                    better = open_ & (success | (score > best_score[active]))
                    chosen = active[better]
                    best_image[chosen] = images[rows][better]
                    best_params[chosen] = params[rows][better]
                    best_score[chosen] = score[better]
                    best_success[chosen] = success[better]
        self.last_params = best_params
        self.last_success = best_success
        return best_image

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "max_angle": self.max_angle, "max_shift": self.max_shift,
                "angle_steps": self.angle_steps, "shift_steps": self.shift_steps}
