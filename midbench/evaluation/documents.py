"""Reading result files (schema ``midbench.result/1``, written by :mod:`midbench.evaluation.results`).

Kept apart from the writer so that the tables (:mod:`midbench.leaderboard`, ``compare``, ``export``) read result
documents without importing the evaluation engine, the attacks or torch (a contract in ``pyproject.toml``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from midbench.errors import ArtifactError
from midbench.protocols import AUTOATTACK_ENTRY, is_autoattack_figure

SCHEMA = "midbench.result/1"
#: the keys of a result's ``summary`` (fractions, ``null`` when the split is empty)
SUMMARY_KEYS = ["known_mean", "known_worst", "unknown_mean", "unknown_worst", "all_worst", "autoattack"]


def read_result(path: str | Path) -> dict[str, Any] | None:
    """A result document, or ``None`` when the file is not a complete midbench result."""
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        return None
    required = {"run_id": str, "created": str, "checkpoint": dict, "data": dict, "protocol": dict, "attacks": list,
                "summary": dict}
    if any(not isinstance(document.get(key), kind) for key, kind in required.items()):
        return None
    if not {"dataset", "n_examples"} <= set(document["data"]) or "name" not in document["protocol"]:
        return None
    return document


def load_result_file(path: str | Path) -> dict[str, Any]:
    """The result document at ``path`` for commands that name one; :class:`ArtifactError` (exit 3) if it is
    missing or not a complete ``midbench.result/1`` document."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"result file {path} not found; pass a results/runs/<dataset>/<run_id>.json file "
                            "written by `midbench eval`")
    result = read_result(path)
    if result is None:
        raise ArtifactError(f"{path} is not a complete midbench result (schema midbench.result/1); rerun "
                            "`midbench eval`")
    return result


def is_autoattack(row: dict[str, Any]) -> bool:
    """Whether an attack row is AutoAttack standard at the L∞ ε (the figure of the AutoAttack column)."""
    if "implementation" in row:
        return is_autoattack_figure(row.get("implementation"), row.get("norm"))
    return str(row.get("id", "")).split("@")[0] == AUTOATTACK_ENTRY  # rows of early result files
