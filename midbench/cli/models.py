"""``midbench models list``."""

from __future__ import annotations

import typer

from midbench.cli._common import guarded

models_app = typer.Typer(no_args_is_help=True, help="Registered architectures.")


@models_app.command("list")
@guarded
def models_list() -> None:
    """List architectures.

    Example: midbench models list
    """
    from midbench.models.factory import MODELS

    for name in MODELS.names():
        print(f"{name:18} {MODELS.get(name).description}")
