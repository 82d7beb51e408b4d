"""The attack contract every attack in midbench follows (docs/architecture.md, "The attack contract").

``Attack.__call__(model, x, y) -> x_adv`` is final. It validates the inputs, puts the model in eval mode and
freezes its parameters for the duration, calls the subclass's :meth:`Attack.run`, then projects the result onto
the ε-ball and [0, 1]: the framework, not each attack, guarantees the threat model. Attacks differentiate with
``torch.autograd.grad`` on the input only, so no parameter gradient is ever left behind.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar, final

import torch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.norms import Norm, distance, project
from midbench.errors import UsageError
from midbench.models.modes import evaluating
from midbench.runtime.distributed import SINGLE, Shard

TARGET_POLICIES = ("random", "least-likely")
#: relative slack of the ε-ball check on attack outputs (float rounding of norms computed by other code)
BALL_TOLERANCE = 1e-6


def check_target_policy(policy: str) -> str:
    """Validate a target policy: ``random``, ``least-likely`` or ``fixed:K``."""
    if policy in TARGET_POLICIES:
        return policy
    if policy.startswith("fixed:") and policy[6:].isdigit():
        return policy
    raise UsageError(f"unknown target policy {policy!r}; use random, least-likely or fixed:K")


def require_at_least(owner: str, minimums: dict[str, tuple[float, float]]) -> None:
    """Refuse hyper-parameters below their minimum: ``{"steps": (steps, 1), "step size": (step_size, 0)}``.

    One check shared by every attack, so registry entries and CLI options get the same one-line usage error.
    """
    for name, (value, minimum) in minimums.items():
        if value < minimum:
            raise UsageError(f"{owner}: {name} must be at least {minimum:g}, got {value}")


@contextlib.contextmanager
def frozen_eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and ``requires_grad=False`` on every parameter inside the block; both restored after, module by
    module (:func:`midbench.models.modes.evaluating`)."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    with evaluating(model):
        for parameter, _ in flags:
            parameter.requires_grad_(False)
        try:
            yield
        finally:
            for parameter, flag in flags:
                parameter.requires_grad_(flag)


class Attack:
    """Base class of all attacks.

    Args:
        eps: radius of the threat model in ``norm`` (inputs in [0, 1]).
        norm: the bounding norm, or ``None`` for attacks bounded otherwise (their subclass clips itself).
        target: ``None`` for an untargeted attack, else a target policy (``random``, ``least-likely``,
            ``fixed:K``).

    Subclasses implement :meth:`run` and may set ``handles_batching = True`` when they must see every
    example at once and batch internally (AutoAttack does, so its batches match the reference code's); such an
    attack is called on every rank under torchrun and must run only the batches :attr:`shard` owns, merging what
    later batches depend on (:mod:`midbench.runtime.distributed`).
    """

    handles_batching: ClassVar[bool] = False
    #: this process's share of the batches under torchrun, for attacks that batch internally (set by the engine)
    shard: Shard = SINGLE
    #: whether the attack follows the model's input gradient (PGD, C&W…) rather than only querying it (Square,
    #: random noise): the sanity checks compare the query attacks with the gradient ones (Carlini et al. 2019)
    uses_gradients: ClassVar[bool] = True

    @classmethod
    def gradient_based(cls, preset: dict[str, Any]) -> bool:
        """Whether the attack built from ``preset`` (the implementation target's fixed arguments, e.g. an
        AutoAttack component) uses the model's gradients; adapters of several attacks override this."""
        return cls.uses_gradients

    def __init__(self, eps: float, norm: Norm | None, target: str | None = None) -> None:
        if eps < 0:
            raise UsageError(f"ε must be non-negative, got {eps}")
        self.eps = float(eps)
        self.norm = norm
        self.target = check_target_policy(target) if target is not None else None

    @property
    def targeted(self) -> bool:
        return self.target is not None

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Return adversarial examples for ``x`` with labels ``y`` against ``model``.

        Raises:
            UsageError: ``x`` is not a float tensor in [0, 1] or ``y`` holds negative labels.
        """
        _validate_inputs(x, y)
        x = x.detach()
        with frozen_eval_mode(model), torch.enable_grad():
            x_adv = self.run(_DetachedAsZeroGradient(model), x, y)
        x_adv = x_adv.detach()
        if self.norm is not None:
            # Leave outputs already inside the ball bit-for-bit unchanged: recomputing x + (x_adv - x) moves
            # floats by an ulp, which can flip a point FAB or C&W placed right at the decision boundary (and
            # would break equality with the reference AutoAttack).
            inside = distance(x_adv - x, self.norm) <= self.eps * (1 + BALL_TOLERANCE)
            projected = project(x_adv, x, self.eps, self.norm)
            x_adv = torch.where(inside.view(-1, *([1] * (x.dim() - 1))), x_adv, projected)
        return x_adv.clamp_(0.0, 1.0)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Craft the adversarial examples; the model is in eval mode with frozen parameters."""
        raise NotImplementedError

    def choose_targets(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Target labels under this attack's policy (``random`` draws from :mod:`midbench.attacks.randomness`)."""
        assert self.target is not None
        with torch.no_grad():
            logits = model(x)
        num_classes = logits.shape[1]
        if self.target == "random":
            offset = randomness.randint_per_example(1, num_classes, y)
            return (y + offset) % num_classes
        if self.target == "least-likely":
            return logits.argmin(dim=1)
        target_class = int(self.target.split(":")[1])
        if target_class >= num_classes:
            raise UsageError(f"target policy {self.target}: the model has only {num_classes} classes")
        return torch.full_like(y, target_class)

    def describe(self) -> dict[str, Any]:
        """Hyper-parameters for result files."""
        return {"eps": self.eps, "norm": self.norm.value if self.norm else None, "target": self.target}


class _DetachedAsZeroGradient(nn.Module):
    """Passes the model's output through, except that an output cut from the graph (a forward under
    ``torch.no_grad``, ``.detach()``, a round trip through numpy) is tied back to the input with a zero gradient.

    Such a model gives a gradient attack nothing to follow, exactly like a quantising layer: the attack then runs
    and fails honestly (the ``zero-gradients`` sanity flag says why, and Square still attacks it), instead of
    crashing in ``autograd.grad`` with an internal error.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # adapters that look at the mode see the model's (eval inside an attack)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(x)
        if torch.is_grad_enabled() and x.requires_grad and not output.requires_grad:
            output = output + 0.0 * x.flatten(1).sum(1).view(-1, *([1] * (output.dim() - 1)))
        return output


def _validate_inputs(x: torch.Tensor, y: torch.Tensor) -> None:
    if not torch.is_floating_point(x):
        raise UsageError(f"attack inputs must be float images in [0, 1], got {x.dtype}; "
                         "normalisation belongs inside the model")
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise UsageError("attack inputs must lie in [0, 1] (got values outside it); "
                         "normalisation belongs inside the model")
    if y.shape[0] != x.shape[0] or (y.numel() and int(y.min()) < 0):
        raise UsageError("labels must be one non-negative class index per input")
