"""The unknown-attack profile: each threat model's accuracy over its ladder of strengths, climbed nested.

Budgets are nested (a perturbation allowed at strength s is allowed at every larger one), so a threat model's
ladder is climbed from the smallest strength: at each strength every attack of the profile runs, one after the
other, on the examples still robust — an example broken at one strength, by any attack, counts as broken at all
larger ones and is never attacked again. The accuracy at strength s is therefore the per-example worst case over
every attack of the threat model at every strength up to s: curves are monotone by construction.

Under the transfer protocol the gradient attacks are crafted on the source model, but the gradient-free ones (grid
and random search) query the evaluated model itself, as any attacker could; the result lists them per threat model
(``queried_evaluated_model``).

Each example draws its randomness from a generator seeded by (seed, threat model, strength, attack, example
index) (:mod:`midbench.attacks.randomness`), and the profile's attacks treat examples independently, so an
example's attack does not depend on which others share its batch: the nested curve equals, example by example,
the worst case over independent evaluations at that strength and the smaller ones (``tests/test_profile.py``),
at a fraction of their cost (``benchmarks/bench_profile.py``).

References: Kang et al. 2019 (UAR: several calibrated sizes per attack), Dai et al. 2023 (MultiRobustBench),
Carlini et al. 2019 (accuracy against budget).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from midbench.attacks.plans import ThreatModelPlan
from midbench.attacks.specs import ResolvedAttack
from midbench.evaluation.attacking import AttackRunner
from midbench.evaluation.metrics import wilson_interval

#: the split recorded for profile steps (neither a known nor an unknown attack row)
PROFILE_SPLIT = "profile"


@dataclass
class ThreatModelCurve:
    """One threat model's nested curve: ``robust[i, k]`` = example i survived every attack up to strength k."""

    plan: ThreatModelPlan
    robust: np.ndarray
    seconds: float
    forward_passes: int
    backward_passes: int
    #: the attacks that queried the evaluated model rather than the transfer source (gradient-free ones)
    queried_evaluated: tuple[str, ...] = ()


def step_key(threat_model: str, strength: float, attack: ResolvedAttack) -> str:
    """The name of one (threat model, strength, attack) step in state files and progress reports."""
    return f"profile:{threat_model}@{strength:g}:{attack.key}"


def climb(runner: AttackRunner, plans: list[ThreatModelPlan], clean_correct: np.ndarray) -> list[ThreatModelCurve]:
    """Climb every threat model's ladder, attacking only the examples still robust (module docstring)."""
    return _curves(runner, plans, clean_correct, nested=True)


def independent_curves(runner: AttackRunner, plans: list[ThreatModelPlan],
                       clean_correct: np.ndarray) -> list[ThreatModelCurve]:
    """What the nested climb saves: every attack at every strength on every clean-correct example, the curve
    being the per-example worst case over the strengths up to each one. With the same runner settings (seed,
    step keys, per-example randomness) its curves equal :func:`climb`'s; it exists to check that
    (``tests/test_profile.py``) and to measure the saving (``benchmarks/bench_profile.py``, goal P11)."""
    return _curves(runner, plans, clean_correct, nested=False)


def _curves(runner: AttackRunner, plans: list[ThreatModelPlan], clean_correct: np.ndarray, nested: bool
            ) -> list[ThreatModelCurve]:
    """Each attack of each rung starts from the examples still robust (``nested``) or from every clean-correct
    one; either way an example counts as robust at a strength only if it survived everything up to it."""
    curves = []
    transfer = runner.protocol == "transfer"
    for plan in plans:
        survived = clean_correct.copy()
        columns, seconds, forward, backward = [], 0.0, 0, 0
        for rung in plan.rungs:
            for attack in rung.attacks:
                outcome = runner.run(attack, PROFILE_SPLIT, survived if nested else clean_correct,
                                     key=step_key(plan.threat_model.id, rung.strength, attack), per_example=True,
                                     query_evaluated=transfer and not attack.uses_gradients)
                survived &= outcome.robust
                seconds += outcome.seconds
                forward += outcome.forward_passes
                backward += outcome.backward_passes
            columns.append(survived.copy())
        queried = tuple(dict.fromkeys(a.key for rung in plan.rungs for a in rung.attacks if not a.uses_gradients)) \
            if transfer else ()
        curves.append(ThreatModelCurve(plan, _stack(columns, clean_correct), seconds, forward, backward, queried))
    return curves


def _stack(columns: list[np.ndarray], clean_correct: np.ndarray) -> np.ndarray:
    return np.stack(columns, axis=1) if columns else np.zeros((clean_correct.shape[0], 0), dtype=bool)


def normalised_area(strengths: list[float], accuracies: list[float], clean: float) -> float:
    """Area under the accuracy-against-strength curve from (0, clean) to the full budget, by trapezoids, divided
    by the strength range: the mean accuracy over strengths in [0, 1], between 0 and 1."""
    xs, ys = [0.0, *strengths], [clean, *accuracies]
    area = sum((x1 - x0) * (y0 + y1) / 2 for x0, x1, y0, y1 in zip(xs, xs[1:], ys, ys[1:], strict=False))
    return area / xs[-1] if xs[-1] > 0 else clean


def curve_summary(curve: ThreatModelCurve, clean_correct: np.ndarray) -> dict[str, Any]:
    """A curve as stored in the result file (``profile.threat_models[]``, results/README.md)."""
    n = int(clean_correct.shape[0])
    plan = curve.plan
    survivors = [int(count) for count in curve.robust.sum(axis=0)]
    accuracies = [count / n if n else 0.0 for count in survivors]
    clean = float(clean_correct.mean()) if n else 0.0
    strengths = [rung.strength for rung in plan.rungs]
    return {
        "id": plan.threat_model.id, "seen": plan.seen, "ranked": plan.threat_model.ranked,
        "description": plan.threat_model.description,
        "attacks": [attack.key for attack in plan.rungs[0].attacks] if plan.rungs else [],
        "strengths": strengths,
        "budgets": [list(rung.budgets) for rung in plan.rungs],
        "clean_accuracy": clean,
        "accuracy": accuracies,
        "ci95": [list(wilson_interval(count, n)) for count in survivors],
        "full_strength_accuracy": accuracies[-1] if accuracies else None,
        "area": normalised_area(strengths, accuracies, clean) if accuracies else None,
        "seconds": round(curve.seconds, 3), "forward_passes": curve.forward_passes,
        "backward_passes": curve.backward_passes,
        **({"queried_evaluated_model": list(curve.queried_evaluated)} if curve.queried_evaluated else {}),
    }
