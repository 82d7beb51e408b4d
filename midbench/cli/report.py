"""``midbench report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded
from midbench.cli._options import RESULTS_DIR, ResultsDir


@guarded
def report_command(
    results_dir: ResultsDir = RESULTS_DIR,
    out: Annotated[Path | None, typer.Option(help="The HTML file (default <results-dir>/report.html).")] = None,
    title: Annotated[str | None, typer.Option(help="The page's title.")] = None,
) -> None:
    """Write one self-contained HTML page of a results directory: sortable leaderboards, flags, figures, one
    section per model and the commands that made the results. It loads nothing from the network.

    Example: midbench report --results-dir results/mnist5k --out report.html
    """
    import sys

    from midbench.reporting.html import write_report

    path, skipped = write_report(results_dir, out, title)
    for line in skipped:
        print(f"midbench: warning: {line}", file=sys.stderr)
    print(f"report: {path}")
