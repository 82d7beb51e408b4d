"""Adversarial training against a union of threat models: ``msd``, ``avg`` and ``max``.

- ``avg`` and ``max``: Tramèr & Boneh, "Adversarial Training and Robustness for Multiple Perturbations",
  NeurIPS 2019. Every threat model's attack crafts its own adversarial examples; ``avg`` minimises the mean of
  their cross-entropies, ``max`` the cross-entropy of each example's worst (highest-loss) one.
- ``msd``: Maini, Wong & Kolter, "Adversarial Robustness Against the Union of Multiple Perturbation Models",
  ICML 2020 (multi steepest descent). One attack over the union: from δ = 0, K times, every threat model takes
  its own steepest-ascent step from the current point (L∞: α·sign(g); L2: α·g/‖g‖₂; L1: SLIDE's sparse
  top-coordinate step, :func:`midbench.attacks.l1.sparse_l1_direction`) and projects onto its own ball and
  [0, 1]; per example the candidate with the highest loss becomes the next point. Training minimises the
  cross-entropy of the final point.

The threat models are registry ids (``--threat-models``, default ``pgd-linf,pgd-l2,pgd-l1``), each at the
dataset's ε for its norm, with ``--attack-steps`` applying to all of them (and their step sizes then following
the 2.5ε/K rule). Every one is recorded as a training attack (for ``msd`` its components, whose balls, steps and
step sizes it uses; MSD takes K = the largest of their step counts).

Cost per training step and example, with T threat models of K_t steps (all K with ``--attack-steps K``):

- ``avg``: Σ K_t + T forwards and Σ K_t + T backwards (each attack, then one forward and backward per threat);
- ``max``: Σ K_t + T + 1 forwards and Σ K_t + 1 backwards (each attack, T gradient-free forwards in eval mode to
  find each example's worst threat, then one forward and backward on the worst examples);
- ``msd``: K·(T + 1) + 1 forwards and K + 1 backwards (per step one forward and backward for the gradient and T
  gradient-free forwards to score the candidates, then the update).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from midbench.attacks.base import frozen_eval_mode
from midbench.attacks.gradient import input_gradient, steepest_step
from midbench.attacks.l1 import sparse_l1_direction
from midbench.attacks.norms import Norm, project
from midbench.attacks.specs import ResolvedAttack
from midbench.attacks.training import resolve_training_attack, training_registry
from midbench.config import TrainConfig
from midbench.data.datasets import DatasetSpec
from midbench.defenses.base import METHODS, DefenseTask
from midbench.defenses.options import option
from midbench.errors import UsageError

PGD_IMPLEMENTATION = "midbench.attacks.gradient:PGD"
SLIDE_IMPLEMENTATION = "midbench.attacks.l1:SparseL1Descent"
CITATION_UNION = ("Tramèr & Boneh, Adversarial Training and Robustness for Multiple Perturbations, NeurIPS 2019")
CITATION_MSD = ("Maini, Wong & Kolter, Adversarial Robustness Against the Union of Multiple Perturbation Models, "
                "ICML 2020")


@dataclass(frozen=True)
class UnionOptions:
    """msd/avg/max's option: the threat models of the union."""

    threat_models: str = option("pgd-linf,pgd-l2,pgd-l1", "msd/avg/max: comma-separated attack ids of the union, "
                                                          "each at the dataset's ε for its norm.")

    def __post_init__(self) -> None:
        if not [name for name in self.threat_models.split(",") if name.strip()]:
            raise UsageError("--threat-models needs at least one attack id, e.g. pgd-linf,pgd-l2,pgd-l1")


