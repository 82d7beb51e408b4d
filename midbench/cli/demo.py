"""``midbench demo``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded


@guarded
def demo_command(
    out: Annotated[Path, typer.Option(help="Directory for checkpoints, results and the leaderboard.")] = Path("midbench-demo"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    n_examples: Annotated[int, typer.Option(help="Test images to evaluate (default 100).")] = 100,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
) -> None:
    """Train standard and PGD-AT LeNets on the embedded mnist5k, evaluate both (known, unknown, AutoAttack)
    and print the leaderboard. A few minutes on a laptop CPU; no download.

    Example: midbench demo --out midbench-demo
    """
    from midbench.demo import DemoSettings, run_demo

    board = run_demo(out, DemoSettings(device=device, n_examples=n_examples), progress=not quiet)
    print(board)
    print(f"[demo] leaderboard written to {out / 'leaderboard.md'} and {out / 'leaderboard.csv'}")
