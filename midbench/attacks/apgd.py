"""Auto-PGD, a native implementation of Algorithm 1 of Croce & Hein, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", ICML 2020, for L∞ and L2 (for L1, where the box
changes the step and the projection, see :mod:`midbench.attacks.apgd_l1`).

PGD with momentum (α = 0.75) whose step size starts at 2ε and is halved, per example, at checkpoints
w_j = ⌈p_j·N⌉ (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) when

1. the loss rose in fewer than ρ·(w_j − w_{j−1}) of the steps since the last checkpoint, or
2. the step size was not halved at the last checkpoint and the best loss has not improved since;

a halving also restarts from the best point found. Losses, run one after the other: cross-entropy ``ce``, the
C&W margin ``margin``, the paper's difference of logits ratio ``dlr`` and its targeted form ``dlr-targeted``,
aimed in turn at the ``n_targets`` most likely wrong classes of the clean input.

Every example is attacked on its own: per-example step sizes, checkpoints and best points, a loss summed (never
averaged) over the batch, random starts drawn through :mod:`midbench.attacks.randomness`, and an example leaves
the batch as soon as it is misclassified. Under :func:`~midbench.attacks.randomness.per_example_generators` an
example's result is therefore the same whichever examples share its batch, which the nested strength ladder of
the unknown-attack profile relies on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.gradient import steepest_step
from midbench.attacks.norms import Norm, distance, project
from midbench.errors import UsageError

LOSSES = ("ce", "margin", "dlr", "dlr-targeted")
#: classes a loss needs: DLR divides by z_π1 − z_π3, the targeted form by z_π1 − (z_π3 + z_π4)/2
MIN_CLASSES = {"ce": 2, "margin": 2, "dlr": 3, "dlr-targeted": 4}


def checkpoints(steps: int) -> list[int]:
    """The paper's checkpoints w_0 = 0 < w_1 < … below ``steps`` (duplicates of short runs merged)."""
    fractions = [0.0, 0.22]
    while fractions[-1] < 1.0:
        fractions.append(fractions[-1] + max(fractions[-1] - fractions[-2] - 0.03, 0.06))
    # round before ceil: 0.22 * 100 is 22.000000000000004 in floating point, which must stay 22
    points = {math.ceil(round(p * steps, 6)) for p in fractions}
    return sorted(w for w in points if w < steps)


def parse_losses(losses: str | Sequence[str]) -> tuple[str, ...]:
    """``("ce", "dlr-targeted")`` or ``"ce,dlr-targeted"`` → a tuple of known loss names."""
    names = [name.strip() for name in losses.split(",")] if isinstance(losses, str) else [str(n) for n in losses]
    unknown = [name for name in names if name not in LOSSES]
    if unknown or not names:
        raise UsageError(f"APGD: unknown loss(es) {unknown or names}; use one or more of {', '.join(LOSSES)}")
    return tuple(names)


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: str, target: torch.Tensor | None) -> torch.Tensor:
    """The loss an attacker ascends, one value per example (no reduction, so no example sees another)."""
    if loss == "ce":
        return nn.functional.cross_entropy(logits, y, reduction="none")
    true_logit = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    if loss == "margin":
        return others.amax(dim=1) - true_logit
    ranked = logits.sort(dim=1, descending=True).values
    if loss == "dlr":
        return -(true_logit - others.amax(dim=1)) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
    assert target is not None
    target_logit = logits.gather(1, target[:, None]).squeeze(1)
    return -(true_logit - target_logit) / (ranked[:, 0] - (ranked[:, 2] + ranked[:, 3]) / 2 + 1e-12)


