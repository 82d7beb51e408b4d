"""``midbench compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded
from midbench.reporting.formats import ComparisonFormat


@guarded
def compare_command(
    results: Annotated[list[Path], typer.Argument(help="Result files (results/runs/<dataset>/<run_id>.json).")],
    output_format: Annotated[ComparisonFormat, typer.Option("--format", help="markdown, csv or json.")] = ComparisonFormat.MARKDOWN,
    output: Annotated[Path | None, typer.Option(help="Write to this file (atomically) instead of the terminal.")] = None,
) -> None:
    """Compare chosen runs side by side: one column per run, one row per metric (percent).

    Rows are clean accuracy, every attack any run evaluated, and the summary metrics (known/unknown mean and
    worst, all worst, AutoAttack); columns are labelled 'name (protocol)'.

    Example: midbench compare results/runs/mnist5k/mid__whitebox__*.json results/runs/mnist5k/mid__transfer__*.json
    """
    from midbench.fileio import atomic_write_text
    from midbench.reporting.compare import render

    text = render(list(results), output_format.value)
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        atomic_write_text(output, text)
        print(f"comparison: {output}")
