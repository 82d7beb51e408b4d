"""Accuracy metrics from the per-example robustness matrix (evaluation.md, "Metrics")."""

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


def summarise(robust: np.ndarray, splits: list[str], autoattack_columns: list[int]) -> dict[str, float | None]:
    """known/unknown mean and worst, all-worst, and AutoAttack accuracy from the matrix and column splits."""
    splits_array = np.array(splits)
    known = robust[:, splits_array == "known"] if robust.size else robust
    unknown = robust[:, splits_array == "unknown"] if robust.size else robust
    summary: dict[str, float | None] = {
        "known_mean": mean_accuracy(known), "known_worst": worst_case_accuracy(known),
        "unknown_mean": mean_accuracy(unknown), "unknown_worst": worst_case_accuracy(unknown),
        "all_worst": worst_case_accuracy(robust),
        "autoattack": worst_case_accuracy(robust[:, autoattack_columns]) if autoattack_columns else None,
    }
    return summary
