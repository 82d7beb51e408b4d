"""The unknown-attack profile's plan: for each threat model of a suite, its ladder on a dataset and the registry's
attacks resolved at every strength (:mod:`midbench.evaluation.profile` climbs it). Also which threat model a
(training) attack belongs to, which decides what a model has *seen*.

Threat models, budgets and ladders themselves are parsed in :mod:`midbench.attacks.threat_models`; the registry
(:mod:`midbench.attacks.specs`) holds them. This module uses both, so neither needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from midbench.attacks.specs import AttackRegistry, AttackSpec, ResolvedAttack, needs_colour
from midbench.attacks.threat_models import ThreatModel
from midbench.errors import UsageError

#: the suite ``midbench eval --unknown-attacks`` climbs (attacks_registry/suites.toml)
PROFILE_SUITE = "unknown-profile"


def at_strength(spec: AttackSpec, dataset_eps: dict[str, float], strength: float) -> ResolvedAttack:
    """``spec`` resolved for the dataset with every budget parameter scaled by ``strength``.

    Scaling ``eps`` resolves the entry at s·ε, so step sizes written relative to ε shrink with it (a PGD at a
    tenth of the budget takes tenth-sized steps, as it would if trained or evaluated at that ε).

    Raises:
        UsageError: the entry declares no budget (it cannot be measured over strengths).
    """
    if not spec.budget:
        raise UsageError(f"attack {spec.id} ({spec.source}) declares no budget parameters, so it cannot be run "
                         "at a ladder's strengths; add budget = [...] to its entry")
    override = None
    if "eps" in spec.budget:
        base = dataset_eps.get(spec.norm.value, 0.0) if spec.norm else 0.0
        override = strength * base
    resolved = spec.resolve(dataset_eps, eps_override=override)
    scaled = {name: value * strength if name in spec.budget else value for name, value in resolved.params.items()}
    return replace(resolved, params=scaled)


def budget_values(spec: AttackSpec, resolved: ResolvedAttack) -> dict[str, float]:
    """The budget of a resolved entry as numbers (for result files)."""
    return {name: float(resolved.eps if name == "eps" else resolved.params[name]) for name in spec.budget}


def threat_model_of(attack: ResolvedAttack, registry: AttackRegistry) -> str | None:
    """The threat model a (training) attack belongs to: its registry entry's, else the one declared for its norm."""
    entry = registry.attacks.get(attack.id)
    if entry is not None and entry.threat_model is not None:
        return entry.threat_model
    if attack.norm is not None:
        for model in registry.threat_models.values():
            if model.norm is attack.norm:
                return model.id
    return None


def seen_threat_models(train_attacks: list[ResolvedAttack], registry: AttackRegistry) -> set[str]:
    """The threat models a checkpoint has *seen*: those of its training attacks (from its metadata)."""
    return {model for model in (threat_model_of(a, registry) for a in train_attacks) if model is not None}


@dataclass(frozen=True)
class ProfileRung:
    """One strength of one threat model: the attacks run at it, resolved."""

    strength: float
    attacks: tuple[ResolvedAttack, ...]
    budgets: tuple[dict[str, float], ...]


@dataclass(frozen=True)
class ThreatModelPlan:
    """A threat model's ladder with the attacks of the profile at every strength."""

    threat_model: ThreatModel
    rungs: tuple[ProfileRung, ...]
    seen: bool


def ladder_of(registry: AttackRegistry, threat_model: ThreatModel, dataset: str | None) -> tuple[float, ...]:
    """The strengths ``threat_model`` is measured at on ``dataset``: its calibrated ladder there, else its default."""
    calibrated = registry.ladders.get((threat_model.id, dataset)) if dataset is not None else None
    return calibrated.strengths if calibrated is not None else threat_model.ladder


def suite_attacks(registry: AttackRegistry, suites: str | Sequence[str]) -> list[AttackSpec]:
    """The entries of one suite or of several in order, each once (a suite name or a sequence of them)."""
    names = [suites] if isinstance(suites, str) else list(suites)
    if not names:
        raise UsageError("the profile needs at least one suite (e.g. unknown-profile)")
    return list({spec.id: spec for name in names for spec in registry.suite(name)}.values())


