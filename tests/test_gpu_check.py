"""``benchmarks/gpu_check.sh``, the one-call check of the GPU path: every part runs on the CPU here (``--cpu-only``)
and reports in the summary table; the GPU figures come from a machine with a CUDA device (docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
#: the parts of the script, one summary row each
CHECKS = ("cuda tests", "pgd-at step bf16+CL vs fp32", "mid step bf16+CL vs fp32", "native PGD vs torchattacks",
          "AutoAttack = reference", "profile CPU twice", "torchrun 2 process(es) vs one")


def _environment() -> dict[str, str]:
    """The test's interpreter first on PATH, so the script's `python` and `midbench` are the ones under test."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow
@pytest.mark.timeout(1500)  # about 140 s alone; the script's own part limits bound a hang on a loaded machine
def test_the_cpu_only_run_exercises_every_part_and_reports_each(tmp_path: Path) -> None:
    completed = subprocess.run(["bash", str(SCRIPT), "--cpu-only", "--out", str(tmp_path)], cwd=tmp_path,
                               env=_environment(), capture_output=True, text=True, timeout=1400, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [record["check"] for record in records] == list(CHECKS)
    by_check = {record["check"]: record for record in records}
    assert by_check["cuda tests"]["ok"] is None and by_check["cuda tests"]["skipped"] >= 1  # no GPU here
    assert all(record["ok"] is True for record in records[1:]), records
    for method in ("pgd-at", "mid"):
        row = by_check[f"{method} step bf16+CL vs fp32"]
        assert row["loss_rel_diff"] <= row["tolerance"] and row["speedup"] > 0
    assert by_check["AutoAttack = reference"]["differing"] == 0
    # the table is the last thing printed: one row per check
    table = completed.stdout[completed.stdout.rindex("| check"):]
    assert all(f"| {check}" in table for check in CHECKS) and "7 checks, 0 failed, " in table


def test_without_a_gpu_the_gpu_run_says_to_use_cpu_only(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: the full check would run")
    completed = subprocess.run(["bash", str(SCRIPT), "--out", str(tmp_path)], env=_environment(),
                               capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 2 and "--cpu-only" in completed.stderr


def _result_folder(folder: Path, robust: np.ndarray) -> None:
    """A results folder holding one evaluation's JSON and matrix, as `midbench eval` writes them."""
    folder.mkdir(parents=True)
    (folder / "m.json").write_text(json.dumps({"checkpoint": {"name": "m"}, "protocol": {"name": "whitebox"}}),
                                   encoding="utf-8")
    np.savez(folder / "m.npz", robust=robust, clean=robust[:, 0])


def test_compare_matrices_counts_the_entries_that_differ(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from gpu_check import compare_matrices
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    robust = np.array([[True, False], [True, True], [False, False]])
    changed = robust.copy()
    changed[1, 1] = False
    _result_folder(tmp_path / "a", robust)
    _result_folder(tmp_path / "same", robust)
    _result_folder(tmp_path / "changed", changed)
    assert compare_matrices("equal", tmp_path / "a", tmp_path / "same", expect_equal=True)
    assert not compare_matrices("unequal", tmp_path / "a", tmp_path / "changed", expect_equal=True)
    # without --expect-equal (GPU against CPU) a difference is measured, not failed
    assert compare_matrices("measured", tmp_path / "a", tmp_path / "changed", expect_equal=False)
    rows = [json.loads(line[len("RESULT "):]) for line in capsys.readouterr().out.splitlines()]
    assert [(row["ok"], row["differing_entries"]) for row in rows] == [(True, 0), (False, 1), (None, 1)]
