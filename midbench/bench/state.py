"""A sweep's state file (``<out>/sweep-state.json``): what it records of finished steps, how it is read and
checked, and what makes a recorded step still valid (docs/reliability.md). A rerun of the same command skips what
the state records with the same model and settings."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from midbench.bench.plan import evaluation_key, evaluation_plan
from midbench.bench.sweep_file import Sweep
from midbench.errors import UsageError

SWEEP_STATE_FILE = "sweep-state.json"


def load_state(path: Path, fingerprint: str) -> dict[str, Any]:
    """The state of the sweep with ``fingerprint`` (an empty one if there is no file yet).

    Raises:
        UsageError: the file is unreadable, of another sweep, or not a state file (each says what to do).
    """
    if not path.exists():
        return {"fingerprint": fingerprint, "training": {}, "evaluations": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is unreadable ({type(error).__name__}); delete it to redo the sweep's "
                         "evaluations") from error
    if isinstance(state, dict) and state.get("fingerprint") != fingerprint:
        raise UsageError(f"{path} belongs to a different sweep (its [sweep], [train] or [runs] changed since); use "
                         "another --out or delete that folder to start over")
    if not is_state(state):
        raise UsageError(f"{path} is not a sweep state file (a field is missing or of another type); delete it to "
                         "redo the sweep's evaluations")
    return state


def is_state(state: Any) -> bool:
    """Whether ``state`` has the shape the sweep reads: every record a table with its fields of their types."""
    def table(value: Any) -> bool:
        return isinstance(value, dict) and all(isinstance(record, dict) for record in value.values())

    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    if not (isinstance(state, dict) and table(state.get("training")) and table(state.get("evaluations"))
            and table(state.get("jobs", {})) and table(state.get("crafted", {}))):
        return False
    return (all(number(record.get("seconds")) for record in state["training"].values())
            and all(isinstance(record.get("settings"), dict) and isinstance(record.get("result"), str)
                    and isinstance(record.get("checkpoint_sha256"), str | None) and number(record.get("seconds"))
                    for record in state["evaluations"].values())
            and all(isinstance(record.get("job_id"), str) for record in state.get("jobs", {}).values())
            and all(isinstance(record.get("settings"), dict) and isinstance(record.get("source_sha256"), str | None)
                    for record in state.get("crafted", {}).values()))


def already_crafted(sweep: Sweep, state: dict[str, Any], source: str, sha256: str | None,
                     shared: dict[str, Any]) -> bool:
    """Whether crafting ``source`` again would serve nothing: the state records it crafted with this very
    source and these settings, or every transfer evaluation through it is already recorded with them."""
    record = state.get("crafted", {}).get(source)
    if sha256 is None:
        return False
    if record is not None and record["source_sha256"] == sha256 and record["settings"] == shared:
        return True
    keys = [evaluation_key(sweep, step) for step in evaluation_plan(sweep)
            if step[1] == "transfer" and step[2] == source]
    done = [state["evaluations"].get(key) for key in keys]
    return all(record is not None and record["settings"].get("source_sha256") == sha256 and
               all(record["settings"].get(name) == value for name, value in shared.items()) for record in done)


def registry_digest() -> str:
    """SHA-256 of the shipped attack registry's files: an edited entry, suite or ladder redoes the evaluations."""
    from midbench.paths import shipped_registry_dir

    digest = hashlib.sha256()
    for path in sorted(Path(shipped_registry_dir()).glob("*.toml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
