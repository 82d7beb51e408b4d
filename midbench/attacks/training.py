"""The attacks a training run trains against, resolved from its config: a registry entry at the dataset's ε
with the run's ``--eps``/``--attack-steps``/``--attack-step-size`` overrides. Shared by every adversarial
training method (:mod:`midbench.defenses`) and MID's Attacker Pool (:mod:`midbench.mid.pool`), and recorded in
the checkpoint, where evaluation reads it back to tell known from unknown attacks.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from midbench.attacks.specs import AttackRegistry, ResolvedAttack, load_registry
from midbench.budgets import parse_eps
from midbench.config import TrainConfig
from midbench.data.datasets import DatasetSpec
from midbench.errors import UsageError


def training_registry(config: TrainConfig) -> AttackRegistry:
    """The shipped attack registry plus the run's ``registry_dirs`` (one-line UsageError for a bad folder)."""
    dirs = [Path(part.strip()) for part in (config.registry_dirs or "").split(",") if part.strip()]
    return load_registry(dirs)


def resolve_training_attack(config: TrainConfig, dataset: DatasetSpec, attack_id: str | None = None,
                            steps_optional: bool = False, registry: AttackRegistry | None = None,
                            scale: float = 1.0) -> ResolvedAttack:
    """A training attack of ``config`` (``attack_id``, default ``config.train_attack``): its registry entry at
    the dataset's ε, with the config's ``eps``/``attack_steps``/``attack_step_size`` overrides.

    ``steps_optional`` (for MID's pool) leaves attacks without steps as they are instead of refusing.
    ``registry``: the run's :func:`training_registry`, when the caller already loaded it for several attacks.
    ``scale`` (an ε warm-up's fraction, :meth:`TrainConfig.attack_scale`) multiplies the budget: ε and the
    entry's other budget parameters, and the step size with them (relative step sizes follow ε; an explicit
    ``attack_step_size`` is scaled too), as a ladder's strength does in the profile.
    An overridden attack no longer equals the registry entry, so it is recorded as version 0 ("custom").
    """
    spec = (registry or training_registry(config)).get(attack_id or config.train_attack)
    eps_override = parse_eps(config.eps, spec.norm.value if spec.norm else "Linf") if config.eps is not None else None
    if scale != 1.0:
        if eps_override is None:
            eps_override = dataset.eps.get(spec.norm.value, 0.0) if spec.norm else dataset.eps.get("Linf", 0.0)
        eps_override *= scale
    attack = spec.resolve(dataset.eps, eps_override)
    params = {name: value * scale if name in spec.budget and name != "eps" else value
              for name, value in attack.params.items()}
    if config.attack_steps is not None and not (steps_optional and "steps" not in params):
        if "steps" not in params:
            raise UsageError(f"--attack-steps does not apply to {spec.id}, which has no steps")
        params["steps"] = config.attack_steps
        if config.attack_step_size is None and "step_size" in params:
            params["step_size"] = 2.5 * attack.eps / config.attack_steps  # Madry et al.'s 2.5ε/K rule
    if config.attack_step_size is not None and not (steps_optional and "step_size" not in params):
        params["step_size"] = float(config.attack_step_size) * scale
    if params != attack.params or scale != 1.0:
        attack = replace(attack, params=params, version=0)
    return attack