def resolve_threat_models(config: TrainConfig, dataset: DatasetSpec, threat_models: str, scale: float = 1.0
                          ) -> list[ResolvedAttack]:
    """The ``threat_models`` entries (``--threat-models``), resolved at the dataset's ε with the config's
    overrides, at ``scale`` of their budgets (an ε warm-up).

    Raises:
        UsageError: an unknown or repeated id, or ``--eps``/``--attack-step-size`` (one number) given for threat
            models of different norms.
    """
    ids = [name.strip() for name in threat_models.split(",") if name.strip()]
    if not ids:
        raise UsageError("--threat-models needs at least one attack id, e.g. pgd-linf,pgd-l2,pgd-l1")
    if len(set(ids)) != len(ids):
        raise UsageError(f"--threat-models names an attack twice: {threat_models}")
    registry = training_registry(config)
    norms = {spec.norm for spec in (registry.get(attack_id) for attack_id in ids)}
    if len(norms) > 1 and (config.eps is not None or config.attack_step_size is not None):
        raise UsageError("--eps and --attack-step-size give one number for all threat models, but they have "
                         "different norms; drop them (each threat model uses the dataset's ε for its norm)")
    return [resolve_training_attack(config, dataset, attack_id, registry=registry, scale=scale) for attack_id in ids]


