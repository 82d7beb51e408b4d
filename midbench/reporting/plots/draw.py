"""The figures, drawn with matplotlib's object-oriented API (no pyplot: no global state, no display needed).

Style: the Okabe–Ito palette (Okabe & Ito, "Color Universal Design", 2008; safe for the common colour-vision
deficiencies) with a distinct marker per model, so a figure also reads in black and white; viridis for the
heatmap; every axis says its unit and the number of examples. The format follows the file's suffix (PNG, SVG,
PDF). Each drawn series carries a ``gid`` naming what it shows (``curve|<threat model>|<model>``, …), so that a
test can read the plotted points back and compare them with the result files.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from midbench.errors import UsageError
from midbench.fileio import atomic_write_with
from midbench.reporting.plots.data import (
    PROTOCOL_METRICS,
    CheckSweep,
    CurvePanel,
    Heatmap,
    ProtocolBars,
    Table,
    TradeoffPoint,
    tradeoff_metric,
)

#: Okabe & Ito (2008), yellow last (faint on white)
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FORMATS = ("png", "svg", "pdf")
STYLE = {"font.size": 9, "axes.titlesize": 10, "axes.labelsize": 9, "legend.fontsize": 8, "axes.grid": True,
         "grid.alpha": 0.3, "axes.spines.top": False, "axes.spines.right": False, "svg.hashsalt": "midbench",
         "savefig.bbox": "tight"}


def _figure(width: float, height: float, dpi: int = 150) -> Figure:
    from matplotlib import rc_context

    with rc_context(STYLE):
        return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def _style(model_index: int) -> dict[str, object]:
    return {"color": PALETTE[model_index % len(PALETTE)], "marker": MARKERS[model_index % len(MARKERS)]}


def _model_styles(names: list[str]) -> dict[str, dict[str, object]]:
    """One colour and marker per model, the same in every panel of a figure."""
    return {name: _style(index) for index, name in enumerate(dict.fromkeys(names))}


def curves_figure(table: Table, panels: list[CurvePanel]) -> Figure:
    """Accuracy against relative strength, one panel per threat model, one line per model with its 95% band;
    a threat model the model was trained against (seen) is dashed with hollow markers."""
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = _figure(3.2 * columns, 2.6 * rows + 0.4)
    with _rc():
        axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
        styles = _model_styles([curve.model for panel in panels for curve in panel.curves])
        for ax, panel in zip(axes.flat, panels, strict=False):
            for curve in panel.curves:
                style = styles[curve.model]
                accuracy = [point.value for point in curve.points]
                ax.fill_between(curve.strengths, [p.low for p in curve.points], [p.high for p in curve.points],
                                color=style["color"], alpha=0.15, linewidth=0)
                line, = ax.plot(curve.strengths, accuracy, linestyle="--" if curve.seen else "-",
                                markerfacecolor="white" if curve.seen else style["color"], markersize=4,
                                label=curve.model + (" (seen)" if curve.seen else ""), **style)
                line.set_gid(f"curve|{panel.threat_model}|{curve.model}")
            ax.set_title(panel.threat_model)
            ax.set_xlabel("strength (fraction of the full budget)")
            ax.set_ylim(-2, 102)
        n = panels[0].curves[0].points[0].n
        for ax in axes[:, 0]:
            ax.set_ylabel(f"robust accuracy (%, n = {n})")
        for ax in list(axes.flat)[len(panels):]:
            ax.set_visible(False)
        _legend(figure, styles, "dashed, hollow: a threat model the model was trained against")
        figure.suptitle(f"Unknown-attack profile — {table.title}")
    return figure


def heatmap_figure(table: Table, data: Heatmap) -> Figure:
    """Robust accuracy of each model under each attack: the attacks known to the model (its training attacks)
    in the left block, the unknown ones in the right; blank where a model was not evaluated so."""
    widths = [max(1, len(attacks)) for attacks, _ in data.blocks.values()]
    figure = _figure(max(4.5, 0.34 * sum(widths) + 3.0), max(3.0, 0.35 * len(data.models) + 2.0))
    with _rc():
        axes = figure.subplots(1, len(data.blocks), squeeze=False, sharey=True,
                               gridspec_kw={"width_ratios": widths})[0]
        image = None
        for ax, (split, (attacks, values)) in zip(axes, data.blocks.items(), strict=True):
            image = ax.imshow(np.ma.masked_invalid(values), cmap="viridis", vmin=0, vmax=100, aspect="auto")
            image.set_gid(f"heatmap|{split}")
            ax.set_xticks(range(len(attacks)), attacks, rotation=60, ha="right", fontsize=7)
            ax.set_yticks(range(len(data.models)), data.models)
            ax.grid(False)
            ax.set_facecolor("#f2f2f2")
            if values.size <= 1500:
                for (i, j), value in np.ndenumerate(values):
                    if not np.isnan(value):
                        ax.text(j, i, f"{value:.0f}", ha="center", va="center", fontsize=6,
                                color="black" if value > 60 else "white")
            ax.set_title(f"{split} attacks ({len(attacks)})", fontsize=9)
        figure.colorbar(image, ax=list(axes), label=f"robust accuracy (%, n = {max(data.n)})", shrink=0.9)
        figure.suptitle(f"Robust accuracy per attack — {table.title}")
    return figure


def protocols_figure(data: ProtocolBars) -> Figure:
    """Paired bars per model, white-box next to each transfer protocol, one panel per metric, 95% intervals."""
    figure = _figure(max(4.0, (0.7 * len(data.models) + 1.5) * len(data.metrics)), 3.4)
    with _rc():
        axes = figure.subplots(1, len(data.metrics), squeeze=False, sharey=True)[0]
        width = 0.8 / len(data.protocols)
        for ax, metric in zip(axes, data.metrics, strict=True):
            for k, protocol in enumerate(data.protocols):
                xs, heights, errors, names = [], [], [[], []], []
                for i, model in enumerate(data.models):
                    value = data.values.get((model, protocol, metric))
                    if value is None:
                        continue
                    names.append(model)
                    xs.append(i + (k - (len(data.protocols) - 1) / 2) * width)
                    heights.append(value.value)
                    errors[0].append(value.value - value.low)
                    errors[1].append(value.high - value.value)
                bars = ax.bar(xs, heights, width, yerr=errors, capsize=2, color=PALETTE[k % len(PALETTE)],
                              hatch=None if k == 0 else "//", edgecolor="white", label=protocol)
                for bar, model in zip(bars, names, strict=True):
                    bar.set_gid(f"protocol|{metric}|{protocol}|{model}")
            ax.set_xticks(range(len(data.models)), data.models, rotation=30, ha="right")
            ax.set_title(PROTOCOL_METRICS[metric])
            ax.set_ylim(0, 105)
        n = next(iter(data.values.values())).n
        axes[0].set_ylabel(f"robust accuracy (%, n = {n})")
        handles, labels = axes[0].get_legend_handles_labels()
        figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), frameon=False)
        figure.suptitle(f"White-box against transfer — {data.dataset}")
    return figure


def tradeoff_figure(table: Table, points: list[TradeoffPoint]) -> Figure:
    """Clean accuracy against robustness to unknown attacks, one point per model (95% interval of the clean
    accuracy); adversarial-training baselines as squares."""
    _, axis_name = tradeoff_metric(table)
    figure = _figure(4.6, 3.6)
    with _rc():
        ax = figure.subplots()
        for index, point in enumerate(points):
            color = PALETTE[index % len(PALETTE)]
            clean = point.clean
            error = [[clean.value - clean.low], [clean.high - clean.value]]
            container = ax.errorbar([point.score], [clean.value], yerr=error,
                                    marker="s" if point.at_baseline else "o", color=color, capsize=2, markersize=6)
            container.lines[0].set_gid(f"tradeoff|{point.model}")
            ax.annotate(point.model, (point.score, point.clean.value), textcoords="offset points", xytext=(5, 4),
                        fontsize=7)
        ax.set_xlabel(axis_name)
        n = points[0].clean.n if points else 0
        ax.set_ylabel(f"clean accuracy (%, n = {n})")
        ax.set_title(f"Accuracy against unknown-attack robustness — {table.title}", fontsize=9)
        ax.text(0.99, 0.01, "square: adversarial-training baseline", transform=ax.transAxes, ha="right",
                va="bottom", fontsize=7)
    return figure


def sweeps_figure(table: Table, data: list[CheckSweep]) -> Figure:
    """PGD accuracy against ε and against the number of steps (``--check-eps``/``--check-steps``): both should
    fall or stay flat; a rise flags a weak attack or masked gradients (Carlini et al. 2019, §5)."""
    kinds = [kind for kind in ("eps", "steps") if any(sweep.kind == kind for sweep in data)]
    figure = _figure(3.4 * len(kinds), 3.0)
    with _rc():
        axes = figure.subplots(1, len(kinds), squeeze=False)[0]
        styles = _model_styles([sweep.model for sweep in data])
        for ax, kind in zip(axes, kinds, strict=True):
            for sweep in [s for s in data if s.kind == kind]:
                style = styles[sweep.model]
                ax.fill_between(sweep.x, [p.low for p in sweep.points], [p.high for p in sweep.points],
                                color=style["color"], alpha=0.15, linewidth=0)
                line, = ax.plot(sweep.x, [p.value for p in sweep.points], markersize=4, label=sweep.model, **style)
                line.set_gid(f"sweep|{kind}|{sweep.model}")
            chosen = [s for s in data if s.kind == kind]
            ax.set_xlabel("ε (L∞)" if kind == "eps" else "PGD steps")
            ax.set_ylabel(f"{chosen[0].attack} accuracy (%, n = {chosen[0].points[0].n})")
            if kind == "steps":
                ax.set_xscale("log")
            ax.set_ylim(-2, 102)
        _legend(figure, styles)
        figure.suptitle(f"Sanity sweeps — {table.title}")
    return figure


def _legend(figure: Figure, styles: dict[str, dict[str, object]], note: str | None = None) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], markersize=4, label=name, **style) for name, style in styles.items()]
    legend = figure.legend(handles=handles, loc="outside lower center", ncols=min(4, len(handles)), frameon=False,
                           title=note, title_fontsize=7)
    legend.set_gid("legend")


def _rc():  # noqa: ANN202 - a context manager
    from matplotlib import rc_context

    return rc_context(STYLE)


def save(figure: Figure, path: Path) -> Path:
    """Write ``figure`` in the format of ``path``'s suffix, atomically.

    Raises:
        UsageError: a suffix other than .png, .svg or .pdf.
    """
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise UsageError(f"cannot tell the figure format from {path.name!r}; end the file name in "
                         + ", ".join(f".{name}" for name in FORMATS))
    with _rc():
        atomic_write_with(path, lambda handle: figure.savefig(handle, format=suffix,
                                                              metadata=_reproducible_metadata(suffix)))
    return path


def svg_text(figure: Figure) -> str:
    """The figure as an inline ``<svg>`` element (no XML declaration), for the HTML report."""
    buffer = io.StringIO()
    with _rc():
        figure.savefig(buffer, format="svg", metadata=_reproducible_metadata("svg"))
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _reproducible_metadata(suffix: str) -> dict[str, object] | None:
    """No creation date in the file, so the same results give the same bytes (committed figures diff cleanly)."""
    if suffix == "svg":
        return {"Date": None}
    if suffix == "pdf":
        return {"CreationDate": None, "ModDate": None}
    return None


def examples_figure(images: np.ndarray, row_labels: list[str], column_labels: list[list[str]] | None,
                    title: str) -> Figure:
    """A grid of images (rows × columns × H × W × C in [0, 1]): one row per strength, one column per test image;
    ``column_labels[r][c]`` captions a cell (the model's prediction), when given."""
    rows, columns = images.shape[:2]
    # 100 dpi: 28-pixel images gain nothing from more, and the files stay small enough to commit
    figure = _figure(0.9 * columns + 0.9, 0.95 * rows + 0.4, dpi=100)
    axes = figure.subplots(rows, columns, squeeze=False)
    for r in range(rows):
        for c in range(columns):
            axis = axes[r][c]
            picture = images[r, c]
            grey = picture.shape[-1] == 1
            axis.imshow(picture[..., 0] if grey else picture, cmap="gray" if grey else None, vmin=0.0, vmax=1.0,
                        interpolation="nearest")
            axis.set_xticks([])
            axis.set_yticks([])
            axis.grid(False)
            if column_labels is not None:
                axis.set_title(column_labels[r][c], fontsize=7, pad=2)
            if c == 0:
                axis.set_ylabel(row_labels[r], fontsize=8)
    figure.suptitle(title, fontsize=9)
    return figure
