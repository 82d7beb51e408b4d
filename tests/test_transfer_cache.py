"""The transfer cache (midbench.evaluation.transfer_cache): adversarial images crafted on a source are stored once
and reused; cached and uncached evaluations give the same per-example matrices; a changed source or seed misses;
a corrupt entry is detected and crafted again, never used."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from midbench.cli.app import app

#: batch-seeded attacks (FGSM, PGD with a random start, AutoAttack, which batches itself) and the profile's
#: per-example L∞ rungs, plus random noise, which queries the evaluated model and is never cached
ATTACKS = ["--attacks", "fgsm-linf,pgd-linf", "--autoattack", "--unknown-attacks", "--threat-models", "linf,noise"]


def run(checkpoint: Path, source: Path, results: Path, *extra: str) -> tuple[dict, dict[str, np.ndarray]]:
    """One transfer evaluation of 24 examples in batches of 8; its result document and per-example arrays."""
    outcome = CliRunner().invoke(app, ["eval", str(checkpoint), "--protocol", "transfer", "--source", str(source),
                                       *ATTACKS, "--n-examples", "24", "--batch-size", "8",
                                       "--results-dir", str(results), "--quiet", *extra])
    assert outcome.exit_code == 0, outcome.output
    (path,) = sorted((results / "runs" / "mnist5k").glob("*.json"))[-1:]
    document = json.loads(path.read_text(encoding="utf-8"))
    with np.load(path.with_suffix(".npz")) as saved:
        arrays = {key: saved[key] for key in saved.files if not key.startswith("examples_")}
    for stale in path.parent.iterdir():  # the next run of the same name writes a file of its own
        stale.unlink()
    return document, arrays


def same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[key], b[key]) for key in a)


@pytest.mark.slow
def test_cached_and_uncached_transfer_evaluations_agree(standard_checkpoint: Path, pgd_at_checkpoint: Path,
                                                         tmp_path: Path) -> None:
    results, cache = tmp_path / "results", tmp_path / "cache"
    where = ["--transfer-cache-dir", str(cache)]
    uncached, plain = run(pgd_at_checkpoint, standard_checkpoint, results, "--no-transfer-cache")
    assert "transfer_cache" not in uncached["protocol"] and not cache.exists()
    cold, first = run(pgd_at_checkpoint, standard_checkpoint, results, *where)
    warm, second = run(pgd_at_checkpoint, standard_checkpoint, results, *where)
    entries = sorted(cache.rglob("*.npz"))  # this evaluation's entries, before other sources and seeds add theirs
    assert same(plain, first) and same(first, second)
    assert cold["protocol"]["transfer_cache"]["reused"] == 0 and cold["protocol"]["transfer_cache"]["crafted"] > 0
    assert warm["protocol"]["transfer_cache"]["crafted"] == 0
    assert warm["protocol"]["transfer_cache"]["reused"] == cold["protocol"]["transfer_cache"]["crafted"]
    # noise queries the evaluated model under transfer: it is never crafted on the source, so never cached
    assert "noise" not in json.dumps(sorted(p.name for p in cache.rglob("*")))

    # another evaluated model through the same source: everything crafted on the source comes from the cache
    other, fourth = run(standard_checkpoint, standard_checkpoint, results, *where, "--name", "other")
    assert other["protocol"]["transfer_cache"]["crafted"] == 0
    assert other["protocol"]["transfer_cache"]["reused"] == cold["protocol"]["transfer_cache"]["crafted"]
    _, fifth = run(standard_checkpoint, standard_checkpoint, results, "--no-transfer-cache", "--name", "other")
    assert same(fourth, fifth)

    # a changed seed or source misses
    reseeded, _ = run(pgd_at_checkpoint, standard_checkpoint, results, *where, "--seed", "1")
    assert reseeded["protocol"]["transfer_cache"]["reused"] == 0
    resourced, _ = run(standard_checkpoint, pgd_at_checkpoint, results, *where, "--name", "resourced")
    assert resourced["protocol"]["transfer_cache"]["reused"] == 0

    # a truncated entry is found by its hash, deleted and crafted again; the matrix is the same
    for entry in entries[:2]:
        entry.write_bytes(entry.read_bytes()[:100])
    repaired, third = run(pgd_at_checkpoint, standard_checkpoint, results, *where)
    assert repaired["protocol"]["transfer_cache"]["corrupt"] >= 2
    assert repaired["protocol"]["transfer_cache"]["crafted"] > 0
    assert same(first, third)


def test_white_box_evaluations_use_no_cache(standard_checkpoint: Path, tmp_path: Path) -> None:
    outcome = CliRunner().invoke(app, ["eval", str(standard_checkpoint), "--attacks", "fgsm-linf", "--n-examples",
                                       "8", "--results-dir", str(tmp_path), "--quiet"])
    assert outcome.exit_code == 0, outcome.output
    assert not (tmp_path / "transfer-cache").exists()
