"""Accuracy metrics from the per-example robustness matrix (docs/evaluation.md, "Metrics")."""

from __future__ import annotations

import math

import numpy as np


def wilson_interval(successes: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (Wilson, JASA 1927).

    Better behaved than the normal approximation near 0 and 1, where robust accuracies often sit.
    """
    if total <= 0:
        return (0.0, 1.0)
    p = successes / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # The interval's end is exactly 0 (or 1) when no (or every) trial succeeded; avoid rounding residue.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == total else min(1.0, centre + half)
    return (low, high)


def worst_case_accuracy(robust: np.ndarray) -> float | None:
    """Accuracy under the per-example worst case over the columns of ``robust`` (N × k booleans):
    an example counts only if it survives every attack. ``None`` without columns."""
    if robust.ndim != 2 or robust.shape[1] == 0 or robust.shape[0] == 0:
        return None
    return float(robust.all(axis=1).mean())


def mean_accuracy(robust: np.ndarray) -> float | None:
    """Mean over attacks of each attack's accuracy; ``None`` without columns."""
    if robust.ndim != 2 or robust.shape[1] == 0 or robust.shape[0] == 0:
        return None
    return float(robust.mean(axis=0).mean())


def summarise(robust: np.ndarray, splits: list[str], autoattack_columns: list[int],
              profile_unknown: np.ndarray | None = None) -> dict[str, float | None]:
    """known/unknown mean and worst, all-worst, and AutoAttack accuracy from the matrix and column splits.

    Args:
        profile_unknown: N × k, the full-strength columns of the profile's threat models the model has not seen
            (:func:`unseen_full_strength`); they count as unknown attacks (and in the all-attacks worst case).
    """
    splits_array = np.array(splits)
    known = robust[:, splits_array == "known"] if robust.size else robust
    unknown = robust[:, splits_array == "unknown"] if robust.size else robust
    everything = robust
    if profile_unknown is not None and profile_unknown.size:
        unknown = np.concatenate([unknown.reshape(profile_unknown.shape[0], -1), profile_unknown], axis=1)
        everything = np.concatenate([robust.reshape(profile_unknown.shape[0], -1), profile_unknown], axis=1)
    summary: dict[str, float | None] = {
        "known_mean": mean_accuracy(known), "known_worst": worst_case_accuracy(known),
        "unknown_mean": mean_accuracy(unknown), "unknown_worst": worst_case_accuracy(unknown),
        "all_worst": worst_case_accuracy(everything),
        "autoattack": worst_case_accuracy(robust[:, autoattack_columns]) if autoattack_columns else None,
    }
    return summary


def unseen_full_strength(curves: list[tuple[np.ndarray, bool]], n: int) -> np.ndarray:
    """N × k: for each (nested matrix, seen) curve of the profile that the model has not seen, its column at the
    full budget (the last strength). This is how the profile enters the unknown summary: an example is robust to
    the unknown attacks when it survives every unseen threat model at full strength."""
    columns = [matrix[:, -1] for matrix, seen in curves if not seen and matrix.shape[1]]
    return np.stack(columns, axis=1) if columns else np.zeros((n, 0), dtype=bool)


def reference_normalised_scores(curves: list[dict[str, dict[float, float]]], seen: list[set[str]],
                                ) -> tuple[list[dict[str, float | None]], dict[str, list[int] | None]]:
    """Per model and threat model, Σₖ acc(sₖ) / Σₖ ref(sₖ) over the model's ladder (the form of Kang et al.
    2019's UAR; Dai et al. 2023 call the per-strength ratio the competitiveness ratio).

    ``ref(s)`` is the best accuracy at strength s among the models that were trained against the threat model
    (their ATA), or, when none of them was, among every model that measured it.

    Args:
        curves: per model, {threat model: {strength: accuracy}} (models without a profile give ``{}``).
        seen: per model, the threat models it was trained against.

    Returns:
        per model {threat model: score} (``None`` where the reference is 0 everywhere), and per threat model the
        indices of the models that served as its reference (``None``: the best of every model).
    """
    threat_models = sorted({model for curve in curves for model in curve})
    references: dict[str, list[int] | None] = {}
    best: dict[str, dict[float, float]] = {}
    for model in threat_models:
        measured = [i for i, curve in enumerate(curves) if model in curve]
        trained = [i for i in measured if model in seen[i]]
        references[model] = trained or None
        best[model] = {}
        for i in trained or measured:
            for strength, accuracy in curves[i][model].items():
                best[model][strength] = max(best[model].get(strength, 0.0), accuracy)
    scores: list[dict[str, float | None]] = []
    for curve in curves:
        row: dict[str, float | None] = {}
        for model, points in curve.items():
            reference = sum(best[model].get(strength, 0.0) for strength in points)
            row[model] = sum(points.values()) / reference if reference > 0 else None
        scores.append(row)
    return scores, references


def mean_score(scores: dict[str, float | None], threat_models: set[str]) -> float | None:
    """Mean of the scores over ``threat_models`` (``None`` when one is missing or the set is empty)."""
    values = [scores.get(model) for model in sorted(threat_models)]
    if not values or any(value is None for value in values):
        return None
    return float(sum(values) / len(values))  # type: ignore[arg-type]


#: AutoAttack this far (absolute) below the model's own known-attack accuracy flags catastrophic overfitting
#: (docs/flags.md): a model that is not masking loses a few points from its training attack to AutoAttack (Croce &
#: Hein 2020), while an overfitted one (Wong, Rice & Kolter 2020) loses tens of points
OVERFITTING_GAP = 0.2
CATASTROPHIC_OVERFITTING = "catastrophic-overfitting"


def catastrophic_overfitting(known_worst: float | None, autoattack: float | None, protocol: str) -> str | None:
    """The message of the ``catastrophic-overfitting`` flag, or None: white-box AutoAttack accuracy at least
    :data:`OVERFITTING_GAP` below the worst case over the model's own training attacks. Under transfer both are
    crafted on the source model and say nothing about this model's gradients."""
    if protocol != "whitebox" or known_worst is None or autoattack is None:
        return None
    if known_worst - autoattack < OVERFITTING_GAP:
        return None
    return (f"AutoAttack leaves {100 * autoattack:.1f}% against {100 * known_worst:.1f}% under the model's own "
            "training attacks: it resists what it was trained on and little else (catastrophic overfitting, Wong "
            "et al. 2020); it is kept out of best AT and of any reference")
