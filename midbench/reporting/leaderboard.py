"""Leaderboards: every result file under a results directory → one table per dataset and protocol.

Columns (docs/evaluation.md, "Leaderboards"): rank, name, method, arch, protocol, clean, known mean, known worst,
unknown mean, unknown worst, AutoAttack, Δ unknown-worst vs the best adversarial-training baseline of the same
table, flags, n, ε; optionally one robust-accuracy column per requested attack (``columns``). Accuracies are
percentages rounded to two decimals, identical in every format (markdown, CSV, LaTeX, HTML, JSON). Rows are sorted
by unknown worst (then AutoAttack, then clean). A table with unknown-attack profiles gains their columns, is
sorted by the common-unknown score, and its Δ column compares that score instead (:func:`rank_table`).

Every number is recomputed from the per-example matrix (the ``.npz`` beside each result JSON): a result whose
matrix is missing or unreadable (an interrupted or damaged run) is skipped with a :class:`LeaderboardWarning`.
Runs of the same checkpoint on the same examples (same dataset, ε, protocol and source, ``indices_sha256``) are
one row: their attack columns are united — an attack evaluated by several runs counts once, the newest — and
the worst cases are the per-example AND over the united matrix. With identical attack sets this is "the
newest run wins".

With ``ci`` every proportion (clean, known/unknown worst, AutoAttack, per-attack columns) carries its 95% Wilson
interval: ``12.3 [10.1, 14.8]`` in markdown, LaTeX and HTML, extra ``<column>_lo``/``<column>_hi`` columns in CSV
and JSON. The means over attacks are not proportions of examples and have none.
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
from midbench.evaluation import scoring
from midbench.evaluation.documents import SUMMARY_KEYS, AttackRow, EvaluatedModel, ResultDocument, read_result
from midbench.evaluation.expected import BELOW_EXPECTED_RANGE, expected_range
from midbench.evaluation.metrics import (
    CATASTROPHIC_OVERFITTING,
    catastrophic_overfitting,
    summarise,
    unseen_full_strength,
    wilson_interval,
)
from midbench.evaluation.references import ReferenceSet, check_reference_set, covering_sets, reference_sets
from midbench.reporting.columns import (
    ACCURACY_COLUMNS,
    BASE_COLUMNS,
    HEADLINE_COLUMNS,
    PROPORTION_COLUMNS,
    SCORE_COLUMNS,
)
from midbench.reporting.formats import TableFormat, values
from midbench.reporting.tables import (
    display_frame,
    header,
    html_table,
    latex_table,
    markdown_block,
    markdown_table,
    number_text,
    percent,
    tables_as_data,
    tables_as_text,
)

FORMATS = values(TableFormat)
#: the adversarial-training baselines among the built-in methods, for result files written before checkpoints
#: recorded ``adversarial_training_baseline`` (a method's class attribute; midbench.defenses.base)
LEGACY_AT_BASELINES = ("pgd-at", "trades", "mart", "fast-at", "msd", "avg", "max")
#: the Δ-vs-best-baseline column of a table ranked by each metric
DELTA_COLUMN = {"unknown_worst": "delta_unknown_worst_vs_at", "common_unknown_score": "delta_common_unknown_vs_at"}
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


def profile_columns(table: pd.DataFrame, ci: bool = False, sets: list[ReferenceSet] | None = None) -> pd.DataFrame:
    """A copy of one table with the profile's columns (docs/scoring.md); rows without a profile get empty cells.

    Every row is scored against the fixed reference set of its dataset and architecture (``sets``, user sets
    first, then the shipped ones), never against the other rows, so adding or removing a row changes no other
    row's scores. The columns: ``score_<threat model>`` (Σ acc / Σ ATA over the ladder, %), ``unknown_score``
    (mean over the ranked threat models the row has not seen) and ``common_unknown_score`` (mean over the ranked
    ones no row of the table has seen), each with a 95% bootstrap interval (``_lo``/``_hi``); ``ua_mean`` (plain
    mean accuracy over the common-unknown threat models at their middle rung, with its interval); ``pct_seen``,
    ``seen``, ``reference`` (the set used) and ``curve_<threat model>`` (``strength:accuracy%`` pairs; with ``ci``
    each point carries its 95% Wilson interval, ``0.5:41.2[36.9,45.6]``). A row without a matching reference set,
    or a threat model measured at another ladder or with other attacks than the reference, gets no score: the
    table notes why (``table.attrs["score_notes"]``).
    """
    sets = reference_sets() if sets is None else sets
    profiles = [value if isinstance(value, dict) else {} for value in table["profile"]]
    curves = [{model: entry["points"] for model, entry in profile.items()} for profile in profiles]
    seen = [{model for model, entry in profile.items() if entry["seen"]} for profile in profiles]
    models = sorted({model for curve in curves for model in curve})
    ranked = {model for profile in profiles for model, entry in profile.items() if entry["ranked"]}
    seen_anywhere = set().union(*seen) if seen else set()
    common = {model for model in models if all(model in curve for curve in curves if curve)} - seen_anywhere
    notes: dict[str, None] = {}
    # every set of a row's dataset and family; each threat model is scored against the first with its curve (the
    # corruptions have a set of their own beside the core threat models')
    row_sets = [covering_sets(sets, str(dataset), None if pd.isna(arch) else str(arch)) if profile else []
                for profile, dataset, arch in zip(profiles, table["dataset"], table["arch"], strict=True)]
    # per row, the ranked threat models none of its sets has (a suite climbed before its set is calibrated): shown
    # as curves and left out of that row's means, so its other threat models are still scored
    unreferenced = [{model for model in ranked if covering and not any(model in s.curves for s in covering)}
                    for covering in row_sets]
    anywhere = set().union(*unreferenced) if unreferenced else set()
    if anywhere:
        notes[f"{', '.join(sorted(anywhere))}: no reference set has a curve for them, so they are shown as curves "
              "and left out of every score (calibrate a set for them, `midbench calibrate`)"] = None
    common_ranked = common & ranked - anywhere
    contributions: list[dict[str, np.ndarray]] = []
    used: list[str | None] = []
    for profile, dataset, arch, covering in zip(profiles, table["dataset"], table["arch"], row_sets, strict=True):
        row: dict[str, np.ndarray] = {}
        names: dict[str, None] = {}
        if profile and not covering:
            notes[f"no reference set for {dataset} / {arch}: its rows show curves, not scores (`midbench calibrate`)"] \
                = None
        for model, entry in profile.items() if covering else ():
            if not entry["ranked"]:
                continue  # a floor has no reference and needs none
            reference = next((candidate for candidate in covering if model in candidate.curves), None)
            if reference is None:  # noted above
                continue
            curve = reference.curves[model]
            why = curve.matches(list(entry["points"]), entry["attacks"])
            if why is not None:
                notes[f"{model} not scored against {reference.name}: {why}"] = None
                continue
            values = scoring.contributions(entry["matrix"], curve.ata)
            if values is not None:
                row[model] = values
                names[reference.name] = None
        contributions.append(row)
        # the sets that scored something for this row (none: the row has curves only)
        used.append(" + ".join(names) or None)
    table = table.copy()
    # a score column for each ranked threat model some row's sets have (a floor gets a curve, never a score)
    missing_per_row = [missing for missing, covering in zip(unreferenced, row_sets, strict=True) if covering]
    nowhere = set.intersection(*missing_per_row) if missing_per_row else set()
    for model in (model for model in models if model in ranked - nowhere):
        table[f"score_{model}"] = [percent(float(row[model].mean())) if model in row else None
                                   for row in contributions]

    def with_interval(column: str, values: list[np.ndarray | None]) -> None:
        table[column] = [percent(float(v.mean())) if v is not None and v.size else None for v in values]
        bounds = [scoring.bootstrap_interval(v) if v is not None and v.size else (None, None) for v in values]
        table[f"{column}_lo"] = [percent(low) for low, _ in bounds]
        table[f"{column}_hi"] = [percent(high) for _, high in bounds]

    unknown = [scoring.mean_contributions(row, (set(curve) - own) & ranked - missing) if curve else None
               for row, curve, own, missing in zip(contributions, curves, seen, unreferenced, strict=True)]
    common_values = [scoring.mean_contributions(row, common_ranked) if curve else None
                     for row, curve in zip(contributions, curves, strict=True)]
    with_interval("unknown_score", unknown)
    with_interval("common_unknown_score", common_values)
    ua_values = [np.mean(np.stack([scoring.middle_rung_accuracy(profile[model]["matrix"])
                                   for model in sorted(common_ranked)]), axis=0) if profile and common_ranked else None
                 for profile in profiles]
    with_interval("ua_mean", ua_values)
    table["pct_seen"] = [round(100 * len(own) / len(curve), 2) if curve else None
                         for curve, own in zip(curves, seen, strict=True)]
    table["seen"] = [",".join(sorted(own)) if curve else None for curve, own in zip(curves, seen, strict=True)]
    table["reference"] = used
    # the per-example values, for ties and for intervals across seeds (not shown)
    table["_common_values"] = common_values
    table["_unknown_values"] = unknown
    table["_ua_values"] = ua_values

    def point(profile: dict[str, Any], model: str, strength: float, accuracy: float) -> str:
        text = f"{number_text(strength)}:{number_text(percent(accuracy))}"
        if not ci:
            return text
        low, high = wilson_interval(profile[model]["survivors"][strength], profile[model]["n"])
        return f"{text}[{number_text(percent(low))},{number_text(percent(high))}]"

    for model in models:
        table[f"curve_{model}"] = [" ".join(point(profile, model, s, a) for s, a in curve[model].items())
                                   if model in curve else None for profile, curve in zip(profiles, curves, strict=True)]
    table.attrs["score_notes"] = list(notes)
    table.attrs["reference_sets"] = sorted({name for names in used if names for name in names.split(" + ")})
    table.attrs["common_unknown"] = sorted(common_ranked)
    table.attrs["unranked"] = sorted(set(models) - ranked)
    return table


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


def table_columns(columns: list[str] = (), ci: bool = False) -> list[str]:
    """The columns of a ranked table: per-attack columns after AutoAttack; with ``ci`` each proportion is
    followed by its ``_lo`` and ``_hi`` bounds."""
    at = BASE_COLUMNS.index("autoattack") + 1
    names = [*BASE_COLUMNS[:at], *columns, *BASE_COLUMNS[at:]]
    if not ci:
        return names
    with_bounds = set(PROPORTION_COLUMNS) | set(columns)
    return [part for name in names
            for part in ([name, f"{name}_lo", f"{name}_hi"] if name in with_bounds else [name])]


def is_at_baseline(checkpoint: EvaluatedModel) -> bool:
    """Whether the evaluated model was trained by an adversarial-training baseline: as its checkpoint recorded,
    or, for older result files, by the built-in method's name."""
    recorded = checkpoint.adversarial_training_baseline
    return bool(recorded) if recorded is not None else checkpoint.method in LEGACY_AT_BASELINES


