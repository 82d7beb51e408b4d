"""A sweep's folders and its end, shared by every driver (serial, worker processes, Slurm): the sweep and results
folders with the state file, and the tables, report and timings written once every step is recorded."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midbench.bench.leaderboards import write_leaderboards
from midbench.bench.state import SWEEP_STATE_FILE, load_state
from midbench.bench.sweep_file import Sweep
from midbench.fileio import atomic_write_json, ensure_writable_dir
from midbench.reporting.html import REPORT_FILE, write_report


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` produced."""

    board: str
    board_paths: list[Path]
    results_dir: Path
    seconds: dict[str, float]


def open_folders(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None
                 ) -> tuple[Path, Path, Path, dict[str, Any]]:
    """The sweep folder, the results folder (default ``<out>/results``), the state file and its content."""
    out = ensure_writable_dir(out_dir)
    results = ensure_writable_dir(results_dir if results_dir is not None else out / "results")
    state_path = out / SWEEP_STATE_FILE
    return out, results, state_path, load_state(state_path, sweep.fingerprint)


def finish_sweep(sweep: Sweep, state: dict[str, Any], state_path: Path, results: Path, config_label: str,
                 started: float) -> SweepOutcome:
    """Write the sweep's tables and report from its results folder, and the wall time into its state file."""
    board, paths = write_leaderboards(sweep, results, config_label)
    report, _ = write_report(results, results / REPORT_FILE, title=f"midbench report — {sweep.name}")
    paths = [*paths, report]
    seconds = {f"train {name}": record["seconds"] for name, record in state["training"].items()}
    seconds.update({f"eval {key}": record["seconds"] for key, record in state["evaluations"].items()})
    state["last_run_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(state_path, state)
    return SweepOutcome(board, paths, results, seconds)
