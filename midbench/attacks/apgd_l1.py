"""l1-APGD: Auto-PGD for the L1 ball intersected with the image box, after Croce & Hein, "Mind the Box: l1-APGD
for Sparse Adversarial Attacks on Image Classifiers", ICML 2021, and the authors' AutoAttack release.

The effective threat model of an L1 attack on images is {x + δ : ‖δ‖₁ ≤ ε, x + δ ∈ [0, 1]^d}, not the ball alone;
an attack that ignores the box spends budget on coordinates the box clips away. Four things differ from the L∞/L2
search of :mod:`midbench.attacks.apgd`:

1. **Exact projection** onto that intersection (:func:`project_l1_box`): soft-thresholding inside the box,
   δ_i = sign(y_i) · clip(|y_i| − λ, 0, room_i), with the threshold λ ≥ 0 at which ‖δ‖₁ = ε. Duchi et al.'s
   projection onto the ball followed by clipping (SLIDE's, :mod:`midbench.attacks.l1`) is feasible but not the
   closest point, and leaves budget unused.
2. **A sparse step**: sign(g) on the k coordinates of largest |g| that can move (box-aware as in SLIDE), scaled
   to an L1 norm of η. k adapts per example: it starts at a fifth of the coordinates, and at every checkpoint
   becomes two thirds of the number of coordinates the best point found so far has changed.
3. **The step size** starts at the radius (not twice it) and shrinks by 1.5 at every checkpoint (every 4% of
   the iterations), within [radius/10, radius]; where the best point's support shrank by more than 5% since
   the last checkpoint, the step returns to the radius and the search restarts from the best point. There is
   no momentum.
4. **Larger radii first**: 30% of the iterations at 3ε, 30% at 2ε and the rest at ε, each phase starting from
   the previous phase's best point projected onto its own ball. Only points of the last phase (inside the ε
   ball) count as adversarial.

Losses, targets, restarts and the per-example independence the nested profile needs are the pixel APGD's
(:func:`midbench.attacks.apgd.attack`): every quantity above is per example, and the random start is drawn
through :mod:`midbench.attacks.randomness`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from midbench.attacks import apgd, randomness
from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.l1 import top_coordinates_direction
from midbench.attacks.norms import Norm
from midbench.errors import UsageError

#: (share of the iterations, radius as a multiple of ε) of the phases before the last, under ``large_radii``
LARGER_RADII = ((0.3, 3.0), (0.3, 2.0))
#: k at the start of a search without a warm start, as a fraction of the coordinates
FIRST_SPARSITY = 0.2
#: checkpoints every this fraction of a phase's iterations (at least every iteration)
CHECK_EVERY = 0.04


def project_l1_box(delta: torch.Tensor, clean: torch.Tensor, eps: float) -> torch.Tensor:
    """The perturbation of ``{δ : ‖δ‖₁ ≤ eps, 0 ≤ clean + δ ≤ 1}`` closest to ``delta`` in L2, per example.

    With a_i = |delta_i| and room_i the distance from clean_i to the box's face in delta_i's direction, the
    solution is sign(delta_i) · clip(a_i − λ, 0, room_i) (the KKT conditions of the projection). Its L1 norm
    f(λ) = Σ clip(a_i − λ, 0, room_i) falls piecewise linearly from Σ min(a_i, room_i) at λ = 0 to 0; λ is 0 if
    that is within ``eps`` (a plain clip to the box), else the root of f(λ) = eps, found exactly from the sorted
    knots where coordinates start and stop moving with λ.
    """
    flat, base = delta.flatten(1), clean.flatten(1)
    if eps <= 0:
        return torch.zeros_like(delta)
    size = flat.abs().double()
    room = torch.where(flat > 0, 1.0 - base, torch.where(flat < 0, base, torch.zeros_like(base))).double()
    room = room.clamp_min(0.0)
    kept = torch.minimum(size, room)
    total = kept.sum(dim=1)
    threshold = torch.zeros_like(total)
    over = total > eps
    if bool(over.any()):
        a, r, f0 = size[over], room[over], total[over]
        # coordinate i moves with λ (slope −1) for λ in [max(a_i − room_i, 0), a_i]
        knots = torch.cat(((a - r).clamp_min(0.0), a), dim=1)
        joins = torch.cat((torch.ones_like(a), -torch.ones_like(a)), dim=1)
        knots, order = knots.sort(dim=1)
        joins = joins.gather(1, order)
        # the number of moving coordinates on the gap that ends at each knot (none before the first)
        moving = torch.cat((torch.zeros_like(joins[:, :1]), joins.cumsum(dim=1)[:, :-1]), dim=1)
        gaps = torch.cat((knots[:, :1], knots.diff(dim=1)), dim=1)
        values = f0[:, None] - (moving * gaps).cumsum(dim=1)  # f at each knot, non-increasing, 0 at the last
        first = (values <= eps).to(torch.int8).argmax(dim=1, keepdim=True)  # the first knot at or below eps
        before = (first - 1).clamp_min(0)
        value_before = torch.where(first > 0, values.gather(1, before), f0[:, None])
        knot_before = torch.where(first > 0, knots.gather(1, before), torch.zeros_like(value_before))
        slope = moving.gather(1, first).clamp_min(1.0)  # f fell across this gap, so at least one moved
        threshold[over] = (knot_before + (value_before - eps) / slope).squeeze(1)
    projected = flat.sign() * torch.minimum((size - threshold[:, None]).clamp_min(0.0), room).to(flat.dtype)
    # float rounding may leave the norm an ulp above eps: shrink towards clean (still inside the box)
    norm = projected.abs().sum(dim=1, keepdim=True)
    projected = torch.where(norm > eps, projected * (eps / norm), projected)
    return projected.view_as(delta)


def phases(steps: int, large_radii: bool) -> list[tuple[float, int]]:
    """(radius as a multiple of ε, iterations) of each phase of a search of ``steps`` iterations."""
    if not large_radii:
        return [(1.0, steps)]
    early = [(scale, math.ceil(share * steps)) for share, scale in LARGER_RADII]
    return [*early, (1.0, steps - sum(length for _, length in early))]


def support(points: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """‖points − clean‖₀ per example."""
    return (points != clean).flatten(1).sum(dim=1)


def search(forward: apgd.Forward, clean: torch.Tensor, eps: float, start: torch.Tensor, y: torch.Tensor, loss: str,
           target: torch.Tensor | None, steps: int, large_radii: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of l1-APGD (module docstring) from ``start`` (a point of the first phase's set).

    Returns:
        (misclassified, points): per example, whether a misclassified point inside the ε set was found and the
        first one found, or else the point of highest loss of the last phase.
    """
    n = start.shape[0]
    coordinates = start[0].numel()
    points = start.clone()
    found = torch.zeros(n, dtype=torch.bool, device=start.device)
    state: dict[str, torch.Tensor] = {"rows": torch.arange(n, device=start.device), "y": y, "clean": clean,
                                      "x": start}
    if target is not None:
        state["target"] = target
    plan = phases(steps, large_radii)
    for number, (scale, length) in enumerate(plan):
        final_phase = number == len(plan) - 1
        radius = scale * eps
        s = state
        # the previous phase's best point, moved into this phase's set (the first start is inside already)
        here = s["clean"] + project_l1_box(s["x"] - s["clean"], s["clean"], radius)
        value, logits, gradient = apgd.loss_and_gradient(forward, here, s["rows"], s["y"], loss, s.get("target"),
                                                         need_gradient=length > 0)
        if gradient is None:  # a last phase without steps only scores its start
            gradient = torch.zeros_like(here)
        changed = support(here, s["clean"])
        warm = number > 0
        s.update({"x": here, "value": value, "gradient": gradient, "best_x": here, "best_value": value,
                  "best_gradient": gradient, "step": torch.full((len(value),), radius, dtype=here.dtype,
                                                                device=here.device),
                  "count": ((changed / 1.5).ceil().clamp_min(1).long() if warm
                            else torch.full_like(changed, max(1, math.ceil(FIRST_SPARSITY * coordinates)))),
                  "support": changed if warm else torch.full_like(changed, coordinates)})
        if final_phase:
            s = apgd.retire(s, logits, points, found)
        period = max(math.floor(CHECK_EVERY * length), 1)
        for k in range(length):
            if s["rows"].numel() == 0:
                break
            direction = top_coordinates_direction(s["gradient"], s["x"], s["count"])
            moved = s["x"] + apgd.per_row(s["step"], start) * direction - s["clean"]
            new = s["clean"] + project_l1_box(moved, s["clean"], radius)
            last = final_phase and k == length - 1  # the final point is only scored
            value, logits, gradient = apgd.loss_and_gradient(forward, new, s["rows"], s["y"], loss, s.get("target"),
                                                             need_gradient=not last)
            if gradient is None:
                gradient = s["gradient"]
            better = value > s["best_value"]
            s["best_x"] = torch.where(apgd.per_row(better, new), new, s["best_x"])
            s["best_gradient"] = torch.where(apgd.per_row(better, new), gradient, s["best_gradient"])
            s["best_value"] = torch.where(better, value, s["best_value"])
            s["x"], s["value"], s["gradient"] = new, value, gradient
            if (k + 1) % period == 0:
                changed = support(s["best_x"], s["clean"])
                s["count"] = (changed / 1.5).ceil().clamp_min(1).long()
                shrank = changed < 0.95 * s["support"]
                s["step"] = torch.where(shrank, torch.full_like(s["step"], radius), s["step"] / 1.5)
                s["step"] = s["step"].clamp(radius / 10, radius)
                s["x"] = torch.where(apgd.per_row(shrank, new), s["best_x"], s["x"])
                s["gradient"] = torch.where(apgd.per_row(shrank, new), s["best_gradient"], s["gradient"])
                s["value"] = torch.where(shrank, s["best_value"], s["value"])
                s["support"] = changed
            if final_phase:
                s = apgd.retire(s, logits, points, found, new)
        s["x"] = s["best_x"]
        state = s
    points[state["rows"]] = state["best_x"]
    return found, points