#: flags that keep a model out of "best AT" (the Δ column's baseline) and out of any reference (docs/flags.md)
PROTECTING_FLAGS = ("catastrophic-overfitting", "training-overfitting", "gradient-free-beats-gradient",
                    BELOW_EXPECTED_RANGE)


def is_flagged(flags: Any) -> bool:
    """Whether a row's flags include one that protects the ranking (:data:`PROTECTING_FLAGS`)."""
    return bool(flags) and any(code in PROTECTING_FLAGS for code in str(flags).split(","))


def rank_table(frame: pd.DataFrame, ci: bool = False, sets: list[ReferenceSet] | None = None) -> pd.DataFrame:
    """Sort one (dataset, protocol) table, number its rows and add the Δ column.

    Without scores (no profile, or no reference set for the rows), rows are sorted by unknown worst (then
    AutoAttack, clean, name). With the unknown-attack profile and a reference set, the table gains the profile's
    columns (:func:`profile_columns`) and is sorted by the common-unknown score (then AutoAttack, clean, name):
    the defenses are compared on the same ranked threat models, none of which any of them trained against. Ranks
    have ties: a row whose paired-bootstrap difference with the first row of its group is not significant shares
    its rank (:func:`midbench.evaluation.scoring.ranks_with_ties`). The Δ column compares with the best
    adversarial-training baseline that carries no protecting flag (:data:`PROTECTING_FLAGS`).
    """
    has_profile = "profile" in frame and any(isinstance(value, dict) for value in frame["profile"])
    if has_profile:
        frame = profile_columns(frame, ci, sets)
    scored = has_profile and frame["common_unknown_score"].notna().any()
    metric = "common_unknown_score" if scored else "unknown_worst"
    order = [metric, "autoattack", "clean", "name"]
    table = frame.sort_values(order, ascending=[False, False, False, True], na_position="last", kind="stable")
    table = table.reset_index(drop=True)
    if scored:
        ranks = scoring.ranks_with_ties(list(table["_common_values"]), [str(h) for h in table["indices_sha256"]])
    else:
        ranks = list(range(1, len(table) + 1))
    table.insert(0, "rank", ranks)
    delta = DELTA_COLUMN[metric]
    eligible = table["at_baseline"].astype(bool) & ~table["flags"].map(is_flagged)
    baselines = table[eligible][metric].dropna()
    best = baselines.max() if not baselines.empty else None
    table[delta] = [None if best is None or pd.isna(value) else round(value - best, 2) for value in table[metric]]
    table[delta] = table[delta].astype(float)
    excluded = sorted(str(name) for name, at, flags in zip(table["name"], table["at_baseline"], table["flags"],
                                                            strict=True) if bool(at) and is_flagged(flags))
    table.attrs["excluded_from_best_at"] = excluded
    return table


