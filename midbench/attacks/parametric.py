"""Projected sign-gradient ascent on the parameters of an image transformation, not on the pixels.

The unforeseen attacks of Kang et al., "Testing Robustness Against Unforeseen Adversaries" (2019) share one
optimiser: a variable ``v`` (JPEG coefficient changes, an elastic flow field) with an L∞ bound, an image
``render(v)`` made from it, and PGD on the cross-entropy of that image (Madry et al. 2018: sign steps, projection
onto the bound after each step, a uniformly random start inside it). Here that loop is written once.

Per example the result is the first iterate that fools the model (an evaluation counts an example broken as soon
as any iterate breaks it, so later iterates that drift back across the boundary must not undo it), else the last
iterate. Examples are independent: the loss is summed, the step is element-wise, and the random start is drawn
through :mod:`midbench.attacks.randomness`, so an example's attack does not depend on its batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional

from midbench.attacks import randomness


@dataclass
class ParametricResult:
    """The images an attack returns, the variables that made them, and whether each fooled the model."""

    images: torch.Tensor
    variables: torch.Tensor
    success: torch.Tensor


def signed_pgd(model: nn.Module, render: Callable[[torch.Tensor], torch.Tensor], shape: tuple[int, ...],
               labels: torch.Tensor, targeted: bool, bound: float, steps: int, step_size: float,
               random_start: bool, like: torch.Tensor) -> ParametricResult:
    """Maximise the cross-entropy of ``render(v)`` (targeted: minimise that of ``labels``) over ``‖v‖∞ ≤ bound``.

    Args:
        render: the variables (``shape``, first dimension the batch) to images in [0, 1].
        like: a tensor whose dtype and device the variables take.

    Cost per example: ``steps`` forward and backward passes, plus one forward for the final iterate.
    """
    variables = torch.zeros(shape, dtype=like.dtype, device=like.device)
    if random_start and bound > 0:
        variables = randomness.uniform_like(variables, -bound, bound)
    n = shape[0]
    best_images: torch.Tensor | None = None
    best_variables = variables.clone()
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

    for _ in range(steps):
        current = variables.detach().requires_grad_(True)
        images = render(current)
        logits = model(images)
        keep(current, images, logits.detach())
        loss = functional.cross_entropy(logits, labels, reduction="sum")
        (gradient,) = torch.autograd.grad(-loss if targeted else loss, current)
        with torch.no_grad():
            variables = (variables + step_size * gradient.sign()).clamp(-bound, bound)
    with torch.no_grad():
        images = render(variables)
        keep(variables, images, model(images))
    assert best_images is not None
    return ParametricResult(best_images, best_variables, fooled)
