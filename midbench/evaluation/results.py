"""Result files: ``results/runs/<dataset>/<run_id>.json`` (schema ``midbench.result/1``) and the per-example
matrix beside it (``<run_id>.npz``), both written atomically. A failed or interrupted evaluation writes
neither, so it can never appear in a leaderboard."""

from __future__ import annotations

import hashlib
import io
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from midbench._version import __version__
from midbench.attacks.plans import PROFILE_SUITE
from midbench.evaluation.documents import SCHEMA, ResultDocument, read_result
from midbench.evaluation.engine import Evaluation
from midbench.evaluation.metrics import summarise, unseen_full_strength, wilson_interval
from midbench.evaluation.profile import curve_summary
from midbench.fileio import atomic_write_json, atomic_write_with, ensure_writable_dir, safe_file_name
from midbench.protocols import is_autoattack_figure


def run_prefix(name: str, protocol: str) -> str:
    """``<name>__<protocol>__``, the name made safe for a file name: what every run id of that evaluation starts
    with."""
    return f"{safe_file_name(name)}__{protocol}__"


def make_run_id(name: str, protocol: str, now: datetime) -> str:
    """``<name>__<protocol>__<UTC time>-<microseconds><random>``: unique even for runs started in the same second,
    and in the order they started (tables take the newest run by ``created``, then by this id)."""
    return f"{run_prefix(name, protocol)}{now.strftime('%Y%m%dT%H%M%SZ')}-{now.microsecond:06d}{secrets.token_hex(2)}"


def finished_result(results_dir: str | Path, dataset: str, name: str, protocol: str, digest: str) -> Path | None:
    """The newest complete result file of ``name`` under ``protocol`` when its settings digest is ``digest``
    (:func:`settings_digest`), else None. Only the newest counts: it is the one tables show, so reusing an older
    match would leave a table showing another evaluation than the one reported."""
    folder = Path(results_dir) / "runs" / safe_file_name(dataset)
    complete = {path: result for path in folder.glob(f"{run_prefix(name, protocol)}*.json")
                if (result := read_result(path)) is not None}
    if not complete:
        return None
    newest = max(complete, key=lambda path: (complete[path].created, path.name))
    same = complete[newest].extra.get("settings_sha256") == digest
    return newest if same and newest.with_suffix(".npz").is_file() else None