def _reference_sets(frame: pd.DataFrame, references: list[str | Path] | tuple[str | Path, ...]) -> list[ReferenceSet]:
    """The user's reference sets, each checked against the rows it should score, then the shipped ones.

    Raises:
        UsageError: a user's set that covers no row of the results (another dataset or architecture family).
    """
    sets = reference_sets(references)
    rows = list(zip(frame["dataset"], frame["arch"], strict=True))
    for reference in sets[:len(references)]:
        if not any(reference.covers(str(ds), None if pd.isna(arch) else str(arch)) for ds, arch in rows):
            ds, arch = next(((d, a) for d, a in rows if str(d) in reference.datasets), rows[0])
            check_reference_set(reference, str(ds), None if pd.isna(arch) else str(arch))
    return sets


def ranked_frames(results_dir: str | Path, dataset: str | None = None, columns: list[str] | None = None,
                  ci: bool = False, references: list[str | Path] | tuple[str | Path, ...] = ()
                  ) -> dict[tuple[str, str], pd.DataFrame]:
    """Every (dataset, protocol) table ranked by :func:`rank_table`, with all its columns — the per-example values
    behind the scores (``_common_values``, ``_unknown_values``, ``_ua_values``, ``_survivors``) included;
    :func:`tables` selects what a reader sees, :mod:`midbench.reporting.seeds` combines them across seeds."""
    frame = collect(results_dir, dataset, parse_columns(columns))
    if frame.empty:
        return {}
    sets = _reference_sets(frame, references)
    return {(str(ds), str(protocol)): rank_table(group, ci, sets)
            for (ds, protocol), group in frame.groupby(["dataset", "protocol"], sort=True)}


