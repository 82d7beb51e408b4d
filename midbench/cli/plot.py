"""``midbench plot``."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded
from midbench.cli._options import RESULTS_DIR, ResultsDir


class PlotKind(str, enum.Enum):
    """What ``midbench plot`` draws (descriptions in :data:`midbench.reporting.plots.KINDS`)."""

    CURVES = "curves"
    HEATMAP = "heatmap"
    PROTOCOLS = "protocols"
    TRADEOFF = "tradeoff"
    SWEEPS = "sweeps"
    ALL = "all"


@guarded
def plot_command(
    kind: Annotated[PlotKind, typer.Argument(help="curves (accuracy against strength per threat model), heatmap "
                                                  "(models × attacks), protocols (white-box against transfer), "
                                                  "tradeoff (clean against the unknown score), sweeps "
                                                  "(--check-eps/--check-steps), or all.")],
    out: Annotated[Path, typer.Option(help="The figure file (.png, .svg or .pdf), or a folder for several "
                                           "figures.")],
    results_dir: ResultsDir = RESULTS_DIR,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    protocol: Annotated[str | None, typer.Option(help="Only this protocol (whitebox, transfer).")] = None,
    figure_format: Annotated[str, typer.Option("--format", help="png, svg or pdf, when --out is a folder.")] = "svg",
) -> None:
    """Draw figures from the result files (matplotlib; the format follows --out's suffix).

    One figure per dataset and protocol; with several, --out FILE becomes FILE's stem plus the dataset and
    protocol. Every point is recomputed from the per-example matrices, with its 95% Wilson interval.

    Example: midbench plot curves --results-dir results/mnist5k --out figures/curves.svg
    """
    import sys
    import warnings

    from midbench.errors import UsageError
    from midbench.reporting.plots import KINDS, figures, load_tables, write_figures
    from midbench.reporting.plots.draw import FORMATS
    from midbench.reporting.rows import LeaderboardWarning

    if figure_format not in FORMATS:
        raise UsageError(f"--format {figure_format!r}: use one of {', '.join(FORMATS)}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeaderboardWarning)
        try:
            tables = load_tables(results_dir, dataset, protocol)
        finally:
            for warning in caught:
                print(f"midbench: warning: {warning.message}", file=sys.stderr)
    kinds = list(KINDS) if kind is PlotKind.ALL else [kind.value]
    drawn = figures(tables, kinds)
    if not drawn:
        raise UsageError(f"the results under {results_dir} have nothing to draw as {kind.value}: "
                         f"{KINDS.get(kind.value, 'any figure')} needs results that have it")
    for path in write_figures(drawn, out, figure_format):
        print(f"figure: {path}")
