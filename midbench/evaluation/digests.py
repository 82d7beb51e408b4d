"""Digests that decide whether two evaluations, or two crafted batches, are "the same": of an evaluation's
settings, and of the code that runs it. Kept apart from the result files (:mod:`midbench.evaluation.results`) so
that the transfer cache, which the engine uses, can key its entries by the code without importing them."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any


def settings_digest(settings: dict[str, Any]) -> str:
    """The SHA-256 of an evaluation's settings (checkpoint, data, attacks, ladders, seed, versions, the code that
    ran: :func:`code_digest`), as its result file records them under ``settings_sha256``: equal digests mean the
    same evaluation by the same code."""
    return hashlib.sha256(json.dumps({**settings, "code": code_digest()}, sort_keys=True, default=str).encode()
                          ).hexdigest()


@functools.cache
def code_digest() -> str:
    """The SHA-256 of midbench's source and shipped registry files: a result made by other code (an edited
    checkout, another release) never counts as the same evaluation, whatever the version string says; the same
    code installed from the wheel or used from a checkout has the same digest (``tests/test_packaging.py``)."""
    from midbench.paths import shipped_references_dir, shipped_registry_dir

    package = Path(__file__).resolve().parents[1]
    # the data packages (registry, reference sets) lie inside the package in a wheel and beside it in a checkout:
    # their package markers are not code, and the registry's files are hashed on their own below
    data = (shipped_registry_dir().resolve(), shipped_references_dir().resolve())
    digest = hashlib.sha256()
    for root, pattern in ((package, "*.py"), (shipped_registry_dir(), "*.toml")):
        for path in sorted(root.rglob(pattern)):
            if pattern == "*.py" and any(folder in path.resolve().parents for folder in data):
                continue
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()
