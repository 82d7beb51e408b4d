"""``midbench leaderboard``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded


@guarded
def leaderboard_command(
    results_dir: Annotated[Path, typer.Option(help="Directory holding runs/<dataset>/*.json.")] = Path("results"),
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    output_format: Annotated[str, typer.Option("--format", help="markdown (default) or csv.")] = "markdown",
    output: Annotated[Path | None, typer.Option(help="Write to this file (atomically) instead of the terminal.")] = None,
) -> None:
    """Rank every evaluated model: one table per dataset and protocol.

    Example: midbench leaderboard --format csv --output results/leaderboard.csv
    """
    from midbench.fileio import atomic_write_text
    from midbench.leaderboard import render

    text = render(results_dir, output_format, dataset)
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        atomic_write_text(output, text)
        print(f"leaderboard: {output}")
