"""TOML reading on every supported Python: the standard library's tomllib (3.11+) or its backport tomli, and the
one reader of midbench's table files (calibrate and tune files) with its one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from midbench.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

__all__ = ["read_tables", "tomllib"]


def read_tables(path: Path, what: str, tables: tuple[str, ...]) -> dict[str, Any]:
    """The document of the TOML file ``path`` (a ``what`` file), whose top level may hold only ``tables``.

    Raises:
        UsageError: the file is missing, is not TOML (or not UTF-8), or holds another top-level key.
    """
    if not path.is_file():
        raise UsageError(f"{what} file {path} does not exist")
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from error
    unknown = set(document) - set(tables)
    if unknown:
        raise UsageError(f"{path}: unknown table(s) {sorted(unknown)}; use "
                         + ", ".join(f"[{table}]" for table in tables[:-1]) + f" and [{tables[-1]}]")
    return document
