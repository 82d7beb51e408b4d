"""The demo's whole path (train both methods, evaluate, rank) with a tiny budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from midbench.demo import DEMO_METHODS, DemoSettings, run_demo


@pytest.mark.slow
def test_demo_trains_evaluates_and_ranks(tmp_path: Path) -> None:
    settings = DemoSettings(standard_epochs=1, pgd_at_epochs=1, attack_steps=1, n_examples=12, device="cpu",
                            mid_teacher_epochs=1, mid_epochs=1, mid_pool_steps=1)
    messages: list[str] = []
    board = run_demo(tmp_path, settings, say=messages.append, progress=False)
    assert (tmp_path / "leaderboard.md").read_text() == board
    for method in DEMO_METHODS:
        assert (tmp_path / method / "model.safetensors").exists()
        assert f"| {method}-lenet" in board
    assert "AutoAttack" in board and "### mnist5k — whitebox" in board and "### mnist5k — transfer" in board
    # one white-box result per model, and MID's transfer result
    assert len(list((tmp_path / "results" / "runs" / "mnist5k").glob("*.json"))) == 4
    # a second run reuses the finished trainings and still produces one row per model and protocol
    again = run_demo(tmp_path, settings, say=messages.append, progress=False)
    rows = [line for line in again.splitlines() if line.startswith("|") and "-lenet" in line]
    assert sorted(line.split("|")[2].strip() for line in rows) == ["mid-lenet", "mid-lenet", "pgd-at-lenet",
                                                                   "standard-lenet"]
