"""``midbench tune``: a training recipe chosen by a search over a few settings on the validation slice."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded
from midbench.cli._options import DeviceOverride


@guarded
def tune_command(
    config: Annotated[Path, typer.Option("--config", help="Tune file (TOML): \\[tune] (name, select, min_clean, workers), \\[train] (the base recipe, any `midbench train` key) and \\[grid] (key = list of values).")],
    out: Annotated[Path | None, typer.Option(help="Where tuning.json, tuning.md and best.toml go (default: the tune file's folder).")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Where the runs are trained (default runs/tune-NAME).")] = None,
    device: DeviceOverride = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """Train every combination of the grid's settings and choose the recipe with the best held-out figure (by
    default PGD accuracy on the validation slice of the training split; the test images are never used). Writes
    the table of runs and the chosen recipe as a \\[train] table (docs/baselines.md).

    Rerunning the same command trains only what did not finish; a value added to the grid keeps the runs trained.

    Example: midbench tune --config tune.toml
    """
    import shlex
    import sys

    from midbench.bench.tuning import load_tuning, run_tuning

    tuning = load_tuning(config, device=device)
    out_dir = out if out is not None else config.parent
    work = work_dir if work_dir is not None else Path("runs") / f"tune-{tuning.name}"
    command = shlex.join(["midbench", *sys.argv[1:]]) if sys.argv[1:2] == ["tune"] else ""
    outcome = run_tuning(tuning, out_dir, work, progress=None if quiet else print, command=command)
    print((out_dir / "tuning.md").read_text(encoding="utf-8"))
    for path in outcome.files:
        print(f"[tune] written: {path}")