def per_example_losses(adv_logits: Sequence[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every threat's logits for every example, shape (T, N)."""
    return torch.stack([nn.functional.cross_entropy(logits, y, reduction="none") for logits in adv_logits])


def worst_case(candidates: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """Per example, the candidate with the highest loss (the first one on ties).

    Args:
        candidates: (T, N, ...) one tensor per threat model.
        losses: (T, N).
    """
    index = losses.argmax(dim=0)
    return candidates[index, torch.arange(candidates.shape[1], device=candidates.device)]


def average_loss(adv_logits: Sequence[torch.Tensor], y: torch.Tensor) -> dict[str, torch.Tensor]:
    """``avg``: the mean over threats and examples of the cross-entropy; ``logits`` are each example's
    worst-case ones (for the training accuracy)."""
    losses = per_example_losses(adv_logits, y)
    worst_logits = worst_case(torch.stack(list(adv_logits)), losses.detach())
    return {"loss": losses.mean(), "logits": worst_logits}


@dataclass(frozen=True)
class NormStep:
    """One threat model's steepest-ascent step and projection, as MSD takes it.

    ``sparsity`` (a percentile) selects SLIDE's sparse L1 direction; without it the step is the norm's exact
    steepest-ascent direction (:func:`midbench.attacks.gradient.steepest_step`).
    """

    norm: Norm
    eps: float
    step_size: float
    sparsity: float | None = None

    @classmethod
    def of(cls, attack: ResolvedAttack) -> NormStep:
        """The step of a PGD or SLIDE registry attack, with its ε and step size.

        Raises:
            UsageError: another implementation, a targeted attack, or one without a step size.
        """
        if attack.targeted or attack.norm is None or "step_size" not in attack.params:
            raise UsageError(f"msd combines untargeted Lp steps; threat model {attack.id} is not one")
        if attack.implementation == PGD_IMPLEMENTATION:
            return cls(attack.norm, attack.eps, float(attack.params["step_size"]))
        if attack.implementation == SLIDE_IMPLEMENTATION:
            return cls(attack.norm, attack.eps, float(attack.params["step_size"]),
                       float(attack.params.get("sparsity", 99.0)))
        raise UsageError(f"msd takes PGD or SLIDE (pgd-l1) threat models; {attack.id} is "
                         f"{attack.implementation}")

    def take(self, x_adv: torch.Tensor, x: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
        """``Π_{B(x, ε) ∩ [0,1]}(x_adv + α·v)`` with v the unit steepest-ascent direction of ``gradient``."""
        if self.sparsity is not None:
            direction = sparse_l1_direction(gradient, x_adv, self.sparsity)
        else:
            direction = steepest_step(gradient, self.norm)
        return project(x_adv + self.step_size * direction, x, self.eps, self.norm)


def msd_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: Sequence[NormStep],
                 iterations: int) -> torch.Tensor:
    """Multi steepest descent (Maini et al. 2020): each point of the result lies in one threat model's ball.

    Runs under the attack contract (model in eval mode, parameters frozen, gradients on the input only).
    """
    x = x.detach()
    with frozen_eval_mode(model), torch.enable_grad():
        x_adv = x.clone()
        for _ in range(iterations):
            gradient = input_gradient(model, x_adv, y, targeted=False)
            candidates = torch.stack([step.take(x_adv, x, gradient) for step in steps])
            with torch.no_grad():
                losses = per_example_losses([model(candidate) for candidate in candidates], y)
            x_adv = worst_case(candidates, losses)
    return x_adv.detach()


class _UnionTraining(DefenseTask):
    """Shared by msd/avg/max: the resolved threat models and their attacks."""

    citation = CITATION_UNION
    Options = UnionOptions
    adversarial_training_baseline = True

    def __init__(self, config: TrainConfig, dataset: DatasetSpec) -> None:
        super().__init__(config, dataset)
        self.threat_models = resolve_threat_models(config, dataset, self.options.threat_models)
        self.use_attacks(self.threat_models)

    def use_attacks(self, attacks: list[ResolvedAttack]) -> None:
        """Train against ``attacks`` (the threat models, or them at a warm-up's smaller budgets)."""
        raise NotImplementedError

    def scale_attacks(self, scale: float) -> None:
        self.use_attacks(self.threat_models if scale == 1.0 else
                         resolve_threat_models(self.config, self.dataset, self.options.threat_models, scale))

    @property
    def train_attacks(self) -> list[ResolvedAttack]:
        return list(self.threat_models)

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, "threat_models": [attack.key for attack in self.threat_models]}

    def summary(self) -> str:
        return f"threat models {self.options.threat_models}"


class _PerThreatTraining(_UnionTraining):
    """avg/max: each threat model's attack runs on its own."""

    def use_attacks(self, attacks: list[ResolvedAttack]) -> None:
        self.attacks = [attack.build(seed=self.config.seed, batch_size=self.config.batch_size) for attack in attacks]

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.adversarial_loss(model, x, y, [attack(model, x, y) for attack in self.attacks])

    def adversarial_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: Sequence[torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@METHODS.register("avg")
class AverageTraining(_PerThreatTraining):
    """``avg``: mean cross-entropy over every threat model's adversarial examples (Tramèr & Boneh 2019)."""

    name = "avg"

    def adversarial_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: Sequence[torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        """The loss for given per-threat adversarial examples: one forward each, in the model's current mode."""
        return average_loss([model(examples) for examples in x_adv], y)


@METHODS.register("max")
class MaxTraining(_PerThreatTraining):
    """``max``: per example, cross-entropy of its worst threat model's adversarial example (Tramèr & Boneh 2019)."""

    name = "max"

    def adversarial_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: Sequence[torch.Tensor]
                         ) -> dict[str, torch.Tensor]:
        """The loss for given per-threat adversarial examples: the worst is chosen without gradients in eval mode
        (like the attacks see the model), then one forward and backward on the chosen examples."""
        candidates = torch.stack(list(x_adv))
        with frozen_eval_mode(model), torch.no_grad():
            losses = per_example_losses([model(examples) for examples in candidates], y)
        logits = model(worst_case(candidates, losses))
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits}


@METHODS.register("msd")
class MultiSteepestDescentTraining(_UnionTraining):
    """``msd``: cross-entropy on multi-steepest-descent examples over the union of threat models
    (Maini, Wong & Kolter, ICML 2020)."""

    name = "msd"
    citation = CITATION_MSD

    def use_attacks(self, attacks: list[ResolvedAttack]) -> None:
        self.steps = [NormStep.of(attack) for attack in attacks]
        self.iterations = max(int(attack.params.get("steps", 1)) for attack in attacks)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.adversarial_loss(model, x, y, msd_examples(model, x, y, self.steps, self.iterations))

    def adversarial_loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        """Cross-entropy on the given MSD examples (one forward)."""
        logits = model(x_adv)
        return {"loss": nn.functional.cross_entropy(logits, y), "logits": logits}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "steps": self.iterations}
