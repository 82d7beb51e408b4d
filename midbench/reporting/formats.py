"""The output formats: closed sets shared by the library and the command line (Typer shows and checks them)."""

from __future__ import annotations

from enum import Enum


class TableFormat(str, Enum):
    """``midbench leaderboard --format``: one table per dataset and protocol (CSV: one file; JSON: a list)."""

    MARKDOWN = "markdown"
    CSV = "csv"
    LATEX = "latex"
    HTML = "html"
    JSON = "json"


class ComparisonFormat(str, Enum):
    """``midbench compare --format``."""

    MARKDOWN = "markdown"
    CSV = "csv"
    JSON = "json"


class ConsoleFormat(str, Enum):
    """``--format`` of ``midbench eval`` and the ``list`` commands: a table for people or JSON for programs."""

    TABLE = "table"
    JSON = "json"


def values(closed_set: type[Enum]) -> tuple[str, ...]:
    """The values of a closed set, in declaration order."""
    return tuple(member.value for member in closed_set)
