"""The leaderboard a sweep writes beside its results: ``leaderboard-<name>.md`` (what made it, then one table per
protocol) and ``.csv``, deterministic so that a rerun reproduces the committed files byte for byte."""

from __future__ import annotations

from pathlib import Path

from midbench.bench.sweep_file import Sweep
from midbench.fileio import atomic_write_text


def leaderboard_header(sweep: Sweep, config_label: str) -> str:
    """The markdown preamble: what made the tables, with the settings a reader needs to interpret them.
    Deterministic (no times, no paths of this machine), so a rerun reproduces the file byte for byte."""
    from midbench.data.datasets import get_dataset
    from midbench.defenses.base import build_task

    selection = sweep.selection
    labels = ((selection.known, "known attacks"), (selection.unknown, "the unknown-attack profile"),
              (selection.autoattack, "AutoAttack"))
    attacks = [label for flag, label in labels if flag]
    attacks += list(selection.attacks) + ([f"suite {selection.suite}"] if selection.suite else [])
    pinned = f", {sweep.threads} CPU thread{'s' if sweep.threads > 1 else ''}" if sweep.threads else ""
    seeds = (f"seeds {', '.join(str(seed) for seed in sweep.seeds)}, each a complete replicate in seed-<s>/"
             if sweep.seeds else f"seed {sweep.seed}")
    lines = [f"# {sweep.name}: leaderboard of the sweep", "",
             f"Made by `midbench bench --config {config_label}` ({seeds}{pinned}). Every model is "
             f"evaluated on the first {sweep.n_examples if sweep.n_examples is not None else 'all'} test examples of "
             f"`{sweep.dataset}` against {', '.join(attacks) or 'the default attacks'}; worst cases are per "
             "example. Columns: `results/README.md`.", ""]
    if "transfer" in sweep.protocols:
        source = (f"`{sweep.transfer_source}` run's model" if sweep.model(str(sweep.transfer_source)) is None
                  else f"`{sweep.transfer_source}` model")
        lines += [f"Transfer protocol: every attack is crafted on the {source} and classified by the evaluated "
                  "model."]
        if sweep.extra_transfer_sources:
            extra = ", ".join(f"`{source}`" for source in sweep.extra_transfer_sources)
            lines += [f"Also under transfer from {extra} (a model no defense was trained against; tables named "
                      "after the run)."]
        lines += [""]
    if sweep.runs:
        lines += ["| run | method | arch | epochs | batch | training attack steps | notes |",
                  "|---|---|---|---|---|---|---|"]
    for run in sweep.runs:
        c = run.config
        task = build_task(c, get_dataset(c.dataset))
        lines.append(f"| {run.name} | {c.method} | {c.arch} | {c.epochs} | {c.batch_size} | "
                     f"{task.training_steps()} | {task.summary()} |")
    if sweep.models:
        lines += ([""] if sweep.runs else []) + ["Evaluated as given, not trained by the sweep:", "",
                                                 "| model | loaded from |", "|---|---|"]
        lines += [f"| {model.name} | {model.describe()} |" for model in sweep.models]
    return "\n".join(lines) + "\n\n"


def write_leaderboards(sweep: Sweep, results: Path, config_label: str, write: bool = True
                       ) -> tuple[str, list[Path]]:
    """``leaderboard-<name>.md`` (header + one table per protocol) and ``.csv`` in ``results``, from every result
    file there; with ``write=False`` only returns the markdown (to check a committed table)."""
    from midbench.reporting.leaderboard import render
    from midbench.reporting.seeds import render_seeds, seed_dirs

    if sweep.seeds:  # the table across seeds, from every replicate's results

        def text(fmt: str) -> str:
            # the sweep's seeds only: a replicate dropped from the list stays on disk but out of the table
            dirs = {seed: folder for seed, folder in seed_dirs(results).items() if seed in sweep.seeds}
            return render_seeds(dirs, fmt, dataset=sweep.dataset)
    else:

        def text(fmt: str) -> str:
            return render(results, fmt, dataset=sweep.dataset)

    board = leaderboard_header(sweep, config_label) + text("markdown")
    markdown, csv = results / f"leaderboard-{sweep.name}.md", results / f"leaderboard-{sweep.name}.csv"
    if write:
        atomic_write_text(markdown, board)
        atomic_write_text(csv, text("csv"))
    return board, [markdown, csv]
