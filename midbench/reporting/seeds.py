"""Tables across training seeds: one sweep replicated per seed (``seeds = [..]``, :mod:`midbench.bench.sweep_file`) →
one row per model with the mean over seeds, the spread between them and a 95% interval (docs/scoring.md).

Each replicate's results lie in ``<results>/seed-<s>/`` and are a complete table of their own
(:mod:`midbench.reporting.leaderboard`); this module reads every replicate's ranked table and combines the rows of the
same
name and protocol:

- a cell's **mean** is the mean of the replicates' values; its **spread** (``_sd``) is their sample standard
  deviation (none with one seed);
- its **interval** (``_lo``/``_hi``) is the pigeonhole bootstrap over seeds and examples of the per-example values
  behind it (:func:`midbench.evaluation.scoring.crossed_interval`): it covers the variation between training runs
  and the finite test set together, and is too narrow with 2–3 seeds when seeds vary a lot (docs/scoring.md);
- **ranks** have ties: two models are tied when the paired crossed-bootstrap interval of their difference contains
  0 (same seeds, same examples), as in a single-seed table;
- **flags** are the union over seeds, each with the number of seeds it was raised in; a model flagged in any seed is
  kept out of "best AT".

Rows are the same model's when name, test examples and ε agree (:func:`row_key`). A model present in only some
replicates is shown with the number of seeds it has (the ``seeds`` column) and is never tied.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from midbench.errors import UsageError
from midbench.evaluation import scoring
from midbench.reporting.columns import HEADLINE_COLUMNS
from midbench.reporting.formats import TableFormat, values
from midbench.reporting.leaderboard import DELTA_COLUMN, is_flagged, profile_notes, ranked_frames
from midbench.reporting.tables import (
    display_frame,
    html_table,
    latex_table,
    markdown_block,
    markdown_table,
    percent,
    tables_as_data,
    tables_as_text,
)

#: the folder of one seed's replicate under a sweep's output and results folders
SEED_FOLDER = "seed-{seed}"
_SEED_FOLDER = re.compile(r"^seed-(\d+)$")
#: cells combined across seeds: the per-example values behind each (None: a mean of percentages only)
COMBINED = {"clean": "clean", "autoattack": "autoattack", "common_unknown_score": "_common_values",
            "ua_mean": "_ua_values", "unknown_score": "_unknown_values", "known_worst": None, "unknown_worst": None}
#: the seeds of a sweep's replicates, written beside them, so a reader of the folder uses the sweep's seeds only
SEEDS_FILE = "seeds.json"


def seed_folder(seed: int) -> str:
    """``seed-<seed>``: the replicate's folder name."""
    return SEED_FOLDER.format(seed=seed)


def seed_dirs(results_dir: str | Path) -> dict[int, Path]:
    """The replicates under ``results_dir``: ``{seed: folder}`` for every ``seed-<s>/`` holding result files —
    only the seeds :data:`SEEDS_FILE` lists where the sweep wrote one (a seed dropped from the sweep's list keeps
    its folder, but leaves the table)."""
    listed: set[int] | None
    try:
        listed = {int(seed) for seed in json.loads((Path(results_dir) / SEEDS_FILE).read_text("utf-8"))["seeds"]}
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    found = {}
    for folder in sorted(Path(results_dir).glob("seed-*")):
        match = _SEED_FOLDER.match(folder.name)
        if match and folder.is_dir() and (folder / "runs").is_dir() and (listed is None or
                                                                          int(match.group(1)) in listed):
            found[int(match.group(1))] = folder
    return dict(sorted(found.items()))


def row_key(row: pd.Series) -> tuple[str, str, int, str]:
    """What makes rows of two replicates the same model's: name, test examples and ε."""
    eps = row.get("eps_linf")
    return (str(row["name"]), str(row.get("indices_sha256")), int(row.get("n") or 0),
            "" if eps is None or pd.isna(eps) else f"{float(eps):g}")


def _per_example(row: pd.Series, source: str) -> np.ndarray | None:
    """A row's per-example values behind a cell (``clean``/``autoattack`` survival, or a score's contributions)."""
    if source in ("clean", "autoattack"):
        survivors = row.get("_survivors")
        value = survivors.get(source) if isinstance(survivors, dict) else None
    else:
        value = row.get(source)
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else np.asarray(value, float)


