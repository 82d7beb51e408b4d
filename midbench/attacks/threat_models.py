"""Threat models, their budgets and strength ladders: the data behind the unknown-attack profile.

A *threat model* (L∞, L2, L1, a flow field, rotation/translation, noise, ...) groups registry entries. Each entry
names its *budget*: the parameters that bound the perturbation (``eps`` for Lp entries; ``max_flow``;
``max_angle`` and ``max_shift`` together). A *ladder* is a strictly increasing list of relative strengths in
(0, 1], 1 being the entry's full budget; strength s scales every budget parameter by s (for ``eps``, the dataset's
ε — and the step sizes written relative to it — become s·ε). Budgets are nested: what is allowed at a smaller
strength is allowed at every larger one, which is what lets the evaluation climb a ladder
(:mod:`midbench.evaluation.profile`).

A threat model's ``ladder`` is its default. A calibrated ``[[ladder]]`` (written by ``midbench calibrate``, which
picks the strengths where a model adversarially trained against the threat model meets fixed accuracy targets,
docs/scoring.md) replaces it on the datasets it names.

Measuring each threat model over a range of strengths and normalising by the best accuracy at each strength
follows Kang et al., "Testing Robustness Against Unforeseen Adversaries" (2019, UAR) and Dai et al.,
"MultiRobustBench" (ICML 2023); the accuracy-against-budget curve is Carlini et al., "On Evaluating Adversarial
Robustness" (2019).

Format (``[[threat_model]]`` tables of any registry file; entries refer to them by ``threat_model = "ID"``)::

    [[threat_model]]
    id = "linf"
    description = "L∞-bounded additive perturbations"
    norm = "Linf"                          # optional: training attacks of this norm outside the registry count
    ladder = [0.1, 0.2, 0.3, 0.5, 0.75, 1.0]
    ranked = true                          # false: reported, but outside every score (random noise)

    [[ladder]]                             # written by `midbench calibrate`
    threat_model = "linf"
    datasets = ["mnist5k"]
    strengths = [0.3, 0.5, 0.7, 0.9]
    targets = [0.9, 0.7, 0.5, 0.3]
    made_by = "midbench calibrate --config ..."
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from midbench.attacks.norms import Norm, parse_norm
from midbench.attacks.syntax import ID_PATTERN, RELATIVE
from midbench.errors import UsageError

THREAT_MODEL_KEYS = {"id", "description", "norm", "ladder", "ranked"}
LADDER_KEYS = {"threat_model", "datasets", "strengths", "targets", "made_by"}


@dataclass(frozen=True)
class ThreatModel:
    """One threat model: its id, what it is, and the strengths its profile is measured at."""

    id: str
    description: str
    ladder: tuple[float, ...]
    norm: Norm | None = None
    source: str = ""
    #: whether the threat model's score enters the unknown and common-unknown scores; random noise is a floor a
    #: defense must clear, not an adversary, so it is reported but never ranked (docs/scoring.md)
    ranked: bool = True


@dataclass(frozen=True)
class Ladder:
    """A calibrated ladder (``[[ladder]]`` table): the strengths of ``threat_model`` on ``datasets``, chosen by
    ``midbench calibrate`` so that the reference model's accuracy meets ``targets`` (docs/scoring.md).

    It replaces the threat model's default ladder when the evaluated dataset is one of ``datasets``."""

    threat_model: str
    datasets: tuple[str, ...]
    strengths: tuple[float, ...]
    targets: tuple[float, ...]
    made_by: str
    source: str = ""


def check_strengths(ladder: Any, where: str, name: str = "ladder") -> tuple[float, ...]:
    """A ladder as numbers.

    Raises:
        UsageError: naming ``where``: not a non-empty list, a strength that is not a number, ≤ 0 or > 1, or a
            ladder that is not strictly increasing.
    """
    if not isinstance(ladder, list) or not ladder:
        raise UsageError(f"{where}: {name} must be a non-empty list of strengths in (0, 1], e.g. [0.25, 0.5, 1.0]")
    for value in ladder:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UsageError(f"{where}: {name} strengths must be numbers, got {value!r}")
        if not 0 < value <= 1:
            raise UsageError(f"{where}: {name} strength {value} is outside (0, 1] (1 = the full budget)")
    if any(b <= a for a, b in zip(ladder, ladder[1:], strict=False)):
        raise UsageError(f"{where}: {name} {ladder} must be strictly increasing")
    return tuple(float(v) for v in ladder)


