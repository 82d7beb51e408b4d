"""The demo's whole path (train every method, evaluate, rank) with the budget of ``midbench demo --quick``."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from midbench.bench.demo import DEMO_METHODS, DemoSettings, run_demo

#: `.ci/run` runs ``midbench demo --quick --n-examples 6`` from the wheel, in a fresh environment outside the
#: checkout, before the tests, and names its folder in this variable. The test then checks that run's files (made
#: the way a user makes them) instead of training and evaluating the same four models a second time here.
CI_DEMO = "MIDBENCH_CI_DEMO"


@pytest.mark.slow
def test_demo_trains_evaluates_and_ranks(tmp_path: Path) -> None:
    made = os.environ.get(CI_DEMO)
    # one worker: the steps run in this test's process (spawning two more here would only compete with the other
    # tests); the command line's defaults (device auto) where CI's run is checked, so that the second run below
    # finds every evaluation of it with the same settings
    settings = replace(DemoSettings.quick(device="auto" if made else "cpu"), n_examples=6, workers=1)
    messages: list[str] = []
    if made:
        tmp_path = Path(made)
        board = (tmp_path / "leaderboard.md").read_text()
    else:
        board = run_demo(tmp_path, settings, say=messages.append, progress=False)
    assert (tmp_path / "leaderboard.md").read_text() == board
    report = (tmp_path / "report.html").read_text(encoding="utf-8")  # the one-page report, every model in it
    assert all(f">{method}-lenet — " in report for method in DEMO_METHODS)
    for method in DEMO_METHODS:
        assert (tmp_path / method / "model.safetensors").exists()
        assert f"| {method}-lenet" in board
    # every training stage, MID's teacher included, sees only the quick budget's images
    for config in [tmp_path / method / "config.toml" for method in DEMO_METHODS] + [tmp_path / "mid" / "teacher" /
                                                                                     "config.toml"]:
        assert f"n_train = {settings.n_train}" in config.read_text()
    assert "AutoAttack" in board and "### mnist5k — whitebox" in board and "### mnist5k — transfer" in board
    # one white-box result per model, and MID's transfer result
    assert len(list((tmp_path / "results" / "runs" / "mnist5k").glob("*.json"))) == 4
    # a second run reuses the finished trainings and evaluations and still produces one row per model and protocol
    messages.clear()
    again = run_demo(tmp_path, settings, say=messages.append, progress=False)
    assert sum("evaluated earlier" in message for message in messages) == 4, messages
    assert len(list((tmp_path / "results" / "runs" / "mnist5k").glob("*.json"))) == 4
    # the detail tables' rows (with the arch column; the headline tables above them repeat the names)
    rows = [line for line in again.splitlines() if line.startswith("|") and "-lenet" in line and "| lenet" in line]
    assert sorted(line.split("|")[2].strip() for line in rows) == ["mid-lenet", "mid-lenet", "pgd-at-lenet",
                                                                   "standard-lenet"]


def test_one_worker_runs_each_step_here_and_hands_back_its_error() -> None:
    """``workers = 1`` runs the demo's steps in this process through the same futures a pool returns."""
    from midbench.errors import UsageError
    from midbench.runtime.processes import InlineExecutor, process_pool

    with process_pool(1) as steps:
        assert isinstance(steps, InlineExecutor)
        assert steps.submit(sum, [1, 2]).result() == 3
        failed = steps.submit(lambda: (_ for _ in ()).throw(UsageError("bad")))
        with pytest.raises(UsageError, match="bad"):
            failed.result()