def colour_only(registry: AttackRegistry, suite: str | Sequence[str] | None = PROFILE_SUITE) -> list[str]:
    """The threat models of ``suite`` (one or several; ``None``: of the whole registry) with an attack that needs
    colour images: the profile leaves them out on grey data (:func:`midbench.attacks.specs.needs_colour`)."""
    specs = suite_attacks(registry, suite) if suite is not None else list(registry.attacks.values())
    return list(dict.fromkeys(spec.threat_model for spec in specs
                              if spec.threat_model is not None and needs_colour(spec.implementation)))


def unsized(registry: AttackRegistry, dataset_eps: dict[str, float],
            suite: str | Sequence[str] = PROFILE_SUITE) -> dict[str, str]:
    """The threat models of ``suite`` with an attack sized by an ε the dataset does not define (ImageNet has no
    L1 ε, a folder dataset only the norms its ``dataset.toml`` names), each with that norm: the profile leaves
    them out, as it leaves out colour threat models on grey data."""
    return {spec.threat_model: spec.norm.value for spec in suite_attacks(registry, suite)
            if spec.threat_model is not None and "eps" in spec.budget and spec.norm is not None
            and spec.norm.value not in dataset_eps}


def profile_plan(registry: AttackRegistry, dataset_eps: dict[str, float], seen: set[str],
                 suite: str | Sequence[str] = PROFILE_SUITE, dataset: str | None = None, only: tuple[str, ...] = (),
                 ladders: dict[str, tuple[float, ...]] | None = None,
                 channels: int | None = None) -> list[ThreatModelPlan]:
    """The nested evaluation plan of ``suite`` (one or several): its attacks grouped by threat model (in the
    suites' order),
    each resolved at every strength of its threat model's ladder on ``dataset`` (:func:`ladder_of`).

    Args:
        only: climb just these threat models (``eval --threat-models``); empty: all of the suite's.
        ladders: strengths that replace the registry's for some threat models (calibration's candidate grid).
        channels: the images' channels; on grey data (not 3) the threat models of :func:`colour_only` are left
            out (the result says so), unless ``only`` names one, which is an error. So are the threat models of
            :func:`unsized`, whose attacks need an ε this dataset does not define.

    Raises:
        UsageError: a suite attack without a threat model or a budget; a threat model in ``only`` that the suite
            does not climb, that needs colour on grey data, or whose norm has no ε on this dataset.
    """
    grey = channels is not None and channels != 3
    colour = set(colour_only(registry, suite)) if grey else set()
    forced = [name for name in only if name in colour]
    if forced:
        raise UsageError(f"threat model(s) {', '.join(forced)} need colour images, and these have {channels} "
                         "channel(s); leave them out of --threat-models")
    no_eps = unsized(registry, dataset_eps, suite)
    forced = [f"{name} ({no_eps[name]})" for name in only if name in no_eps]
    if forced:
        raise UsageError(f"threat model(s) {', '.join(forced)} need an ε this dataset does not define; pass one "
                         "with --eps (e.g. --eps L1=12) or leave them out of --threat-models")
    grouped: dict[str, list[AttackSpec]] = {}
    specs = suite_attacks(registry, suite)
    suite = suite if isinstance(suite, str) else ",".join(suite)  # as messages name it
    for spec in specs:
        if spec.threat_model is None:
            raise UsageError(f"suite {suite!r}: attack {spec.id} belongs to no threat model; add threat_model = "
                             f"\"...\" to its entry ({spec.source})")
        grouped.setdefault(spec.threat_model, []).append(spec)
    missing = [name for name in only if name not in grouped]
    if missing:
        raise UsageError(f"threat model(s) {', '.join(missing)} not climbed by suite {suite!r}; choose among "
                         f"{', '.join(grouped)}")
    plans = []
    for model_id, specs in grouped.items():
        if (only and model_id not in only) or model_id in colour or model_id in no_eps:
            continue
        model = registry.threat_models[model_id]
        rungs = []
        strengths = (ladders or {}).get(model_id) or ladder_of(registry, model, dataset)
        for strength in strengths:
            resolved = [at_strength(spec, dataset_eps, strength) for spec in specs]
            rungs.append(ProfileRung(strength, tuple(resolved),
                                     tuple(budget_values(s, r) for s, r in zip(specs, resolved, strict=True))))
        plans.append(ThreatModelPlan(model, tuple(rungs), model_id in seen))
    return plans
