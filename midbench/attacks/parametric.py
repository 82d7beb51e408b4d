"""Projected sign-gradient ascent on the parameters of an image transformation, not on the pixels.

The unforeseen attacks of Kang et al., "Testing Robustness Against Unforeseen Adversaries" (2019) share one
optimiser: a variable ``v`` (JPEG coefficient changes, an elastic flow field) with an L∞ bound, an image
``render(v)`` made from it, and PGD on the cross-entropy of that image (Madry et al. 2018: sign steps, projection
onto the bound after each step, a uniformly random start inside it). Here that loop is written once.

Per example the result is the first iterate that fools the model (an evaluation counts an example broken as soon
as any iterate breaks it, so later iterates that drift back across the boundary must not undo it), else the last
iterate. Examples are independent: the loss is summed, the step is element-wise, and the random start is drawn
through :mod:`midbench.attacks.randomness`, so an example's attack does not depend on its batch.

**Restarts.** One run of sign-PGD on the cross-entropy is not the strongest attack at its budget: further random
starts, and the margin loss of Carlini & Wagner (2017) in place of the cross-entropy (whose gradient vanishes on
confidently classified examples), break more examples — the diversity AutoAttack relies on (Croce & Hein 2020).
With ``restarts`` > 1 the loop runs again from a new random start while an example is still unbroken, restart
``r`` maximising ``losses[r % len(losses)]``; a broken example keeps its first fooling iterate. An attack whose
corruption has random structure (snow's flake positions, kaleidoscope's shapes) passes ``redraw``, and each run
after the first draws new structure too: the structure is part of what the attacker searches over, and a single
draw left most of the gap that more effort closed (docs/unforeseen.md).

**APGD on the variables.** Even with restarts, sign-PGD with a fixed step converges slowly on these variables:
on an L2-trained LeNet of ``mnist5k``, one run of 80 steps breaks as many examples as the union of eight runs of
20 (docs/performance.md, P14). With ``optimizer = "apgd"`` the variables are optimised instead by Auto-PGD
(Croce & Hein 2020, :mod:`midbench.attacks.apgd`): momentum, a step that starts at twice the bound and is halved
where the loss stalls, returning to the best point, and its loss schedule (cross-entropy, margin, DLR, targeted
DLR on the most likely wrong classes), each run only on the examples still unbroken. The search is the one
:class:`~midbench.attacks.apgd.APGD` runs on pixels, with the bound's box as the feasible set.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from midbench.attacks import apgd, randomness
from midbench.attacks.norms import Norm


@dataclass
class ParametricResult:
    """The images an attack returns, the variables that made them, and whether each fooled the model."""

    images: torch.Tensor
    variables: torch.Tensor
    success: torch.Tensor


#: the losses a restart may maximise (module docstring)
LOSSES = ("ce", "margin")
#: how the variables are optimised: Kang et al.'s sign-PGD (:func:`signed_pgd`) or Auto-PGD (:func:`latent_apgd`)
OPTIMIZERS = ("pgd", "apgd")
#: (variables, rows) → the images of those examples of the batch (rows index the batch; a render may close over
#: per-example data such as the clean images)
Render = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: step-size schedules: ``constant``, or ``cosine`` (from the step size down to 0 over the run, so the last steps
#: refine instead of bouncing across the optimum by a fixed sign step)
SCHEDULES = ("constant", "cosine")


def step_sizes(step_size: float, steps: int, schedule: str) -> list[float]:
    """The step of each iteration under ``schedule`` (:data:`SCHEDULES`)."""
    if schedule == "constant":
        return [step_size] * steps
    return [step_size * 0.5 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)]


def check_restarts(restarts: int, losses: str | tuple[str, ...] | list[str], schedule: str, attack: str,
                   optimizer: str = "pgd", targeted: bool = False) -> tuple[int, tuple[str, ...], str]:
    """The restart options of a parametric attack, checked: ``restarts`` ≥ 1, ``optimizer`` one of
    :data:`OPTIMIZERS`, ``losses`` known to it (:data:`LOSSES` for ``pgd``, :data:`midbench.attacks.apgd.LOSSES`
    for ``apgd``; a comma-separated string is accepted, as the registry may give) and ``schedule`` one of
    :data:`SCHEDULES` (``constant`` under ``apgd``, which sets its own steps). ``apgd`` is untargeted."""
    from midbench.errors import UsageError

    if optimizer not in OPTIMIZERS:
        raise UsageError(f"{attack}: optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    known = apgd.LOSSES if optimizer == "apgd" else LOSSES
    names = tuple(part.strip() for part in losses.split(",")) if isinstance(losses, str) else tuple(losses)
    if not names or any(name not in known for name in names):
        raise UsageError(f"{attack}: losses must name some of {', '.join(known)} under optimizer {optimizer}, "
                         f"got {losses!r}")
    if schedule not in SCHEDULES:
        raise UsageError(f"{attack}: schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
    if optimizer == "apgd" and schedule != "constant":
        raise UsageError(f"{attack}: optimizer apgd sets its own step sizes; leave schedule at constant")
    if optimizer == "apgd" and targeted:
        raise UsageError(f"{attack}: optimizer apgd is untargeted; use optimizer pgd with a target")
    if isinstance(restarts, bool) or int(restarts) < 1:
        raise UsageError(f"{attack}: restarts must be at least 1, got {restarts!r}")
    return int(restarts), names, schedule


def attack_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str, targeted: bool) -> torch.Tensor:
    """The summed loss a step ascends: the cross-entropy, or the margin max_{j≠y} z_j − z_y (Carlini & Wagner
    2017); targeted, the negative cross-entropy of the target, or the margin z_t − max_{j≠t} z_j."""
    if loss == "ce":
        value = functional.cross_entropy(logits, labels, reduction="sum")
        return -value if targeted else value
    own = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(functional.one_hot(labels, logits.shape[1]).bool(), float("-inf")).amax(dim=1)
    return (own - others).sum() if targeted else (others - own).sum()


def signed_pgd(model: nn.Module, render: Render, shape: tuple[int, ...],
               labels: torch.Tensor, targeted: bool, bound: float, steps: int, step_size: float,
               random_start: bool, like: torch.Tensor, restarts: int = 1,
               losses: tuple[str, ...] = ("ce",), schedule: str = "constant",
               redraw: Callable[[], Render] | None = None) -> ParametricResult:
    """Maximise the cross-entropy of ``render(v)`` (targeted: minimise that of ``labels``) over ``‖v‖∞ ≤ bound``;
    with ``restarts`` > 1, again from new random starts while some example is unbroken, restart ``r`` on
    ``losses[r % len(losses)]`` (module docstring).

    Args:
        render: the variables (``shape``, first dimension the batch) of some rows of the batch to their images
            in [0, 1].
        like: a tensor whose dtype and device the variables take.
        redraw: if given, every restart after the first renders with ``redraw()``, a new draw of the attack's
            random structure (module docstring).

    Cost per example: per restart run, ``steps`` forward and backward passes plus one forward for the final
    iterate; a restart runs on the whole batch (``render`` may tie the examples to their batch), and not at all
    once every example is broken — so ``restarts × (steps + 1)`` forward passes at most.
    """
    n = shape[0]
    every = torch.arange(n, device=like.device)
    best_images: torch.Tensor | None = None
    best_variables = torch.zeros(shape, dtype=like.dtype, device=like.device)
    fooled = torch.zeros(n, dtype=torch.bool, device=like.device)

    def keep(candidate: torch.Tensor, images: torch.Tensor, logits: torch.Tensor) -> None:
        nonlocal best_images
        predicted = logits.argmax(dim=1)
        success = predicted == labels if targeted else predicted != labels
        replace = ~fooled  # an example keeps its first fooling iterate; the others follow the latest
        if best_images is None:
            best_images = images.detach().clone()
        best_images[replace] = images.detach()[replace]
        best_variables[replace] = candidate.detach()[replace]
        fooled.logical_or_(success)

    for restart in range(max(1, restarts)):
        if restart and bool(fooled.all()):
            break
        loss_name = losses[restart % len(losses)]
        if restart and redraw is not None:
            render = redraw()
        variables = torch.zeros(shape, dtype=like.dtype, device=like.device)
        if random_start and bound > 0:
            variables = randomness.uniform_like(variables, -bound, bound)
        for size in step_sizes(step_size, steps, schedule):
            current = variables.detach().requires_grad_(True)
            images = render(current, every)
            logits = model(images)
            keep(current, images, logits.detach())
            loss = attack_loss(logits, labels, loss_name, targeted)
            (gradient,) = torch.autograd.grad(loss, current)
            with torch.no_grad():
                variables = (variables + size * gradient.sign()).clamp(-bound, bound)
        with torch.no_grad():
            images = render(variables, every)
            keep(variables, images, model(images))
    assert best_images is not None
    return ParametricResult(best_images, best_variables, fooled)


def latent_apgd(model: nn.Module, render: Render, shape: tuple[int, ...], labels: torch.Tensor, bound: float,
                steps: int, random_start: bool, like: torch.Tensor, restarts: int = 1,
                losses: tuple[str, ...] = ("ce",), n_targets: int = 3,
                redraw: Callable[[], Render] | None = None) -> ParametricResult:
    """Maximise each loss of ``losses`` in turn over ``‖v‖∞ ≤ bound`` by Auto-PGD on the variables (module
    docstring), ``restarts`` runs per loss (and per target of ``dlr-targeted``), untargeted; with ``redraw``,
    every run after the first renders with a new draw of the random structure.

    Cost per example: one forward pass at v = 0 (the clean logits APGD's targets need), then per run at most
    ``steps + 1`` forward and ``steps`` backward passes; an example costs nothing more once broken.
    """
    every = torch.arange(shape[0], device=like.device)
    zero = torch.zeros(shape, dtype=like.dtype, device=like.device)
    with torch.no_grad():
        images = render(zero, every)  # the clean images: every render is the identity at 0
        clean_logits = model(images)
    current = [render]  # the structure of the run in progress
    runs = [0]

    def forward(variables: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return model(current[0](variables, rows))

    def inside(variables: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return variables.clamp(-bound, bound)

    def start() -> torch.Tensor:  # called once before every run, drawing for every row (apgd.attack)
        if runs[0] and redraw is not None:
            current[0] = redraw()
        runs[0] += 1
        return randomness.uniform_like(zero, -bound, bound) if random_start and bound > 0 else zero.clone()

    def run(active: torch.Tensor, begin: torch.Tensor, y: torch.Tensor, loss: str, target: torch.Tensor | None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        found, points = apgd.search(*apgd.restricted(forward, inside, active), Norm.LINF, bound, begin, y, loss,
                                    target, steps, rho=0.75, momentum=0.75)
        with torch.no_grad():  # rendered now, with this run's structure (a later run may draw another)
            images[active] = current[0](points, active)
        return found, points

    fooled, variables = apgd.attack(run, start, zero, labels, clean_logits, losses, n_targets, restarts)
    return ParametricResult(images, variables, fooled)


def optimise(model: nn.Module, render: Render, shape: tuple[int, ...], labels: torch.Tensor, targeted: bool,
             bound: float, steps: int, step_size: float, random_start: bool, like: torch.Tensor, restarts: int,
             losses: tuple[str, ...], schedule: str, optimizer: str, n_targets: int,
             redraw: Callable[[], Render] | None = None) -> ParametricResult:
    """The variables of a parametric attack optimised by ``optimizer`` (:data:`OPTIMIZERS`; ``step_size`` and
    ``schedule`` are sign-PGD's, ``n_targets`` APGD's; ``redraw`` draws new random structure for each run after
    the first)."""
    if optimizer == "apgd":
        return latent_apgd(model, render, shape, labels, bound, steps, random_start, like, restarts, losses,
                           n_targets, redraw=redraw)
    return signed_pgd(model, render, shape, labels, targeted, bound, steps, step_size, random_start, like,
                      restarts=restarts, losses=losses, schedule=schedule, redraw=redraw)