def _combine(rows: list[pd.Series], seeds: list[int]) -> dict[str, Any]:
    """One model's row across its replicates (``rows[i]`` measured with ``seeds[i]``)."""
    first = rows[-1]
    record: dict[str, Any] = {key: first.get(key) for key in ("name", "method", "arch", "protocol", "n",
                                                             "reference", "indices_sha256")}
    record["at_baseline"] = bool(first.get("at_baseline"))
    record["seeds"] = len(rows)
    record["_seed_list"] = tuple(seeds)
    record["_hashes"] = tuple(str(row.get("indices_sha256")) for row in rows)
    for column, source in COMBINED.items():
        present = [row.get(column) for row in rows]
        if column not in first or any(value is None or pd.isna(value) for value in present):
            record[column] = record[f"{column}_sd"] = record[f"{column}_lo"] = record[f"{column}_hi"] = None
            continue
        numbers = np.array(present, dtype=float)
        record[column] = round(float(numbers.mean()), 2)
        record[f"{column}_sd"] = round(float(numbers.std(ddof=1)), 2) if len(numbers) > 1 else None
        matrix = [_per_example(row, source) for row in rows] if source else []
        if source and all(m is not None for m in matrix) and len({m.shape for m in matrix}) == 1:
            stacked = np.stack(matrix)
            low, high = scoring.crossed_interval(stacked)
            record[f"{column}_lo"], record[f"{column}_hi"] = percent(low), percent(high)
            record[f"_{column}_matrix"] = stacked
        else:
            record[f"{column}_lo"] = record[f"{column}_hi"] = None
    for name in sorted({c for row in rows for c in row.index if str(c).startswith("score_")}):
        present = [row.get(name) for row in rows]
        known = [float(v) for v in present if v is not None and not pd.isna(v)]
        record[name] = round(float(np.mean(known)), 2) if len(known) == len(rows) else None
        record[f"{name}_sd"] = round(float(np.std(known, ddof=1)), 2) if len(known) == len(rows) > 1 else None
    counts: dict[str, int] = {}
    for row in rows:
        flags = row.get("flags")
        for code in filter(None, (flags if isinstance(flags, str) else "").split(",")):
            counts[code] = counts.get(code, 0) + 1
    record["_flag_codes"] = ",".join(counts)
    record["flags"] = ", ".join(code if count == len(rows) else f"{code} ({count} of {len(rows)} seeds)"
                                for code, count in counts.items())
    return record


def seed_tables(dirs: dict[int, Path], dataset: str | None = None,
                references: list[str | Path] | tuple[str | Path, ...] = ()) -> dict[tuple[str, str], pd.DataFrame]:
    """One table per (dataset, protocol) across the replicates ``dirs`` (``{seed: results folder}``), ranked by
    the mean common-unknown score with ties (or, without scores, by the mean unknown worst case)."""
    per_seed = {seed: ranked_frames(folder, dataset, references=references) for seed, folder in dirs.items()}
    keys = sorted({key for frames in per_seed.values() for key in frames})
    combined = {}
    for key in keys:
        by_model: dict[tuple[str, str, int, str], tuple[list[pd.Series], list[int]]] = {}
        notes: dict[str, None] = {}
        commons = set()
        unscored = []
        for seed, frames in per_seed.items():
            if key not in frames:
                continue
            frame = frames[key]
            # the table across seeds names its own exclusions from best AT
            notes.update(dict.fromkeys(note for note in profile_notes(frame, intervals=False)
                                       if not note.startswith("Excluded from best AT")))
            commons.add(tuple(frame.attrs.get("common_unknown") or ()))
            if "common_unknown_score" not in frame or frame["common_unknown_score"].isna().all():
                unscored.append(seed)
            for _, row in frame.iterrows():
                rows, seeds = by_model.setdefault(row_key(row), ([], []))
                if seed in seeds:
                    raise UsageError(f"{dirs[seed]}: model {row['name']!r} has two rows on the same test examples "
                                     f"in the {key[1]} table; give each evaluation its own name")
                rows.append(row)
                seeds.append(seed)
        if unscored and len(unscored) < len(per_seed):
            notes[f"Seeds {', '.join(map(str, unscored))} have no common-unknown scores (an unfinished evaluation, "
                  "or no reference set): no model of this table is scored across seeds."] = None
        if len(commons) > 1:
            notes["The replicates rank different common-unknown threat models (" + "; ".join(
                ", ".join(common) or "none" for common in sorted(commons)) + "): their scores are not comparable."] \
                = None
        table = _rank(pd.DataFrame([_combine(rows, seeds) for rows, seeds in by_model.values()]))
        table.attrs["notes"] = [f"Across seeds {', '.join(str(s) for s in dirs)}: mean ± sample standard deviation "
                                "over seeds [95% pigeonhole bootstrap over seeds and examples]; ties where the paired "
                                "interval of a difference contains 0.", *notes]
        combined[key] = table
    return combined