#: (points, rows) → logits: the classifier's output at ``points`` of the examples ``rows`` of the attacked batch
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: (points, rows) → the points moved into the feasible set of those examples (ball ∩ box, or a latent's box)
Projection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def loss_and_gradient(forward: Forward, points: torch.Tensor, rows: torch.Tensor, y: torch.Tensor, loss: str,
                      target: torch.Tensor | None, need_gradient: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-example loss, logits and ∂(Σ loss)/∂points: one forward and, if ``need_gradient``, one backward.

    The gradient of the *summed* loss with respect to example i is that of example i's own loss.
    """
    if not need_gradient:
        with torch.no_grad():
            logits = forward(points, rows)
        return attack_loss(logits, y, loss, target), logits, None
    points = points.detach().requires_grad_(True)
    logits = forward(points, rows)
    values = attack_loss(logits, y, loss, target)
    (gradient,) = torch.autograd.grad(values.sum(), points)
    return values.detach(), logits.detach(), gradient


def per_row(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-example tensor (N,), a mask or a step size, shaped to broadcast over ``like``'s (N, ...)."""
    return mask.view(-1, *([1] * (like.dim() - 1)))


def check_losses(losses: tuple[str, ...], num_classes: int, attack: str = "APGD") -> None:
    """Refuse a loss the model has too few classes for (:data:`MIN_CLASSES`)."""
    for loss in losses:
        if num_classes < MIN_CLASSES[loss]:
            raise UsageError(f"{attack}: loss {loss} needs at least {MIN_CLASSES[loss]} classes, "
                             f"the model has {num_classes}")


def stages(losses: tuple[str, ...], clean_logits: torch.Tensor, y: torch.Tensor, n_targets: int
           ) -> list[tuple[str, torch.Tensor | None]]:
    """The runs of an APGD attack in order: one per loss, and one per target of ``dlr-targeted`` — the
    ``n_targets`` wrong classes of highest clean logit, most likely first."""
    ranked_wrong = clean_logits.scatter(1, y[:, None], float("-inf")).argsort(dim=1, descending=True)
    runs: list[tuple[str, torch.Tensor | None]] = []
    for loss in losses:
        if loss == "dlr-targeted":
            runs += [(loss, ranked_wrong[:, k]) for k in range(min(n_targets, clean_logits.shape[1] - 1))]
        else:
            runs.append((loss, None))
    return runs


def search(forward: Forward, project: Projection, norm: Norm, radius: float, start: torch.Tensor,
           y: torch.Tensor, loss: str, target: torch.Tensor | None, steps: int, rho: float = 0.75,
           momentum: float = 0.75) -> tuple[torch.Tensor, torch.Tensor]:
    """One run of Algorithm 1 from ``start`` over the points ``project`` keeps, with steepest-ascent steps for
    ``norm`` starting at 2 × ``radius`` (the feasible set's radius).

    The points are images for :class:`APGD`, and the latent variables of a parametric attack for
    :func:`midbench.attacks.parametric.latent_apgd`: ``forward`` maps them to logits.

    Returns:
        (misclassified, points): per example, whether a misclassified point was found and the first one
        found, or else the point of highest loss.
    """
    alpha = momentum
    n = start.shape[0]
    points = start.clone()
    found = torch.zeros(n, dtype=torch.bool, device=start.device)
    marks = checkpoints(steps)
    windows = {w: w - previous for previous, w in zip(marks, marks[1:], strict=False)}

    every = torch.arange(n, device=start.device)
    value, logits, gradient = loss_and_gradient(forward, start, every, y, loss, target, need_gradient=True)
    assert gradient is not None
    # The state of the examples still attacked; rows leave together as soon as they are misclassified.
    state: dict[str, torch.Tensor] = {
        "rows": every, "y": y, "x": start, "x_prev": start,
        "value": value, "gradient": gradient, "best_x": start, "best_value": value, "best_gradient": gradient,
        "step": torch.full((n,), 2 * radius, dtype=start.dtype, device=start.device),
        "best_at_check": value, "halved_at_check": torch.zeros(n, dtype=torch.bool, device=start.device),
        "rises": torch.zeros(n, dtype=torch.long, device=start.device)}
    if target is not None:
        state["target"] = target
    state = retire(state, logits, points, found)

    for k in range(steps):
        if state["rows"].numel() == 0:
            break
        s = state
        here = s["x"]
        z = project(here + per_row(s["step"], here) * steepest_step(s["gradient"], norm), s["rows"])
        if k == 0:
            new = z
        else:  # momentum: a step towards z plus a share of the previous displacement
            new = project(here + alpha * (z - here) + (1 - alpha) * (here - s["x_prev"]), s["rows"])
        last = k == steps - 1  # the final point is only scored: its gradient would never be used
        value, logits, gradient = loss_and_gradient(forward, new, s["rows"], s["y"], loss, s.get("target"),
                                                    need_gradient=not last)
        if gradient is None:
            gradient = s["gradient"]
        rose = value > s["value"]
        better = value > s["best_value"]
        s["best_x"] = torch.where(per_row(better, new), new, s["best_x"])
        s["best_gradient"] = torch.where(per_row(better, new), gradient, s["best_gradient"])
        s["best_value"] = torch.where(better, value, s["best_value"])
        s["x_prev"], s["x"], s["value"], s["gradient"] = here, new, value, gradient
        if k == 0:
            # w_0 = 0: f_max starts as max(f(x⁽⁰⁾), f(x⁽¹⁾)); the comparison f(x⁽¹⁾) > f(x⁽⁰⁾) opens the window
            s["best_at_check"] = s["best_value"]
            s["rises"] = rose.long()
        elif k in windows:
            # s["rises"] counts the rises f(x⁽ⁱ⁺¹⁾) > f(x⁽ⁱ⁾) for i = w_{j−1}, …, w_j − 1
            stalled = s["rises"].to(start.dtype) < rho * windows[k]
            unimproved = ~s["halved_at_check"] & (s["best_value"] <= s["best_at_check"])
            halve = stalled | unimproved
            s["step"] = torch.where(halve, s["step"] / 2, s["step"])
            # restart from the best point, with its gradient and loss (no extra pass)
            s["x"] = torch.where(per_row(halve, new), s["best_x"], s["x"])
            s["gradient"] = torch.where(per_row(halve, new), s["best_gradient"], s["gradient"])
            s["value"] = torch.where(halve, s["best_value"], s["value"])
            s["halved_at_check"] = halve
            s["best_at_check"] = s["best_value"]
            s["rises"] = rose.long()  # i = w_j opens the next window
        else:
            s["rises"] = s["rises"] + rose.long()
        state = retire(s, logits, points, found, new)
    points[state["rows"]] = state["best_x"]
    return found, points


def retire(state: dict[str, torch.Tensor], logits: torch.Tensor, points: torch.Tensor, found: torch.Tensor,
           scored: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Record the examples misclassified at the point just scored and drop them from ``state``."""
    wrong = logits.argmax(dim=1) != state["y"]
    if not bool(wrong.any()):
        return state
    rows = state["rows"][wrong]
    points[rows] = (state["x"] if scored is None else scored)[wrong]
    found[rows] = True
    return {name: value[~wrong] for name, value in state.items()}


#: one run of a search on some examples of the attacked batch: (rows, start, y, loss, target) → (misclassified,
#: points), ``rows`` indexing the batch and the other tensors holding those rows' own values
Run = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, str, torch.Tensor | None],
               tuple[torch.Tensor, torch.Tensor]]


def restricted(forward: Forward, project: Projection, active: torch.Tensor) -> tuple[Forward, Projection]:
    """``forward`` and ``project`` for a search on the examples ``active`` of the batch, whose rows index them."""
    def forward_active(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return forward(points, active[rows])

    def project_active(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return project(points, active[rows])

    return forward_active, project_active


def attack(run: Run, random_start: Callable[[], torch.Tensor], clean: torch.Tensor, y: torch.Tensor,
           clean_logits: torch.Tensor, losses: tuple[str, ...], n_targets: int, restarts: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Every run of an APGD attack (:func:`stages` × ``restarts``), each only on the examples not yet
    misclassified, from a fresh ``random_start()`` (drawn for the whole batch); ``run`` is one search
    (:func:`search`, or :func:`midbench.attacks.apgd_l1.search`).

    Returns:
        (misclassified, points): a clean misclassification keeps ``clean``, its own first misclassified point.
    """
    check_losses(losses, clean_logits.shape[1])
    points = clean.clone()
    fooled = clean_logits.argmax(dim=1) != y
    for loss, target in stages(losses, clean_logits, y, n_targets):
        for _ in range(restarts):
            if bool(fooled.all()):
                return fooled, points
            # drawn for every row: per-example generators need one row per example, and an example's draws
            # must not depend on which others are still being attacked
            start = random_start()
            active = (~fooled).nonzero().squeeze(1)
            found, run_points = run(active, start[active], y[active], loss,
                                    None if target is None else target[active])
            points[active] = run_points
            fooled[active] = found
    return fooled, points


class APGD(Attack):
    """Auto-PGD (Croce & Hein 2020, Algorithm 1), untargeted, in L∞ or L2.

    Cost per example, at most: 1 forward pass (clean logits) plus, for each restart of each stage (a loss, or
    a target of ``dlr-targeted``), ``steps + 1`` forward and ``steps`` backward passes; an example stops costing
    anything once misclassified.

    Args:
        steps: iterations N per run (≥ 1).
        restarts: random restarts per stage, each only on the examples still correctly classified (≥ 1).
        losses: the losses run in sequence, from ``ce``, ``margin``, ``dlr``, ``dlr-targeted`` (a list or a
            comma-separated string).
        n_targets: target classes of ``dlr-targeted``: the most likely wrong classes of the clean input, in order
            (capped at the number of wrong classes).
        rho: condition 1's fraction of steps that must raise the loss between checkpoints.
        momentum: α, the weight of the new gradient step against the previous displacement.
    """

    def __init__(self, eps: float, norm: Norm, steps: int = 100, restarts: int = 1,
                 losses: str | Sequence[str] = ("ce", "dlr-targeted"), n_targets: int = 3, rho: float = 0.75,
                 momentum: float = 0.75) -> None:
        super().__init__(eps, norm)
        if norm not in (Norm.LINF, Norm.L2):
            raise UsageError(f"APGD is implemented for Linf and L2, not {norm.value if norm else norm}; for L1 use "
                             "APGDL1 (registry entry apgd-l1)")
        require_at_least("APGD", {"steps": (steps, 1), "restarts": (restarts, 1), "n_targets": (n_targets, 1),
                                  "rho": (rho, 0), "momentum": (momentum, 0)})
        if momentum > 1:
            raise UsageError(f"APGD: momentum must be at most 1, got {momentum}")
        self.steps = int(steps)
        self.restarts = int(restarts)
        self.losses = parse_losses(losses)
        self.n_targets = int(n_targets)
        self.rho = float(rho)
        self.momentum = float(momentum)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert self.norm is not None
        norm, eps = self.norm, self.eps
        with torch.no_grad():
            logits = model(x)

        def forward(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return model(points)

        def within(points: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return project(points, x[rows], eps, norm)

        def run(active: torch.Tensor, start: torch.Tensor, labels: torch.Tensor, loss: str,
                target: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
            return search(*restricted(forward, within, active), norm, eps, start, labels, loss, target, self.steps,
                          self.rho, self.momentum)

        _, x_adv = attack(run, lambda: self._random_start(x), x, y, logits, self.losses, self.n_targets,
                          self.restarts)
        return x_adv

    def _random_start(self, x: torch.Tensor) -> torch.Tensor:
        """Uniform in the L∞ box, or on the L2 sphere of radius ε, then clipped to [0, 1]."""
        if self.norm is Norm.LINF:
            delta = randomness.uniform_like(x, -self.eps, self.eps)
        else:
            direction = randomness.randn_like(x)
            delta = direction / per_row(distance(direction, Norm.L2).clamp_min(1e-12), x) * self.eps
        return (x + delta).clamp(0.0, 1.0)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.steps, "restarts": self.restarts, "losses": list(self.losses),
                "n_targets": self.n_targets, "rho": self.rho, "momentum": self.momentum}
