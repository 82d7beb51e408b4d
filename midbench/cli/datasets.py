"""``midbench datasets list``."""

from __future__ import annotations

import typer

from midbench.cli._common import console, guarded

datasets_app = typer.Typer(no_args_is_help=True, help="Registered datasets.")


@datasets_app.command("list")
@guarded
def datasets_list() -> None:
    """List datasets with shape, classes and default ε ("—": none declared).

    Example: midbench datasets list
    """
    from rich.table import Table

    from midbench.data.datasets import DATASETS

    table = Table(title="datasets")
    for column in ("id", "shape", "classes", "ε L∞", "ε L2", "ε L1", "source"):
        table.add_column(column)
    for name in DATASETS.names():
        spec = DATASETS.get(name)
        budgets = [f"{spec.eps[norm]:.4g}" if norm in spec.eps else "—" for norm in ("Linf", "L2", "L1")]
        table.add_row(name, "×".join(map(str, spec.input_shape)), str(spec.num_classes), *budgets, spec.description)
    console().print(table)
    console().print("and folder:PATH, your own images in class sub-folders (docs/datasets.md)")