def _rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort, rank with ties and add the Δ column, as :func:`midbench.reporting.leaderboard.rank_table` does for one
    seed."""
    scored = "common_unknown_score" in frame and frame["common_unknown_score"].notna().any()
    metric = "common_unknown_score" if scored else "unknown_worst"
    table = frame.sort_values([metric, "autoattack", "clean", "name"], ascending=[False, False, False, True],
                              na_position="last", kind="stable").reset_index(drop=True)
    if scored and "_common_unknown_score_matrix" in table:
        matrices = [None if not isinstance(m, np.ndarray) else m for m in table["_common_unknown_score_matrix"]]
        keys = [f"{sha}|{seeds}" for sha, seeds in zip(table["_hashes"], table["_seed_list"], strict=True)]
        ranks = scoring.ranks_with_ties(matrices, keys)
    else:
        ranks = list(range(1, len(table) + 1))
    table.insert(0, "rank", ranks)
    eligible = table["at_baseline"].astype(bool) & ~table["_flag_codes"].map(is_flagged)
    best = table[eligible][metric].dropna()
    delta = DELTA_COLUMN[metric]
    table[delta] = [None if best.empty or pd.isna(value) else round(value - best.max(), 2) for value in table[metric]]
    excluded = sorted(str(n) for n, at, codes in zip(table["name"], table["at_baseline"], table["_flag_codes"],
                                                     strict=True) if bool(at) and is_flagged(codes))
    if excluded:
        table.attrs["excluded"] = excluded
    return table


def _shown(table: pd.DataFrame, headline: bool) -> pd.DataFrame:
    """The headline (:data:`~midbench.reporting.columns.HEADLINE_COLUMNS`, ``seeds`` included) or the detail
    columns, each number with its spread and interval."""
    if headline:
        names = [name for name in HEADLINE_COLUMNS if name in table]
    else:
        scores = sorted(name for name in table if name.startswith("score_") and not name.endswith("_sd"))
        names = [name for name in ("rank", "name", "method", "seeds", "known_worst", "unknown_worst", *scores,
                                   "unknown_score", DELTA_COLUMN["common_unknown_score"],
                                   DELTA_COLUMN["unknown_worst"], "reference", "n") if name in table]
    parts = [part for name in names for part in (name, f"{name}_sd", f"{name}_lo", f"{name}_hi") if part in table]
    return display_frame(table[parts], ci=True)


def render_seeds(dirs: dict[int, Path], fmt: str = "markdown", dataset: str | None = None,
                 references: list[str | Path] | tuple[str | Path, ...] = ()) -> str:
    """The across-seed leaderboard as text: markdown, LaTeX and HTML hold a headline and a detail table per
    (dataset, protocol); CSV and JSON every column (``_sd``, ``_lo``, ``_hi`` included)."""
    if fmt not in values(TableFormat):
        raise UsageError(f"unknown format {fmt!r}; use {', '.join(values(TableFormat))}")
    ranked = seed_tables(dirs, dataset, references)
    if not ranked:
        raise UsageError(f"no complete result files under the seed folders of {', '.join(map(str, dirs.values()))}")
    if fmt in ("csv", "json"):  # every column but the hidden ones (``_``: what the ranking and flags used)
        shown = {key: table.drop(columns=[c for c in table.columns if c.startswith("_")])
                 for key, table in ranked.items()}
        return tables_as_data(shown, fmt, **({"seeds": list(dirs)} if fmt == "json" else {}))
    blocks = []
    for (ds, protocol), table in ranked.items():
        notes = table.attrs.get("notes", []) + (
            ["Excluded from best AT (flagged in at least one seed, docs/flags.md): "
             + ", ".join(table.attrs["excluded"]) + "."] if table.attrs.get("excluded") else [])
        caption = f"{ds} — {protocol} — {len(dirs)} seeds"
        headline, detail = _shown(table, True), _shown(table, False)
        if fmt == "markdown":
            blocks.append(markdown_block(caption, markdown_table(detail), notes, markdown_table(headline)))
        elif fmt == "latex":
            blocks.append(latex_table(headline, caption) + latex_table(detail, f"{caption} (detail)"))
        else:
            blocks.append(html_table(headline, caption) + html_table(detail, f"{caption} (detail)"))
    return tables_as_text(blocks, fmt, "leaderboard across seeds")


__all__ = ["seed_folder", "seed_dirs", "seed_tables", "render_seeds"]
