"""``midbench bench``: the sweep behind a paper table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded
from midbench.cli._options import DeviceOverride


@guarded
def bench_command(
    config: Annotated[Path, typer.Option("--config", help="Sweep file (TOML): \\[sweep], \\[eval], \\[train], one \\[runs.NAME] table per run and one \\[models.NAME] table per evaluate-only model.")],
    out: Annotated[Path | None, typer.Option(help="Directory for the training runs and the sweep state (default runs/sweep-<name>).")] = None,
    results_dir: Annotated[Path | None, typer.Option(help="Where result files and leaderboard-<name>.md/.csv go (default OUT/results).")] = None,
    device: DeviceOverride = None,
    data_dir: Annotated[Path | None, typer.Option(help="Root of a torchvision dataset (overrides data_dir of the sweep file).")] = None,
    download: Annotated[bool, typer.Option("--download", help="Download a torchvision dataset into the data directory, and the zoo entries' weights into the model directory.")] = False,
    model_dir: Annotated[Path | None, typer.Option(help="RobustBench's model directory: where the \\[models.NAME] zoo entries' weights lie (overrides model_dir of the sweep file; default ./models).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit; nothing is trained.")] = False,
    restart: Annotated[bool, typer.Option("--restart", help="Discard interrupted evaluation states of the sweep instead of resuming them.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bars.")] = False,
    workers: Annotated[int, typer.Option(help="Run up to K independent steps (runs, evaluations whose inputs are ready) at once, each in its own process; the CPUs are divided among them. Same result files and tables as one at a time.", rich_help_panel="Scale")] = 1,
    devices: Annotated[str | None, typer.Option(help="With --workers K: K comma-separated devices, one per worker (e.g. cuda:0,cuda:1).", rich_help_panel="Scale")] = None,
    executor: Annotated[str | None, typer.Option(help="Where the steps run: local (worker processes of this machine: --workers) or slurm (one Slurm job per step, through submitit; options from the sweep's \\[slurm] table and --slurm-option).", rich_help_panel="Scale")] = None,
    slurm_option: Annotated[list[str] | None, typer.Option("--slurm-option", help="With --executor slurm: KEY=VALUE over the sweep's \\[slurm] table (partition, gpus_per_node, cpus_per_task, time in minutes, mem_gb, account, qos, max_jobs, dependencies, arrays, or any sbatch option); repeatable.", rich_help_panel="Scale")] = None,
    detach: Annotated[bool, typer.Option("--detach", help="With --executor slurm and dependencies=true: submit every step and return at once; rerun the same command to wait for the jobs and write the tables.", rich_help_panel="Scale")] = False,
    status: Annotated[bool, typer.Option("--status", help="Print each step's state (finished, Slurm job id) from the sweep's state file and exit; nothing runs.")] = False,
) -> None:
    """Train every run of a sweep file, evaluate each (and each evaluate-only model) under its protocols and write
    the leaderboard.

    Rerunning the same command continues after a crash: finished epochs and evaluations are kept.

    Example: midbench bench --config results/mnist5k/sweep.toml --results-dir results/mnist5k

    Example: midbench bench --config results/cifar10-mid/sweep.toml --workers 2 --devices cuda:0,cuda:1

    Example: midbench bench --config results/cifar10-robustbench/sweep.toml --model-dir models

    Example: midbench bench --config results/mnist5k/sweep.toml --executor slurm --slurm-option partition=gpu

    Example: midbench bench --config results/mnist5k/sweep.toml --executor slurm --slurm-option dependencies=true
    --detach
    """
    from midbench.bench.executors import slurm_options
    from midbench.bench.plan import describe_plan
    from midbench.bench.sweep import config_label, load_sweep, run_sweep, status_lines

    sweep = load_sweep(config, device=device, data_dir=str(data_dir) if data_dir is not None else None,
                       download=download or None, model_dir=str(model_dir) if model_dir is not None else None)
    out_dir = out if out is not None else Path("runs") / f"sweep-{sweep.name}"
    slurm = slurm_options(sweep.slurm, slurm_option or [], where=f"{config}: [slurm]")
    if slurm_option and executor != "slurm":
        from midbench.errors import UsageError

        raise UsageError("--slurm-option goes with --executor slurm")
    if dry_run:
        for line in describe_plan(sweep):
            print(line)
        return
    if status:
        for line in status_lines(sweep, out_dir):
            print(line)
        return
    slots = tuple(device.strip() for device in devices.split(",") if device.strip()) if devices else ()
    outcome = run_sweep(sweep, out_dir, results_dir, config_label=config_label(config), say=print,
                        progress=not quiet and workers == 1 and executor is None, restart=restart, workers=workers,
                        devices=slots, executor=executor, slurm=slurm if executor == "slurm" else None,
                        detach=detach)
    if outcome is None:  # detached: the jobs are in the queue
        print("[bench] rerun the same command to wait for them and write the tables (`--status` shows each step)")
        return
    print(outcome.board)
    total = sum(outcome.seconds.values())
    states = out_dir / "seed-<s>" / "sweep-state.json" if sweep.seeds else out_dir / "sweep-state.json"
    print(f"[bench] {len(outcome.seconds)} steps, {total / 60:.1f} min of compute in all (see {states})")
    for path in outcome.board_paths:
        print(f"[bench] written: {path}")
