"""Side-by-side comparison of chosen result files (e.g. one model under the white-box and transfer protocols).

Rows: clean accuracy, every attack of any of the runs (union, in order of first appearance), then the summary
metrics; columns: one per run, labelled ``name (protocol)``. Values are percentages rounded to two decimals, as
in the leaderboard; an attack a run did not evaluate is missing (``—`` / empty / ``null``). Each column is one
run, so protocols never mix within a column.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from midbench.errors import UsageError
from midbench.evaluation.documents import SUMMARY_KEYS, AttackRow, ResultDocument, load_result_file
from midbench.reporting.formats import ComparisonFormat, values
from midbench.reporting.tables import cell_text, csv_text, json_text, markdown_table, percent, records

FORMATS = values(ComparisonFormat)


def run_label(result: ResultDocument) -> str:
    """``name (protocol)``; a transfer run names its source when it has one."""
    protocol, source = result.protocol, result.protocol.source_name
    name = result.checkpoint.name or result.run_id
    return f"{name} ({protocol.name} from {source})" if source else f"{name} ({protocol.name})"


def attack_label(row: AttackRow) -> str:
    """The attack's key; a custom configuration also shows its ε (two runs may use different ones)."""
    if row.id.endswith("@custom") and isinstance(row.eps, int | float):
        return f"{row.id} (ε={float(row.eps):.6g})"
    return row.id


def _unique(label: str, taken: Any) -> str:
    """``label``, or ``label #2``, ``label #3``… if it is already in ``taken``."""
    candidate, number = label, 1
    while candidate in taken:
        number += 1
        candidate = f"{label} #{number}"
    return candidate


def comparison(results: list[ResultDocument]) -> pd.DataFrame:
    """The comparison as a frame: a ``metric`` column, then one percentage column per run."""
    if not results:
        raise UsageError("compare needs at least one RESULT.json; e.g. midbench compare results/runs/mnist5k/*.json")
    labels: list[str] = []
    for result in results:
        label = run_label(result)
        if label in labels:  # the same model and protocol twice: tell the runs apart
            label = _unique(f"{label[:-1]}, {result.run_id})", labels)
        labels.append(label)
    values: list[dict[str, float | None]] = []
    attack_rows: list[str] = []
    for result in results:
        column: dict[str, float | None] = {"clean": percent(result.clean_accuracy)}
        for row in result.attacks:
            label = _unique(attack_label(row), column)  # two configurations under one label: keep both
            column[label] = percent(row.robust_accuracy)
            if label not in attack_rows:
                attack_rows.append(label)
        column.update({key: percent(result.summary.get(key)) for key in SUMMARY_KEYS})
        values.append(column)
    metrics = ["clean", *attack_rows, *SUMMARY_KEYS]
    frame = pd.DataFrame({"metric": metrics})
    for label, column in zip(labels, values, strict=True):
        frame[label] = pd.Series([column.get(metric) for metric in metrics], dtype=float)
    return frame


def render(paths: list[str | Path], fmt: str = "markdown") -> str:
    """The comparison of the result files ``paths`` as markdown, CSV or JSON (``{"runs": [...], "rows":
    [{"metric": ..., <label>: value}]}``)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}; use {', '.join(FORMATS)}")
    results = [load_result_file(path) for path in paths]
    frame = comparison(results)
    if fmt == "csv":
        return csv_text(frame)
    if fmt == "json":
        runs = [{"label": label, "run_id": result.run_id, "name": result.checkpoint.name,
                 "dataset": result.data.dataset, "protocol": result.protocol.name,
                 "source": result.protocol.source_name, "n": result.data.n_examples, "path": str(path)}
                for label, result, path in zip(frame.columns[1:], results, paths, strict=True)]
        return json_text({"runs": runs, "rows": records(frame)})
    shown = pd.DataFrame({name: [cell_text(value) for value in frame[name]] for name in frame.columns}, dtype=object)
    headers = {name: name if name == "metric" else f"{name} %" for name in frame.columns}
    return markdown_table(shown, headers) + "\n"
