"""``midbench datasets list``."""

from __future__ import annotations

import typer

from midbench.cli._common import console, guarded

datasets_app = typer.Typer(no_args_is_help=True, help="Registered datasets.")


@datasets_app.command("list")
@guarded
def datasets_list() -> None:
    """List datasets with shape, classes and default ε.

    Example: midbench datasets list
    """
    from rich.table import Table

    from midbench.data.datasets import DATASETS

    table = Table(title="datasets")
    for column in ("id", "shape", "classes", "ε L∞", "ε L2", "ε L1", "source"):
        table.add_column(column)
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        table.add_row(name, "×".join(map(str, spec.input_shape)), str(spec.num_classes), f"{spec.eps['Linf']:.4g}",
                      f"{spec.eps['L2']:g}", f"{spec.eps['L1']:g}", spec.description)
    console().print(table)
