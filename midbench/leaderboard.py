"""Leaderboards: every result file under a results directory → one table per dataset and protocol.

Columns (evaluation.md, "Leaderboard"): rank, name, method, arch, protocol, clean, known mean, known worst,
unknown mean, unknown worst, AutoAttack, Δ unknown-worst vs the best adversarial-training baseline of the same
table, flags, n, ε. Accuracies are percentages rounded to two decimals, identical in every format. Rows are
sorted by unknown worst (then AutoAttack, then clean). When one checkpoint was evaluated several times with the
same protocol, data and attacks, only the newest result counts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from midbench.errors import UsageError
from midbench.evaluation.results import read_result

FORMATS = ("markdown", "csv")
#: methods that count as adversarial-training baselines for the Δ column
AT_BASELINES = ("pgd-at", "trades", "mart", "fast-at", "msd", "avg", "max")
ACCURACY_COLUMNS = ["clean", "known_mean", "known_worst", "unknown_mean", "unknown_worst", "autoattack"]
COLUMNS = ["rank", "name", "method", "arch", "protocol", *ACCURACY_COLUMNS, "delta_unknown_worst_vs_at",
           "flags", "n", "eps_linf"]
HEADERS = {"rank": "rank", "name": "name", "method": "method", "arch": "arch", "protocol": "protocol",
           "clean": "clean %", "known_mean": "known mean %", "known_worst": "known worst %",
           "unknown_mean": "unknown mean %", "unknown_worst": "unknown worst %", "autoattack": "AutoAttack %",
           "delta_unknown_worst_vs_at": "Δ unknown worst vs best AT", "flags": "flags", "n": "n",
           "eps_linf": "ε (L∞)"}


def _percent(value: float | None) -> float | None:
    return None if value is None else round(100.0 * float(value), 2)


def collect(results_dir: str | Path, dataset: str | None = None) -> pd.DataFrame:
    """One row per (newest) result file under ``results_dir/runs``; an empty frame if there are none."""
    rows: list[dict[str, Any]] = []
    for path in sorted(Path(results_dir).glob("runs/**/*.json")):
        result = read_result(path)
        if result is None:
            continue
        if dataset is not None and result["data"]["dataset"] != dataset:
            continue
        summary = result.get("summary", {})
        protocol = result["protocol"]["name"]
        source = (result["protocol"].get("source") or {}).get("name")
        rows.append({
            "name": result["checkpoint"].get("name"), "method": result["checkpoint"].get("method"),
            "arch": result["checkpoint"].get("arch"), "dataset": result["data"]["dataset"],
            "protocol": f"{protocol} ({source})" if source else protocol,
            "clean": _percent(result.get("clean_accuracy")),
            **{key: _percent(summary.get(key)) for key in ACCURACY_COLUMNS[1:]},
            "flags": ",".join(flag["code"] for flag in result.get("flags", [])),
            "n": result["data"]["n_examples"], "eps_linf": result["data"].get("eps", {}).get("Linf"),
            "created": result["created"], "run_id": result["run_id"],
            "_key": (result["checkpoint"].get("sha256"), result["data"]["dataset"], protocol, source,
                     result["data"].get("indices_sha256"),
                     tuple((a["id"], a["eps"], json.dumps(a.get("params"), sort_keys=True))
                           for a in result["attacks"])),
        })
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame.sort_values("created").drop_duplicates("_key", keep="last").drop(columns="_key")
    return frame


def rank_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort one (dataset, protocol) table, number its rows and add the Δ column."""
    table = frame.sort_values(["unknown_worst", "autoattack", "clean"], ascending=False, na_position="last")
    table = table.reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    baselines = table[table["method"].isin(AT_BASELINES)]["unknown_worst"].dropna()
    best = baselines.max() if not baselines.empty else None
    table["delta_unknown_worst_vs_at"] = [
        None if best is None or pd.isna(value) else round(value - best, 2) for value in table["unknown_worst"]]
    return table


def tables(results_dir: str | Path, dataset: str | None = None) -> dict[tuple[str, str], pd.DataFrame]:
    """The ranked tables, keyed by (dataset, protocol)."""
    frame = collect(results_dir, dataset)
    if frame.empty:
        return {}
    return {(str(ds), str(protocol)): rank_table(group)[COLUMNS]
            for (ds, protocol), group in frame.groupby(["dataset", "protocol"], sort=True)}


def render(results_dir: str | Path, fmt: str = "markdown", dataset: str | None = None) -> str:
    """The leaderboard as text in ``fmt`` (markdown: one table per dataset and protocol; csv: one file with
    ``dataset`` and ``protocol`` columns, ranks within each table)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; use {', '.join(FORMATS)}")
    ranked = tables(results_dir, dataset)
    if not ranked:
        raise UsageError(f"no result files under {Path(results_dir) / 'runs'}; run `midbench eval` first")
    if fmt == "csv":
        parts = [table.assign(dataset=ds)[["dataset", *COLUMNS]] for (ds, _), table in ranked.items()]
        return pd.concat(parts, ignore_index=True).to_csv(index=False)
    blocks = []
    for (ds, protocol), table in ranked.items():
        shown = table.rename(columns=HEADERS).astype(object).where(table.notna().to_numpy(), "—")
        blocks.append(f"### {ds} — {protocol}\n\n" + shown.to_markdown(index=False, floatfmt="g") + "\n")
    return "\n".join(blocks)