class APGDL1(Attack):
    """l1-APGD (Croce & Hein 2021; module docstring), untargeted, in the L1 ball intersected with [0, 1]^d.

    Cost per example, at most: 1 forward pass (clean logits) plus, for each restart of each stage (a loss, or a
    target of ``dlr-targeted``), ``steps + 3`` forward and ``steps + 2`` backward passes (``steps + 1`` and
    ``steps`` without ``large_radii``): every phase scores its start, and the final point needs no gradient. An
    example stops costing anything once misclassified inside the ε ball.

    Args:
        steps: iterations per run (≥ 3 with ``large_radii``, else ≥ 1).
        restarts: random restarts per stage, each only on the examples still correctly classified (≥ 1).
        losses: run in sequence, from ``ce``, ``margin``, ``dlr``, ``dlr-targeted`` (a list or a comma-separated
            string), as for :class:`midbench.attacks.apgd.APGD`.
        n_targets: target classes of ``dlr-targeted`` (the most likely wrong classes of the clean input).
        large_radii: search at 3ε and 2ε before ε (point 4 of the module docstring), as AutoAttack's L1 APGD does.
    """

    def __init__(self, eps: float, norm: Norm, steps: int = 100, restarts: int = 1,
                 losses: str | Sequence[str] = ("ce", "dlr-targeted"), n_targets: int = 3,
                 large_radii: bool = True) -> None:
        super().__init__(eps, norm)
        if norm is not Norm.L1:
            raise UsageError(f"APGD-L1 is an L1 attack, got norm {norm.value if norm else norm}; use APGD for "
                             "Linf and L2")
        require_at_least("APGD-L1", {"steps": (steps, 3 if large_radii else 1), "restarts": (restarts, 1),
                                     "n_targets": (n_targets, 1)})
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.losses = apgd.parse_losses(losses)
        self.n_targets = int(n_targets)
        self.large_radii = bool(large_radii)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        eps = self.eps
        with torch.no_grad():
            logits = model(x)
        first_radius = phases(self.steps, self.large_radii)[0][0] * eps

        def forward(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return model(points)

        def random_start() -> torch.Tensor:
            # a Gaussian direction projected onto the first phase's set: on its boundary, and sparse-ish
            return x + project_l1_box(randomness.randn_like(x), x, first_radius)

        def run(active: torch.Tensor, start: torch.Tensor, labels: torch.Tensor, loss: str,
                target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            return search(forward, x[active], eps, start, labels, loss, target, self.steps, self.large_radii)

        _, x_adv = apgd.attack(run, random_start, x, y, logits, self.losses, self.n_targets, self.restarts)
        return x_adv

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "restarts": self.restarts, "losses": list(self.losses),
                "n_targets": self.n_targets, "large_radii": self.large_radii}