def tables(results_dir: str | Path, dataset: str | None = None, columns: list[str] | None = None,
           ci: bool = False, references: list[str | Path] | tuple[str | Path, ...] = ()
           ) -> dict[tuple[str, str], pd.DataFrame]:
    """The ranked tables, keyed by (dataset, protocol); mixed protocols never share a table. Each table's
    headline (:data:`HEADLINE_COLUMNS`, with every interval) is in ``table.attrs["headline"]``.

    Args:
        references: reference sets (folders written by ``midbench calibrate``) to score with, before the shipped
            ones.
    """
    columns = parse_columns(columns)
    chosen = table_columns(columns, ci)
    ranked = {}
    for (ds, protocol), table in ranked_frames(results_dir, dataset, columns, ci, references).items():
        # the profile's columns, when the table has them: scores after AutoAttack (and its bounds), curves last
        scores = [name for name in table.columns if name.startswith("score_")]
        if scores:
            scores += SCORE_COLUMNS
        after = chosen.index("autoattack") + (3 if ci else 1)
        curves = [name for name in table.columns if name.startswith("curve_")]
        scored_delta = DELTA_COLUMN["common_unknown_score"]
        rest = [scored_delta if scored_delta in table.columns and name == DELTA_COLUMN["unknown_worst"] else name
                for name in chosen[after:]]
        selected = table[[*chosen[:after], *scores, *rest, *curves]]
        headline = [name for name in HEADLINE_COLUMNS if name in table.columns]
        # records, not a frame: pandas compares attrs when tables are concatenated
        selected.attrs["headline"] = table[[part for name in headline for part in
                                            ([name, f"{name}_lo", f"{name}_hi"] if f"{name}_lo" in table.columns
                                             else [name])]].to_dict(orient="records")
        ranked[(ds, protocol)] = selected
    return ranked


