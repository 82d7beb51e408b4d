"""The rows of a leaderboard: every result file under a results directory read with its per-example matrix, and the
runs of one checkpoint on the same examples united into one row (docs/evaluation.md, "Leaderboards").

Every number is recomputed from the per-example matrix (the ``.npz`` beside each result JSON): a result whose
matrix is missing or unreadable (an interrupted or damaged run) is skipped with a :class:`LeaderboardWarning`.
Runs of the same checkpoint on the same examples (same dataset, ε, protocol and source, ``indices_sha256``) are
one row: their attack columns are united — an attack evaluated by several runs counts once, the newest — and
the worst cases are the per-example AND over the united matrix. With identical attack sets this is "the
newest run wins". Ranking and rendering the rows is :mod:`midbench.reporting.leaderboard`'s job.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from midbench.errors import UsageError
from midbench.evaluation.documents import SUMMARY_KEYS, AttackRow, EvaluatedModel, ResultDocument, read_result
from midbench.evaluation.expected import BELOW_EXPECTED_RANGE, expected_range
from midbench.evaluation.metrics import (
    CATASTROPHIC_OVERFITTING,
    catastrophic_overfitting,
    summarise,
    unseen_full_strength,
    wilson_interval,
)
from midbench.reporting.columns import ACCURACY_COLUMNS, BASE_COLUMNS, PROPORTION_COLUMNS
from midbench.reporting.tables import percent

#: the adversarial-training baselines among the built-in methods, for result files written before checkpoints
#: recorded ``adversarial_training_baseline`` (a method's class attribute; midbench.defenses.base)
LEGACY_AT_BASELINES = ("pgd-at", "trades", "mart", "fast-at", "msd", "avg", "max")
#: a ``--columns`` entry: a registry id, or ``id@version``
_ATTACK_COLUMN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*(@(\d+|custom))?$")


class LeaderboardWarning(UserWarning):
    """A result file left out of a table (its per-example matrix is missing or does not match it)."""


@dataclass
class Run:
    """One complete result: the JSON document and its per-example matrix."""

    path: Path
    result: ResultDocument
    robust: np.ndarray  # N × k bool, columns in the order of result.attacks
    clean: np.ndarray  # N bool
    #: the unknown-attack profile: {threat model: (N × strengths nested matrix, strengths, seen)}
    curves: dict[str, tuple[np.ndarray, list[float], bool]] | None = None
    #: per threat model of the profile: the attacks climbed (``id@version``) and whether it is ranked
    curve_info: dict[str, dict[str, Any]] | None = None


def load_run(path: str | Path, result: ResultDocument | None = None) -> Run | None:
    """The result at ``path`` (``result``: its document, if already read) with its matrix; ``None`` if the JSON
    is not a complete result, and also a :class:`LeaderboardWarning` if the ``.npz`` is missing, unreadable or
    inconsistent with the JSON."""
    path = Path(path)
    result = read_result(path) if result is None else result
    if result is None:
        return None
    matrix_path = path.parent / str(result.per_example or f"{result.run_id}.npz")
    problem = None
    try:
        with np.load(matrix_path, allow_pickle=False) as matrix:
            robust = np.asarray(matrix["robust"]).astype(bool)
            clean = np.asarray(matrix["clean"]).astype(bool)
            attacks = [str(name) for name in matrix["attacks"]] if "attacks" in matrix else None
            profile = (result.profile or {}).get("threat_models") or []
            curves = {str(model["id"]): (np.asarray(matrix[f"profile_{model['id']}"]).astype(bool),
                                         [float(s) for s in model["strengths"]], bool(model.get("seen")))
                      for model in profile}
    except FileNotFoundError:
        problem = f"its per-example matrix {matrix_path.name} is missing"
    except Exception as error:  # noqa: BLE001 - any unreadable matrix means the row cannot be trusted
        problem = f"its per-example matrix {matrix_path.name} is unreadable ({type(error).__name__})"
    else:
        n, ids = int(result.data.n_examples), [row.id for row in result.attacks]
        if robust.ndim == 1 and robust.size == 0:
            robust = robust.reshape(n, 0)
        if robust.shape != (n, len(ids)) or clean.shape != (n,) or (attacks is not None and attacks != ids) \
                or any(curve.shape != (n, len(strengths)) for curve, strengths, _ in curves.values()):
            problem = f"its per-example matrix {matrix_path.name} does not match the result"
    if problem is not None:
        warnings.warn(f"skipped {path}: {problem} (an interrupted or damaged evaluation; rerun `midbench eval`)",
                      LeaderboardWarning, stacklevel=2)
        return None
    info = {str(model["id"]): {"attacks": [str(a) for a in model.get("attacks", [])],
                               # result files written before threat models had `ranked`: noise was the only floor
                               "ranked": bool(model.get("ranked", model["id"] != "noise"))}
            for model in (result.profile or {}).get("threat_models") or []}
    return Run(path, result, robust, clean, curves or None, info or None)


def _attack_identity(row: AttackRow) -> tuple[str, str, str]:
    return (row.id, json.dumps(row.eps), json.dumps(row.params, sort_keys=True))


def _group_key(result: ResultDocument) -> tuple[Any, ...]:
    """Runs with equal keys evaluated the same checkpoint on the same examples under the same protocol."""
    checkpoint, data, protocol = result.checkpoint, result.data, result.protocol
    source = protocol.source or {}
    if not checkpoint.sha256 or not data.indices_sha256:
        return ("run", result.run_id)  # cannot prove two such runs saw the same model and data
    return (checkpoint.sha256, data.dataset, json.dumps(data.eps, sort_keys=True), protocol.name,
            source.get("sha256") or source.get("name"), data.indices_sha256, data.n_examples)


def _version(key: str) -> int:
    suffix = key.partition("@")[2]
    return int(suffix) if suffix.isdigit() else -1


def _find_attack(spec: str, columns: dict[str, np.ndarray]) -> np.ndarray | None:
    """The column of attack ``spec``: a full key (``pgd-linf@1``, ``pgd-linf@custom``) exactly, or a registry id
    (``pgd-linf``): its highest registry version (custom configurations need their full key)."""
    if "@" in spec:
        return columns.get(spec)
    versions = [key for key in columns if key.partition("@")[0] == spec and _version(key) >= 0]
    return columns[max(versions, key=_version)] if versions else None


def merge_runs(runs: list[Run], columns: list[str] = ()) -> dict[str, Any]:
    """One leaderboard row from runs of one checkpoint on the same examples (oldest first): the union of their
    attack columns (newest wins per attack), every accuracy recomputed from the united per-example matrix."""
    newest = runs[-1]
    united: dict[tuple[str, str, str], tuple[AttackRow, np.ndarray]] = {}
    for run in runs:
        for index, row in enumerate(run.result.attacks):
            united[_attack_identity(row)] = (row, run.robust[:, index])
    rows = [row for row, _ in united.values()]
    n = int(newest.result.data.n_examples)
    robust = (np.stack([column for _, column in united.values()], axis=1) if united
              else np.zeros((n, 0), dtype=bool))
    splits = [row.split for row in rows]
    autoattack = [index for index, row in enumerate(rows) if row.is_autoattack]
    profiled = next((run for run in reversed(runs) if run.curves), None)  # the newest profile counts
    profile_unknown = unseen_full_strength([(matrix, seen) for matrix, _, seen in profiled.curves.values()], n) \
        if profiled is not None else np.zeros((n, 0), dtype=bool)
    summary = summarise(robust, splits, autoattack, profile_unknown)
    split_array = np.array(splits, dtype=object)
    unknown = np.concatenate([robust[:, split_array == "unknown"], profile_unknown], axis=1)
    everything = np.concatenate([robust, profile_unknown], axis=1)
    survivors = {  # examples that count for each proportion
        "clean": newest.clean,
        "known_worst": robust[:, split_array == "known"].all(axis=1) if "known" in splits else None,
        "unknown_worst": unknown.all(axis=1) if unknown.shape[1] else None,
        "all_worst": everything.all(axis=1) if everything.shape[1] else None,
        "autoattack": robust[:, autoattack].all(axis=1) if autoattack else None,
    }
    by_key: dict[str, np.ndarray] = {}
    for row, column in united.values():
        by_key[row.id] = column  # several configurations under one key: the newest
    for spec in columns:
        survivors[spec] = _find_attack(spec, by_key)
    result = newest.result
    flags = dict.fromkeys(code for run in runs for code in run.result.flag_codes)
    # recomputed on the united row: the known attacks and AutoAttack may come from different runs
    if catastrophic_overfitting(summary["known_worst"], summary["autoattack"], newest.result.protocol.name):
        flags[CATASTROPHIC_OVERFITTING] = None
    eps = result.data.eps.get("Linf")
    floors = expected_range(result.data.dataset, result.checkpoint.method, eps) if is_at_baseline(result.checkpoint) \
        else None
    if floors is not None and n:
        # below only where the whole 95% interval is: the upper Wilson bounds are compared with the floors.
        # AutoAttack under transfer is crafted on another model: only the white-box figure is the paper's
        adversarial = survivors["autoattack"] if result.protocol.name == "whitebox" else None
        highs = [None if column is None else percent(wilson_interval(int(column.sum()), n)[1])
                 for column in (newest.clean, adversarial)]
        if floors.misses(*highs):
            flags[BELOW_EXPECTED_RANGE] = None
    record: dict[str, Any] = {
        "name": result.checkpoint.name, "method": result.checkpoint.method,
        "at_baseline": is_at_baseline(result.checkpoint),
        "arch": result.checkpoint.arch, "dataset": result.data.dataset,
        "protocol": result.protocol.label,
        "clean": percent(float(newest.clean.mean()) if n else None),
        **{key: percent(summary[key]) for key in SUMMARY_KEYS},
        "flags": ",".join(flags), "n": n, "indices_sha256": result.data.indices_sha256,
        "checkpoint_sha256": result.checkpoint.sha256,
        "eps_linf": None if eps is None else float(f"{float(eps):.6g}"),
        "created": result.created, "run_id": result.run_id, "runs": [run.result.run_id for run in runs],
        "paths": [str(run.path) for run in runs],
        "profile": _profile_of(runs),
        # for the figures and the report: every attack of the united matrix, and the newest sanity measurements
        "attack_results": [{"id": row.id, "split": row.split, "robust": int(column.sum()),
                            "autoattack": row.is_autoattack} for row, column in united.values()],
        "sanity": next((run.result.sanity for run in reversed(runs) if run.result.sanity), None),
        # per-example survival behind the headline's proportions, for intervals across seeds (not shown)
        "_survivors": {key: survivors[key] for key in ("clean", "autoattack")},
    }
    for spec in columns:
        column = survivors[spec]
        record[spec] = percent(float(column.mean())) if column is not None and n else None
    for key, column in survivors.items():
        if column is None or not n:
            record[f"{key}_lo"] = record[f"{key}_hi"] = None
        else:
            low, high = wilson_interval(int(column.sum()), n)
            record[f"{key}_lo"], record[f"{key}_hi"] = percent(low), percent(high)
    return record


def _profile_of(runs: list[Run]) -> dict[str, dict[str, Any]] | None:
    """The newest run's profile, its accuracies recomputed from the nested matrices:
    {threat model: {"points": {strength: accuracy}, "survivors": {strength: count}, "n": N, "seen": bool,
    "matrix": N × strengths, "attacks": [id@version], "ranked": bool}}."""
    for run in reversed(runs):
        if run.curves:
            info = run.curve_info or {}
            return {model: {"points": dict(zip(strengths, (float(a) for a in matrix.mean(axis=0)), strict=True)),
                            "survivors": dict(zip(strengths, (int(c) for c in matrix.sum(axis=0)), strict=True)),
                            "n": int(matrix.shape[0]), "seen": seen, "matrix": matrix,
                            "attacks": info.get(model, {}).get("attacks", []),
                            "ranked": info.get(model, {}).get("ranked", model != "noise")}
                    for model, (matrix, strengths, seen) in run.curves.items()}
    return None


def parse_columns(columns: list[str] | tuple[str, ...] | None) -> list[str]:
    """Validate ``--columns`` entries (registry ids or ``id@version`` keys); duplicates are dropped."""
    chosen: list[str] = []
    for spec in columns or []:
        spec = spec.strip()
        if not _ATTACK_COLUMN.match(spec) or spec in BASE_COLUMNS or spec in ("dataset", "all_worst"):
            raise UsageError(f"bad --columns entry {spec!r}; use registry ids like pgd-linf or keys like "
                             "pgd-linf@1, separated by commas (see `midbench attacks list`)")
        if spec not in chosen:
            chosen.append(spec)
    return chosen


def collect(results_dir: str | Path, dataset: str | None = None, columns: list[str] | None = None) -> pd.DataFrame:
    """One row per checkpoint, data and protocol (runs united) under ``results_dir/runs``; an empty frame if
    there are none. ``columns``: attacks to add as per-attack robust-accuracy columns."""
    columns = parse_columns(columns)
    groups: dict[tuple[Any, ...], list[Run]] = {}
    for path in sorted(Path(results_dir).glob("runs/**/*.json")):
        result = read_result(path)
        if result is None or (dataset is not None and result.data.dataset != dataset):
            continue
        run = load_run(path, result)
        if run is not None:
            groups.setdefault(_group_key(run.result), []).append(run)
    rows = [merge_runs(sorted(runs, key=lambda run: (run.result.created, run.result.run_id)), columns)
            for runs in groups.values()]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    _share_range_flag(frame)
    for column in [*ACCURACY_COLUMNS, "all_worst", *columns, "eps_linf",
                   *(f"{key}_{end}" for key in [*PROPORTION_COLUMNS, "all_worst", *columns] for end in ("lo", "hi"))]:
        frame[column] = frame[column].astype(float)
    return frame.sort_values(["created", "run_id"]).reset_index(drop=True)


def _share_range_flag(frame: pd.DataFrame) -> None:
    """A checkpoint below its expected range white-box (:mod:`midbench.evaluation.expected`) carries the flag in
    every table it appears in: a transfer row cannot measure the white-box AutoAttack the range is about."""
    flagged = {sha for sha, flags in zip(frame["checkpoint_sha256"], frame["flags"], strict=True)
               if sha and BELOW_EXPECTED_RANGE in str(flags).split(",")}
    frame["flags"] = [flags if not sha or sha not in flagged or BELOW_EXPECTED_RANGE in str(flags).split(",")
                      else ",".join(part for part in [str(flags), BELOW_EXPECTED_RANGE] if part)
                      for sha, flags in zip(frame["checkpoint_sha256"], frame["flags"], strict=True)]


def is_at_baseline(checkpoint: EvaluatedModel) -> bool:
    """Whether the evaluated model was trained by an adversarial-training baseline: as its checkpoint recorded,
    or, for older result files, by the built-in method's name."""
    recorded = checkpoint.adversarial_training_baseline
    return bool(recorded) if recorded is not None else checkpoint.method in LEGACY_AT_BASELINES
