"""Leaderboards: every result file under a results directory → one table per dataset and protocol.

Columns (docs/evaluation.md, "Leaderboards"): rank, name, method, arch, protocol, clean, known mean, known worst,
unknown mean, unknown worst, AutoAttack, Δ unknown-worst vs the best adversarial-training baseline of the same
table, flags, n, ε; optionally one robust-accuracy column per requested attack (``columns``). Accuracies are
percentages rounded to two decimals, identical in every format (markdown, CSV, LaTeX, HTML, JSON). Rows are sorted
by unknown worst (then AutoAttack, then clean). A table with unknown-attack profiles gains their columns, is
sorted by the common-unknown score, and its Δ column compares that score instead (:func:`rank_table`).

The rows come from :mod:`midbench.reporting.rows`: every number is recomputed from the per-example matrices, and
the runs of one checkpoint on the same examples are one row.

With ``ci`` every proportion (clean, known/unknown worst, AutoAttack, per-attack columns) carries its 95% Wilson
interval: ``12.3 [10.1, 14.8]`` in markdown, LaTeX and HTML, extra ``<column>_lo``/``<column>_hi`` columns in CSV
and JSON. The means over attacks are not proportions of examples and have none.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from midbench.errors import UsageError
from midbench.evaluation import scoring
from midbench.evaluation.expected import BELOW_EXPECTED_RANGE
from midbench.evaluation.metrics import (
    wilson_interval,
)
from midbench.evaluation.references import ReferenceSet, check_reference_set, covering_sets, reference_sets
from midbench.reporting.columns import (
    BASE_COLUMNS,
    HEADLINE_COLUMNS,
    PROPORTION_COLUMNS,
    SCORE_COLUMNS,
)
from midbench.reporting.formats import TableFormat, values
from midbench.reporting.rows import collect, parse_columns
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
#: the Δ-vs-best-baseline column of a table ranked by each metric
DELTA_COLUMN = {"unknown_worst": "delta_unknown_worst_vs_at", "common_unknown_score": "delta_common_unknown_vs_at"}


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
