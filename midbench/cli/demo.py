"""``midbench demo``."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded
from midbench.cli._options import Device
from midbench.errors import UsageError


@guarded
def demo_command(
    out: Annotated[Path, typer.Option(help="Directory for checkpoints, results and the leaderboard.")] = Path("midbench-demo"),
    device: Device = "auto",
    n_examples: Annotated[int | None, typer.Option(help="Test images to evaluate (default 100; 32 with --quick).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Every stage on a few dozen images, to check an installation in about 3 minutes (the numbers measure nothing).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Train a standard, a PGD-AT and a MID LeNet on the embedded mnist5k, evaluate them (known and unknown
    attacks, AutoAttack; MID white-box and under the paper's transfer protocol) and print the leaderboard.
    About 17 minutes on 2 CPU cores (docs/performance.md, P10); no download.

    Example: midbench demo --out midbench-demo
    """
    from midbench.bench.demo import DemoSettings, run_demo

    if n_examples is not None and n_examples < 1:
        raise UsageError(f"--n-examples must be at least 1, got {n_examples}")
    settings = DemoSettings.quick(device) if quick else DemoSettings(device=device)
    if n_examples is not None:
        settings = replace(settings, n_examples=n_examples)
    board = run_demo(out, settings, progress=not quiet)
    print(board)
    print(f"[demo] leaderboard written to {out / 'leaderboard.md'} and {out / 'leaderboard.csv'}")
    print(f"[demo] report (tables, figures, every model's attacks; opens offline): {out / 'report.html'}")
