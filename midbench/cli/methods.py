"""``midbench methods list``."""

from __future__ import annotations

import typer

from midbench.cli._common import guarded

methods_app = typer.Typer(no_args_is_help=True, help="Registered training methods.")


@methods_app.command("list")
@guarded
def methods_list() -> None:
    """List training methods.

    Example: midbench methods list
    """
    from midbench.defenses.base import METHODS

    for name in METHODS.names():
        print(f"{name:12} {METHODS.get(name).citation}")
