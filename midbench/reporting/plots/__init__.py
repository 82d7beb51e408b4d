"""Figures from result files: robustness curves, the attack heatmap, white-box against transfer, the
accuracy–robustness trade-off and the sanity sweeps (``midbench plot``, and the HTML report).

:mod:`midbench.reporting.plots.data` computes what each figure shows from the leaderboard's per-example matrices;
:mod:`midbench.reporting.plots.draw` draws it with matplotlib.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

from midbench.fileio import ensure_writable_dir
from midbench.reporting.plots import data, draw
from midbench.reporting.plots.data import Table, load_tables

#: what ``midbench plot KIND`` draws
KINDS = {
    "curves": "accuracy against relative strength per threat model (the unknown-attack profile)",
    "heatmap": "robust accuracy of every model under every attack, known and unknown separated",
    "protocols": "white-box against transfer: each model's worst case under both protocols",
    "tradeoff": "clean accuracy against the unknown-attack score, one point per model",
    "sweeps": "PGD accuracy against ε and against steps (eval --check-eps/--check-steps)",
}


@dataclass
class DrawnFigure:
    """One figure with what it shows: its kind, dataset and protocol (empty when it spans protocols)."""

    kind: str
    dataset: str
    protocol: str
    figure: Figure

    @property
    def title(self) -> str:
        return f"{self.kind} — {self.dataset}" + (f" — {self.protocol}" if self.protocol else "")

    def file_stem(self) -> str:
        parts = [self.kind, self.dataset, self.protocol]
        return "-".join(re.sub(r"[^A-Za-z0-9.-]+", "_", part).strip("_") for part in parts if part)


def figures(tables: list[Table], kinds: list[str] | None = None) -> list[DrawnFigure]:
    """Every figure of ``kinds`` (default all) that the tables have data for; a kind without data (no profile,
    no transfer run, no sweep) draws nothing."""
    chosen = kinds or list(KINDS)
    drawn: list[DrawnFigure] = []
    for table in tables:
        if "curves" in chosen and (panels := data.curve_panels(table)):
            drawn.append(DrawnFigure("curves", table.dataset, table.protocol, draw.curves_figure(table, panels)))
        if "heatmap" in chosen and (matrix := data.heatmap(table)).attacks:
            drawn.append(DrawnFigure("heatmap", table.dataset, table.protocol, draw.heatmap_figure(table, matrix)))
        if "tradeoff" in chosen and (points := data.tradeoff_points(table)):
            drawn.append(DrawnFigure("tradeoff", table.dataset, table.protocol,
                                     draw.tradeoff_figure(table, points)))
        if "sweeps" in chosen and (sweeps := data.sweeps(table)):
            drawn.append(DrawnFigure("sweeps", table.dataset, table.protocol, draw.sweeps_figure(table, sweeps)))
    if "protocols" in chosen:
        drawn += [DrawnFigure("protocols", bars.dataset, "", draw.protocols_figure(bars))
                  for bars in data.protocol_bars(tables)]
    return drawn


def write_figures(drawn: list[DrawnFigure], out: Path, fmt: str | None = None) -> list[Path]:
    """Write the figures: to ``out`` itself when it names one file and there is one figure; otherwise into the
    folder ``out`` (or beside the file ``out``, its stem first) as ``<kind>-<dataset>-<protocol>.<fmt>``."""
    if out.suffix and len(drawn) == 1:
        ensure_writable_dir(out.parent)
        return [draw.save(drawn[0].figure, out)]
    if out.suffix:
        folder, prefix, suffix = out.parent, out.stem + "-", out.suffix
    else:
        folder, prefix, suffix = out, "", f".{fmt or 'svg'}"
    ensure_writable_dir(folder)
    return [draw.save(item.figure, folder / f"{prefix}{item.file_stem()}{suffix}") for item in drawn]


__all__ = ["KINDS", "DrawnFigure", "figures", "load_tables", "write_figures"]
