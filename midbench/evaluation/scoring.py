"""Unknown-attack scores, their intervals and ties: pure functions of per-example matrices (docs/scoring.md).

Notation: a threat model t is measured over its ladder s_1 < … < s_K; ``robust[i, k]`` says example i survived
every attack of t up to strength s_k (the nested climb, :mod:`midbench.evaluation.profile`), clean-incorrect
examples counting as broken. ATA_t(s_k) is the fixed reference accuracy at that rung
(:mod:`midbench.evaluation.references`).

- **Threat-model score** (the form of UAR, Kang et al. 2019): score_t = Σ_k acc_t(s_k) / Σ_k ATA_t(s_k). Since
  acc_t(s_k) is a mean over examples, score_t = mean_i c_i with c_i = Σ_k robust[i, k] / Σ_k ATA_t(s_k): a mean
  of per-example contributions, which is what makes the bootstrap below exact in form and paired differences
  possible.
- **Unknown score** / **common-unknown score**: the mean of score_t over a set of threat models (those the model
  has not seen; those no defended model of the table has seen), again a mean of per-example contributions.
- **UA mean** (ImageNet-UA style, Kaufmann et al. 2023): the plain mean accuracy over the same threat models, each
  at the middle rung of its ladder.
- **Intervals**: 95% percentile bootstrap over examples (Efron & Tibshirani 1993), with a fixed seed so a table is
  reproducible byte for byte. The references are fixed constants, not resampled.
- **Ties**: two models evaluated on the same examples are tied when the 95% paired-bootstrap interval of their
  score difference contains 0 (the same resampled examples for both models).
- **Several training seeds**: a model's values form a seeds × examples matrix, the same test images under every
  seed, so seeds and examples are crossed factors. Its interval resamples both at once — seeds with replacement
  and examples with replacement, the mean over the chosen rows and columns — the pigeonhole bootstrap of Owen
  (2007). Paired differences resample the same seeds and examples for both models. With one seed it is the
  example bootstrap above, draw for draw. With few seeds it is too narrow when seeds vary more than the test set
  does: resampling S seeds sees (S − 1)/S of their variance and no small-sample correction is made (docs/scoring.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: bootstrap resamples (the percentile interval's end points move by well under 0.1 point beyond this)
BOOTSTRAP_SAMPLES = 2000
BOOTSTRAP_SEED = 0


def contributions(robust: np.ndarray, ata: Sequence[float]) -> np.ndarray | None:
    """Per-example contributions c_i to score_t (mean of them = score_t); None when the references sum to 0.

    Args:
        robust: N × K booleans, the nested curve of one threat model.
        ata: K reference accuracies at the same strengths.
    """
    total = float(sum(ata))
    if robust.ndim != 2 or robust.shape[1] != len(ata) or total <= 0:
        return None
    return robust.sum(axis=1).astype(float) / total


def threat_model_score(robust: np.ndarray, ata: Sequence[float]) -> float | None:
    """score_t = Σ_k acc(s_k) / Σ_k ATA(s_k) (a ratio: 1 = as robust as the reference)."""
    values = contributions(robust, ata)
    return None if values is None or not values.size else float(values.mean())


def mean_contributions(per_threat_model: dict[str, np.ndarray], chosen: set[str] | list[str]) -> np.ndarray | None:
    """Per-example contributions to the mean score over ``chosen`` (None when one is missing or none chosen)."""
    chosen = sorted(chosen)
    if not chosen or any(model not in per_threat_model for model in chosen):
        return None
    return np.mean(np.stack([per_threat_model[model] for model in chosen], axis=0), axis=0)


def middle_rung_accuracy(robust: np.ndarray) -> np.ndarray:
    """Per-example survival at the middle rung of a ladder (the lower middle for an even count)."""
    return robust[:, (robust.shape[1] - 1) // 2].astype(float)


def _resample_means(values: np.ndarray, samples: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    index = rng.integers(0, values.shape[0], size=(samples, values.shape[0]))
    return values[index].mean(axis=1)


def bootstrap_interval(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
                       ) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the mean of ``values`` (one per example)."""
    if values.size == 0:
        return (float("nan"), float("nan"))
    means = _resample_means(np.asarray(values, dtype=float), samples, seed)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_difference_interval(first: np.ndarray, second: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                               seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95% paired-bootstrap interval of mean(first) − mean(second), both measured on the same examples."""
    if first.shape != second.shape:
        raise ValueError("a paired difference needs both models measured on the same examples")
    return bootstrap_interval(np.asarray(first, dtype=float) - np.asarray(second, dtype=float), samples, seed)


def crossed_interval(values: np.ndarray, samples: int = BOOTSTRAP_SAMPLES, seed: int = BOOTSTRAP_SEED
                     ) -> tuple[float, float]:
    """95% pigeonhole-bootstrap interval (Owen 2007) of the mean of a seeds × examples matrix: every draw picks
    seeds and examples with replacement, independently, and averages the chosen rows over the chosen columns.
    One seed (a 1 × N matrix, or a vector) gives :func:`bootstrap_interval` exactly."""
    values = np.asarray(values, dtype=float)
    if values.ndim == 1 or values.shape[0] == 1:
        return bootstrap_interval(values.reshape(-1), samples, seed)
    if values.size == 0:
        return (float("nan"), float("nan"))
    n_seeds, n_examples = values.shape
    rng = np.random.default_rng(seed)
    chosen_seeds = rng.integers(0, n_seeds, size=(samples, n_seeds))
    chosen_examples = rng.integers(0, n_examples, size=(samples, n_examples))
    # each seed's mean over every draw's examples (S × samples), then each draw's mean over its seeds
    row_means = np.stack([row[chosen_examples].mean(axis=1) for row in values])
    means = np.take_along_axis(row_means.T, chosen_seeds, axis=1).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def significantly_different(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether the paired 95% interval of the difference excludes 0: per-example vectors (one seed), or
    seeds × examples matrices paired by seed and example (:func:`crossed_interval`)."""
    if np.shape(first) != np.shape(second):
        raise ValueError("a paired difference needs both models measured on the same seeds and examples")
    low, high = crossed_interval(np.asarray(first, dtype=float) - np.asarray(second, dtype=float))
    return low > 0 or high < 0


def ranks_with_ties(ordered: list[np.ndarray | None], examples: list[str] | None = None) -> list[int]:
    """Competition ranks for rows already sorted best first, with ties.

    Rows form groups in order: a row joins the current group when its paired difference with the group's first
    row is not significant. A row's values are per-example (a vector), or seeds × examples (a matrix, rows paired
    by seed). A row without values (``None``), measured on other examples than the leader (``examples``: an
    identifier of each row's example set, e.g. the indices' hash; for seeds, also the seeds), or of another
    shape, is never tied. Every
    row of a group takes the rank of the group's first row; the next group's rank is its position (1-based).
    """
    keys = examples if examples is not None else [""] * len(ordered)
    ranks: list[int] = []
    leader: tuple[np.ndarray, str] | None = None
    for position, (values, key) in enumerate(zip(ordered, keys, strict=True), start=1):
        tied = (leader is not None and values is not None and leader[1] == key and leader[0].shape == values.shape
                and not significantly_different(leader[0], values))
        if tied:
            ranks.append(ranks[-1])
        else:
            ranks.append(position)
            leader = (values, key) if values is not None else None
    return ranks
