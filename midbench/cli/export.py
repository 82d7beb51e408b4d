"""``midbench export robustbench``: RobustBench-style model cards from result files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded

export_app = typer.Typer(no_args_is_help=True, help="Export results in other projects' formats.")


@export_app.command("robustbench")
@guarded
def robustbench_command(
    result: Annotated[Path, typer.Argument(help="A result file with AutoAttack (results/runs/<dataset>/<run_id>.json).")],
    out: Annotated[Path | None, typer.Option(help="Write the card to this JSON file (atomically) instead of the terminal.")] = None,
) -> None:
    """Write a RobustBench-style model card (name, dataset, eps, clean_acc, autoattack_acc, architecture, ...).

    The result must include AutoAttack (midbench eval --autoattack); a card of a non-white-box or flagged
    evaluation is marked unreliable, with the reason in its footnote.

    Example: midbench export robustbench results/runs/mnist5k/mid-lenet__whitebox__20261124T210000Z-a1b2c3.json --out mid-lenet.json
    """
    from midbench.fileio import atomic_write_text
    from midbench.reporting.export import export_robustbench
    from midbench.reporting.tables import json_text

    text = json_text(export_robustbench(result))
    if out is None:
        print(text, end="")
    else:
        atomic_write_text(out, text)
        print(f"robustbench card: {out}")