def parse_threat_model(entry: dict[str, Any], where: str, source: str) -> ThreatModel:
    """One ``[[threat_model]]`` table.

    Raises:
        UsageError: naming ``where`` (file and entry): unknown keys, a bad id, a ``ranked`` that is not a
            boolean, or a ladder that is empty, not strictly increasing, has a strength ≤ 0 or > 1, or does not
            end at the full budget 1.
    """
    extra = set(entry) - THREAT_MODEL_KEYS
    if extra:
        raise UsageError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(THREAT_MODEL_KEYS))}")
    if not ID_PATTERN.match(str(entry.get("id", ""))):
        raise UsageError(f"{where}: id must be kebab-case like linf or rot-trans, got {entry.get('id')!r}")
    ladder = check_strengths(entry.get("ladder"), where)
    if ladder[-1] != 1:
        raise UsageError(f"{where}: ladder {list(ladder)} must end at 1, the full budget (a calibrated [[ladder]] "
                         "may stop below it)")
    ranked = entry.get("ranked", True)
    if not isinstance(ranked, bool):
        raise UsageError(f"{where}: ranked must be true or false, got {ranked!r}")
    try:
        norm = parse_norm(entry["norm"]) if "norm" in entry else None
    except ValueError as error:
        raise UsageError(f"{where}: {error}") from error
    return ThreatModel(str(entry["id"]), str(entry.get("description", "")), ladder, norm, source, ranked)


def parse_ladder(entry: dict[str, Any], where: str, source: str) -> Ladder:
    """One ``[[ladder]]`` table (written by ``midbench calibrate``; format in docs/scoring.md).

    Raises:
        UsageError: naming ``where``: unknown or missing keys, datasets that are not a list of names, a ladder
            that is not strictly increasing in (0, 1], or targets that are not numbers in (0, 1].
    """
    extra = set(entry) - LADDER_KEYS
    if extra:
        raise UsageError(f"{where}: unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(LADDER_KEYS))}")
    if not isinstance(entry.get("threat_model"), str):
        raise UsageError(f"{where}: threat_model must name a [[threat_model]], got {entry.get('threat_model')!r}")
    datasets = entry.get("datasets")
    if not isinstance(datasets, list) or not datasets or not all(isinstance(d, str) for d in datasets):
        raise UsageError(f"{where}: datasets must be a non-empty list of dataset ids, e.g. [\"mnist5k\"]")
    strengths = check_strengths(entry.get("strengths"), where, "strengths")
    targets = entry.get("targets", [])
    if not isinstance(targets, list) or not all(
            isinstance(t, int | float) and not isinstance(t, bool) and 0 < t <= 1 for t in targets):
        raise UsageError(f"{where}: targets must be a list of numbers in (0, 1], got {targets!r}")
    return Ladder(entry["threat_model"], tuple(datasets), strengths, tuple(float(t) for t in targets),
                  str(entry.get("made_by", "")), source)


def check_budget(entry: dict[str, Any], params: dict[str, Any], norm: Norm | None, where: str) -> tuple[str, ...]:
    """The budget parameters of an attack entry: ``budget`` as written, else ``("eps",)`` for an Lp entry.

    Raises:
        UsageError: a budget name that is neither ``eps`` (of an entry with a norm) nor a numeric parameter.
    """
    budget = entry.get("budget", ["eps"] if norm is not None else [])
    if not isinstance(budget, list) or not all(isinstance(name, str) for name in budget):
        raise UsageError(f"{where}: budget must be a list of parameter names, e.g. [\"max_angle\", \"max_shift\"]")
    for name in budget:
        if name == "eps" and norm is not None:
            continue
        value = params.get(name)
        relative = isinstance(value, str) and RELATIVE.match(value) is not None  # e.g. sigma = "eps"
        if not relative and (isinstance(value, bool) or not isinstance(value, int | float)):
            numeric = sorted(k for k, v in params.items() if isinstance(v, int | float) and not isinstance(v, bool))
            raise UsageError(f"{where}: budget parameter {name!r} is not a number of this entry "
                             f"(numeric parameters: {', '.join(numeric) or 'none'}; eps needs a norm)")
    return tuple(budget)