def build_result(evaluation: Evaluation, *, run_id: str, created: datetime, checkpoint: dict[str, Any],
                 data: dict[str, Any], protocol: dict[str, Any], seed: int, device: str,
                 flags: list[dict[str, str]] | None = None, sanity: dict[str, Any] | None = None,
                 command: str | None = None, profile_skipped: list[dict[str, str]] | None = None,
                 profile_suites: tuple[str, ...] = (PROFILE_SUITE,), settings_sha256: str | None = None
                 ) -> ResultDocument:
    """The result document of one evaluation run.

    Args:
        flags: the sanity flags (``{"code", "message"}``, :mod:`midbench.evaluation.sanity`), stored as given.
        sanity: what the sanity checks measured (probe size, zero-gradient share, sweep points); stored under
            ``"sanity"`` when given, so a reader can see why a flag was or was not raised.
        command: the command line that ran the evaluation, recorded when given.
        profile_skipped: threat models the profile left out (``{"id", "reason"}``: colour ones on grey data),
            stored under ``profile.skipped``.
        profile_suites: the suites the profile climbed, stored as ``profile.suite`` (comma-separated).
        settings_sha256: the digest of the evaluation's settings (:func:`settings_digest`), stored when given.
    """
    n = int(evaluation.clean_correct.shape[0])
    rows, autoattack_columns = [], []
    for column, outcome in enumerate(evaluation.outcomes):
        survivors = int(outcome.robust.sum())
        attack = outcome.attack
        # The AutoAttack figure is AutoAttack standard at the L∞ ε (docs/evaluation.md); an L2 run is its own row.
        if is_autoattack_figure(attack.implementation, attack.norm.value if attack.norm else None):
            autoattack_columns.append(column)
        row = {"id": attack.key, "split": outcome.split, "family": attack.family,
               "norm": attack.norm.value if attack.norm else None, "eps": attack.eps,
               "targeted": attack.targeted, "target": attack.target, "params": attack.params,
               "implementation": attack.implementation,
               "robust_accuracy": survivors / n if n else None, "ci95": list(wilson_interval(survivors, n)),
               "seconds": round(outcome.seconds, 3), "forward_passes": outcome.forward_passes,
               "backward_passes": outcome.backward_passes}
        row.update(outcome.details)
        rows.append(row)
    clean = int(evaluation.clean_correct.sum())
    document = ResultDocument.from_dict({
        "schema": SCHEMA, "run_id": run_id, "created": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "versions": software_versions(),
        "device": device, "checkpoint": checkpoint, "data": data, "protocol": protocol, "seed": seed,
        "clean_accuracy": clean / n if n else None, "clean_ci95": list(wilson_interval(clean, n)),
        "attacks": rows,
        "summary": summarise(evaluation.matrix, [o.split for o in evaluation.outcomes], autoattack_columns,
                             unseen_full_strength([(c.robust, c.plan.seen) for c in evaluation.curves], n)),
        "flags": [{"code": str(flag["code"]), "message": str(flag["message"])} for flag in flags or []],
        **({"sanity": sanity} if sanity else {}),
        **({"command": command} if command else {}),
        **({"profile": {"suite": ",".join(profile_suites),
                        "threat_models": [curve_summary(c, evaluation.clean_correct) for c in evaluation.curves],
                        **({"skipped": profile_skipped} if profile_skipped else {})}}
           if evaluation.curves else {}),
        "per_example": f"{run_id}.npz",
        **({"settings_sha256": settings_sha256} if settings_sha256 else {}),
    })
    assert document is not None, "build_result made an incomplete document (a bug)"
    return document


def software_versions() -> dict[str, str | None]:
    """The versions a result depends on: midbench, torch and the reference AutoAttack package."""
    import torch

    try:
        from importlib.metadata import version

        autoattack_version = version("pyautoattack")
    except Exception:  # noqa: BLE001 - version lookup is informational
        autoattack_version = None
    return {"midbench": __version__, "torch": torch.__version__, "pyautoattack": autoattack_version}


def write_result(result: ResultDocument, evaluation: Evaluation, results_dir: str | Path,
                 indices: np.ndarray, examples: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``<results_dir>/runs/<dataset>/<run_id>.{npz,json}``; the JSON last, so a visible JSON always
    has its matrix. Returns the JSON path.

    Args:
        examples: per threat model of the profile, a few attacked test images (8-bit, rungs × images × H × W × C;
            :func:`midbench.evaluation.examples.profile_examples`), stored as ``examples_<id>``.
    """
    folder = ensure_writable_dir(Path(results_dir) / "runs" / safe_file_name(result.data.dataset))
    run_id = result.run_id

    def write_npz(handle: io.BufferedWriter) -> None:
        # the profile's nested curves, one N × strengths matrix per threat model (profile_<id>)
        curves = {f"profile_{curve.plan.threat_model.id}": curve.robust for curve in evaluation.curves}
        np.savez_compressed(handle, robust=evaluation.matrix, clean=evaluation.clean_correct,
                            attacks=np.array([row.id for row in result.attacks], dtype=str),
                            splits=np.array([row.split for row in result.attacks], dtype=str),
                            indices=indices, **curves,
                            **{f"examples_{model}": images for model, images in (examples or {}).items()})

    matrix_path, json_path = folder / f"{run_id}.npz", folder / f"{run_id}.json"
    atomic_write_with(matrix_path, write_npz)
    try:
        atomic_write_json(json_path, result.to_dict())
    except BaseException:  # a full disk, say: no JSON will ever name this matrix, so it must not stay behind
        matrix_path.unlink(missing_ok=True)
        raise
    return json_path


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def indices_sha256(indices: np.ndarray) -> str:
    """SHA-256 of the evaluated example indices (int64, little-endian)."""

    return hashlib.sha256(np.asarray(indices, dtype="<i8").tobytes()).hexdigest()
