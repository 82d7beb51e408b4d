"""``midbench calibrate``: the fixed references and calibrated ladders behind the unknown-attack score."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded
from midbench.cli._options import DeviceOverride


@guarded
def calibrate_command(
    config: Annotated[Path, typer.Option("--config", help="Calibration file (TOML): \\[calibrate] (dataset, grid, targets, n_examples, ...), \\[train] and one \\[references.THREAT_MODEL] table per threat model.")],
    out: Annotated[Path | None, typer.Option(help="The reference set's folder: reference.json, ladders.toml, calibration.json, reference.md and the references' result files (default: the calibration file's folder).")] = None,
    work_dir: Annotated[Path | None, typer.Option(help="Where the references are trained (checkpoints; default runs/references-NAME).")] = None,
    device: DeviceOverride = None,
    workers: Annotated[int | None, typer.Option(help="References run side by side, overriding the file's workers (with threads pinned in the file, the numbers do not depend on it).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress lines.")] = False,
) -> None:
    """Train one reference per threat model (adversarial training against it), calibrate each threat model's ladder
    on the reference's validation slice, and measure the references' curves: the fixed table that unknown-attack
    scores are normalised by (docs/scoring.md).

    Rerunning the same command continues after a crash: finished epochs, grid curves and measurements are kept.
    The grid curves and measurements live in OUT, so a half-finished set committed on one machine continues on
    another: its finished references are not trained again.
    Use the result with `midbench eval --registry-dir OUT` (the ladders) and `midbench leaderboard --references OUT`.

    Example: midbench calibrate --config results/references/mnist5k-lenet/calibrate.toml
    """
    import shlex
    import sys
    import time

    from midbench.bench.calibration import load_calibration, run_calibration

    calibration = load_calibration(config, device=device)
    if workers is not None:
        if workers < 1:
            from midbench.errors import UsageError

            raise UsageError(f"--workers must be at least 1, got {workers}")
        calibration = replace(calibration, workers=workers)
    out_dir = out if out is not None else config.parent
    work = work_dir if work_dir is not None else Path("runs") / f"references-{calibration.name}"
    started = time.perf_counter()
    # recorded as the set's made_by; "" (the config's path then) when not run as `midbench calibrate ...`
    command = shlex.join(["midbench", *sys.argv[1:]]) if sys.argv[1:2] == ["calibrate"] else ""
    outcome = run_calibration(calibration, out_dir, work, progress=None if quiet else print, show_bars=not quiet,
                              command=command)
    print((out_dir / "reference.md").read_text(encoding="utf-8"))
    stages = ", ".join(f"{stage} {seconds / 60:.1f} min" for stage, seconds in outcome.seconds.items()
                       if stage != "wall")
    print(f"[calibrate] {(time.perf_counter() - started) / 60:.1f} min of wall time ({stages})")
    for path in outcome.files:
        print(f"[calibrate] written: {path}")
