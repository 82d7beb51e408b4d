"""The short version of the kill-and-resume soak (``benchmarks/soak.py --quick``, docs/reliability.md, "Soak"):
``train``, ``eval`` (known attacks, AutoAttack, the unknown-attack profile) and ``bench`` are each killed with
SIGKILL at a seeded random moment while they run, and rerun until they finish; the final results must equal the
uninterrupted runs', bit for bit. The documented soak runs the same script with 17 kills per workload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_killed_runs_of_train_eval_and_bench_resume_to_the_uninterrupted_results(tmp_path: Path) -> None:
    completed = subprocess.run([sys.executable, str(SCRIPT), "--kills", "1", "--seed", "0", "--quick", "--out",
                                str(tmp_path)], capture_output=True, text=True, timeout=850, check=False,
                               env=os.environ)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    outcomes = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["outcomes"]
    assert [outcome["workload"] for outcome in outcomes] == ["train", "eval", "bench"]
    for outcome in outcomes:
        # a kill is counted only when the run was still going, so each workload was really cut and resumed
        assert outcome["kills"] == 1 and outcome["attempts"] >= 2, outcome
        assert outcome["differences"] == [] and outcome["failures"] == [], outcome
