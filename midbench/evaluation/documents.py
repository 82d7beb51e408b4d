"""Reading result files (schema ``midbench.result/1``, written by :mod:`midbench.evaluation.results`).

Kept apart from the writer so that the tables (:mod:`midbench.leaderboard`, ``compare``, ``export``) read result
documents without importing the evaluation engine, the attacks or torch (a contract in ``pyproject.toml``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SCHEMA = "midbench.result/1"


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
