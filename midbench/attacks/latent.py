"""The common form of the unforeseen attacks: a differentiable corruption x′ = render(x, v) whose latent variables
``v`` are optimised inside a box, not the pixels.

Kang et al., "Testing Robustness Against Unforeseen Adversaries" (2019) and its ImageNet-UA version (Kaufmann et
al. 2023) write every non-Lp threat model this way: fog is the random displacements of a fractal noise, snow the
brightness of flakes, a warp the corners of a quadrilateral. The attacker maximises the model's loss over the
latents, with their L∞ bound as the budget, by PGD with sign steps from a random start, or by Auto-PGD
(:mod:`midbench.attacks.parametric`, which both the JPEG and the elastic attacks use too).

Here every latent is normalised to ``[-1, 1]`` and the budget parameters (the registry's ``budget = [..]``, the
quantities a strength of the ladder scales) enter the render as the size of the corruption at ``|v| = 1``. Every
render is the identity at ``v = 0`` and at budget 0, so that a strength near 0 is a near-clean image, and the sets
of corruptions are nested: the corruption allowed at a smaller budget is allowed at every larger one
(``b·v = b′·(b v / b′)`` with ``|b v / b′| ≤ 1``), except for the random structure some attacks draw per example
(flake or shape positions), which, like a random start, is part of the attack's randomness
(:mod:`midbench.attacks.randomness`: the same for an example whatever its batch).

A subclass names its budget parameters (:attr:`LatentAttack.BUDGET`) and its fixed ones (:attr:`LatentAttack.FIXED`,
e.g. a kernel's width, which the ladder does not scale) with their defaults, the latent's shape, and the render. It sets
:attr:`LatentAttack.NEEDS_COLOUR` when the corruption is meaningless on a single-channel image (hue); such an
attack refuses a grey image with a usage error, and the unknown-attack profile skips its threat model on grey
datasets with a note (docs/unforeseen.md).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn

from midbench.attacks.base import Attack, require_at_least
from midbench.attacks.norms import Norm
from midbench.attacks.parametric import Render, check_restarts, optimise
from midbench.errors import UsageError

#: how the latents are optimised, shared by every latent attack, with their defaults (Kang et al.'s PGD-20 of
#: eighth-of-the-bound sign steps from a random start; :func:`midbench.attacks.parametric.optimise`)
OPTIONS: dict[str, Any] = {"steps": 20, "relative_step": 0.125, "random_start": True, "restarts": 1,
                           "losses": "ce", "schedule": "constant", "optimizer": "pgd", "n_targets": 3}


class LatentAttack(Attack):
    """An attack that optimises the latent variables of a corruption (module docstring).

    Args:
        eps: ignored (the registry passes the dataset's L∞ ε to every entry); the budget is the subclass's
            :attr:`BUDGET` parameters.
        norm: must be ``None``.
        target: ``None`` (untargeted) or a target policy.
        params: the subclass's :attr:`BUDGET` and :attr:`FIXED` parameters (numbers ≥ 0) and the optimiser's
            :data:`OPTIONS`: ``steps`` (≥ 1), ``relative_step`` (the sign step as a fraction of the latent bound),
            ``random_start``, ``restarts``, ``losses``, ``schedule``, ``optimizer`` (``pgd`` or ``apgd``) and
            ``n_targets``, as for :class:`midbench.attacks.elastic.ElasticAttack`.

    After a call, ``last_latent`` holds the optimised latents (in ``[-1, 1]``) and ``last_success`` whether each
    example fooled the model.

    Cost per example: ``steps + 1`` forward and ``steps`` backward passes per restart, at most (one more forward
    when targeted); under ``apgd``, per run (``restarts`` per loss, and per target of ``dlr-targeted``), plus one
    clean forward.
    """

    #: the attack's name in messages
    NAME: ClassVar[str] = "latent"
    #: the parameters the ladder scales, with their defaults: the size of the corruption at |v| = 1
    BUDGET: ClassVar[dict[str, float]] = {}
    #: parameters that shape the corruption but are not scaled by the ladder, with their defaults
    FIXED: ClassVar[dict[str, float]] = {}
    #: fixed parameters that must be strictly positive (a kernel's width, a divisor)
    POSITIVE: ClassVar[tuple[str, ...]] = ()
    #: whether the corruption needs a colour (3-channel) image
    NEEDS_COLOUR: ClassVar[bool] = False
    #: whether :meth:`renderer` draws random structure (positions, shapes); if so every restart draws anew
    RANDOM_STRUCTURE: ClassVar[bool] = False

    @classmethod
    def accepted_parameters(cls) -> set[str]:
        """The hyper-parameter names the registry may give (:func:`midbench.attacks.specs.accepted_parameters`)."""
        return set(cls.BUDGET) | set(cls.FIXED) | set(OPTIONS)

    def __init__(self, eps: float = 0.0, norm: Norm | None = None, target: str | None = None,
                 **params: Any) -> None:
        super().__init__(eps, norm, target)
        if norm is not None:
            raise UsageError(f"the {self.NAME} attack is bounded by {', '.join(self.BUDGET)}; give it no norm "
                             f"(got {norm})")
        unknown = set(params) - self.accepted_parameters()
        if unknown:
            raise UsageError(f"the {self.NAME} attack takes no parameter {', '.join(sorted(unknown))}; it takes "
                             f"{', '.join(sorted(self.accepted_parameters()))}")
        values = {**OPTIONS, **self.BUDGET, **self.FIXED, **params}
        for name in (*self.BUDGET, *self.FIXED, "steps", "relative_step", "restarts", "n_targets"):
            if isinstance(values[name], bool) or not isinstance(values[name], int | float):
                raise UsageError(f"the {self.NAME} attack's {name} must be a number, got {values[name]!r}")
        require_at_least(self.NAME, {**{name: (values[name], 0) for name in (*self.BUDGET, *self.FIXED)},
                                     "steps": (values["steps"], 1), "relative_step": (values["relative_step"], 0),
                                     "n_targets": (values["n_targets"], 1)})
        for name in self.POSITIVE:
            if values[name] <= 0:
                raise UsageError(f"the {self.NAME} attack's {name} must be positive, got {values[name]!r}")
        self.restarts, self.losses, self.schedule = check_restarts(
            values["restarts"], values["losses"], values["schedule"], self.NAME, values["optimizer"],
            target is not None)
        self.optimizer = str(values["optimizer"])
        self.steps = int(values["steps"])
        self.relative_step = float(values["relative_step"])
        self.random_start = bool(values["random_start"])
        self.n_targets = int(values["n_targets"])
        self.budget = {name: float(values[name]) for name in self.BUDGET}
        self.fixed = {name: float(values[name]) for name in self.FIXED}
        self.last_latent: torch.Tensor | None = None
        self.last_success: torch.Tensor | None = None

    def latent_shape(self, x: torch.Tensor) -> tuple[int, ...]:
        """The shape of the latents of the batch ``x`` (first dimension the batch)."""
        raise NotImplementedError

    def renderer(self, x: torch.Tensor) -> Render:
        """The corruption of the batch ``x``: (latents in [-1, 1] of some rows, the rows) → their images in
        [0, 1], the identity at latents 0. Random structure is drawn here, per example."""
        raise NotImplementedError

    def check_input(self, x: torch.Tensor) -> None:
        """Refuse images the corruption cannot apply to (a colour corruption on a grey image)."""
        if self.NEEDS_COLOUR and x.shape[1] != 3:
            raise UsageError(f"the {self.NAME} attack needs colour (3-channel) images, got {x.shape[1]} channel(s); "
                             "leave it out on grey datasets")

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        labels = self.choose_targets(model, x, y) if self.targeted else y
        render = self.renderer(x)
        result = optimise(model, render, self.latent_shape(x), labels, self.targeted, 1.0, self.steps,
                          self.relative_step, self.random_start, x, self.restarts, self.losses, self.schedule,
                          self.optimizer, self.n_targets,
                          redraw=(lambda: self.renderer(x)) if self.RANDOM_STRUCTURE else None)
        self.last_latent, self.last_success = result.variables, result.success
        return result.images

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.budget, **self.fixed, "steps": self.steps,
                "relative_step": self.relative_step, "random_start": self.random_start, "restarts": self.restarts,
                "losses": list(self.losses), "schedule": self.schedule, "optimizer": self.optimizer,
                "n_targets": self.n_targets}