def profile_notes(table: pd.DataFrame, intervals: bool = True) -> list[str]:
    """What a table's profile scores are measured against (empty without a profile); ``intervals``: with the
    sentence on a single seed's intervals and ties (a table across seeds says its own)."""
    if "reference_sets" not in table.attrs:
        return []
    sets = table.attrs["reference_sets"]
    common = ", ".join(table.attrs.get("common_unknown") or []) or "none"
    notes = []
    if sets:
        notes.append("Scores: Σ accuracy / Σ ATA over each threat model's ladder (nested worst case per example), "
                     "ATA being the fixed reference set " + ", ".join(sets) + " (models adversarially trained "
                     "against each threat model; `midbench calibrate`), never another row of this table."
                     + (" Intervals: 95% bootstrap over examples. Rows share a rank where their paired difference "
                        "with the first row of the group is not significant." if intervals else ""))
    else:
        notes.append("No reference set matches these rows (dataset, architecture, ladders and attacks), so they have "
                     "no scores: the curves are raw accuracies (calibrate references with `midbench calibrate`).")
    notes += table.attrs.get("score_notes") or []
    unranked = ", ".join(table.attrs.get("unranked") or [])
    notes.append(f"Common-unknown threat models (ranked, seen by no model of this table): {common}."
                 + (f" Reported but never ranked (a floor, not an adversary): {unranked}." if unranked else "")
                 + (" Ranked by the common-unknown score, then AutoAttack, then clean." if sets else ""))
    excluded = table.attrs.get("excluded_from_best_at") or []
    if excluded:
        notes.append("Excluded from best AT (flagged, docs/flags.md): " + ", ".join(excluded) + ".")
    return notes


def headline_headers(table: pd.DataFrame, protocol: str) -> dict[str, str]:
    """The headline's column headers; under transfer the AutoAttack column names the model it was crafted on."""
    headers = {name: header(name) for name in table.columns}
    source = protocol.partition("(")[2].rstrip(")") if protocol.startswith("transfer") else ""
    if source:
        headers["autoattack"] = f"AutoAttack crafted on {source} %"
    return headers


def render(results_dir: str | Path, fmt: str = "markdown", dataset: str | None = None,
           columns: list[str] | None = None, ci: bool = False,
           references: list[str | Path] | tuple[str | Path, ...] = ()) -> str:
    """The leaderboard as text in ``fmt``: markdown, LaTeX and HTML hold one table per dataset and protocol;
    CSV is one file with ``dataset`` and ``protocol`` columns (ranks within each table); JSON is a list of
    tables, each ``{"dataset", "protocol", "rows": [records]}`` with numbers as numbers and ``null`` for
    missing values. With the unknown-attack profile, markdown shows each table's headline (rank, name, clean,
    AutoAttack, common-unknown score, UA mean, flags, every cell with its interval) above the detail table."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; use {', '.join(FORMATS)}")
    ranked = tables(results_dir, dataset, columns, ci, references)
    if not ranked:
        where = Path(results_dir) / "runs"
        only = f" for dataset {dataset!r}" if dataset else ""
        raise UsageError(f"no complete result files under {where}{only}; run `midbench eval` first")
    if fmt in ("csv", "json"):
        return tables_as_data(ranked, fmt)
    blocks = []
    for (ds, protocol), table in ranked.items():
        notes = profile_notes(table)
        # the full curves are for machines (CSV, JSON); a table for people shows their scores
        shown = display_frame(table.drop(columns=[c for c in table.columns if c.startswith("curve_")]), ci)
        headline = pd.DataFrame(table.attrs.get("headline") or [])
        caption = f"{ds} — {protocol}"
        if fmt == "markdown":
            top = (markdown_table(display_frame(headline, ci=True), headline_headers(headline, protocol))
                   if "common_unknown_score" in headline else None)
            blocks.append(markdown_block(caption, markdown_table(shown), notes, top))
        elif fmt == "latex":
            blocks.append(latex_table(shown, caption))
        else:
            blocks.append(html_table(shown, caption))
    return tables_as_text(blocks, fmt, "leaderboard")
