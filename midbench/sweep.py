"""``midbench bench``: train a list of methods on one dataset, evaluate each under the chosen protocols and write
the leaderboard — the one command that produces a paper table. The file format is :mod:`midbench.sweep_file`.

Every model is attacked white-box; under ``transfer`` every model but the source itself is attacked through the
same source model, so the rows of the transfer table are comparable (the MID paper's protocol, evaluation.md).

Nothing is lost on a crash: training runs resume from their last finished epoch, and finished evaluations are
recorded in ``<out>/sweep-state.json`` with the checkpoint hash and evaluation settings, so a rerun of the same
command skips them and continues with the first unfinished step.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midbench.config import TrainConfig
from midbench.errors import UsageError
from midbench.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from midbench.sweep_file import Sweep, SweepRun, config_label, load_sweep, run_references

__all__ = ["Sweep", "SweepRun", "config_label", "load_sweep", "run_sweep", "describe_plan", "evaluation_plan",
           "write_leaderboards", "leaderboard_header", "model_path"]

STATE_FILE = "sweep-state.json"


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` produced."""

    board: str
    board_paths: list[Path]
    results_dir: Path
    seconds: dict[str, float]


def model_path(out: Path, run: str) -> Path:
    """The final model file of sweep run ``run`` under the sweep folder ``out``."""
    from midbench.training.loop import MODEL_FILE

    return out / run / MODEL_FILE


def _resolved(run: SweepRun, out: Path) -> TrainConfig:
    """The run's config with references to other runs replaced by their model files."""
    paths = {option: str(model_path(out, other)) for option, other in run_references(run.config).items()}
    return run.config.with_options({**run.config.options, **paths})


def _load_state(path: Path, fingerprint: str) -> dict[str, Any]:
    if not path.exists():
        return {"fingerprint": fingerprint, "training": {}, "evaluations": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is unreadable ({error}); delete it to redo the sweep's evaluations") from error
    if state.get("fingerprint") != fingerprint:
        raise UsageError(f"{path} belongs to a different sweep (its [sweep], [train] or [runs] changed since); use "
                         "another --out or delete that folder to start over")
    return state


def evaluation_plan(sweep: Sweep) -> list[tuple[str, str, str | None]]:
    """(run, protocol, transfer source) in order: every run white-box (source None); under transfer, every run but
    the source itself, once per source (``transfer_source``, then each of ``extra_transfer_sources``)."""
    sources = (sweep.transfer_source, *sweep.extra_transfer_sources)
    plan: list[tuple[str, str, str | None]] = []
    for run in sweep.runs:
        for protocol in sweep.protocols:
            if protocol == "whitebox":
                plan.append((run.name, protocol, None))
                continue
            # attacking a source through itself is its white-box row
            plan.extend((run.name, protocol, source) for source in sources if source != run.name)
    return plan


def describe_plan(sweep: Sweep) -> list[str]:
    """One line per step, for ``--dry-run`` and the log."""
    lines = [f"train {run.name}: {run.config.method}, {run.config.arch}, {run.config.epochs} epochs" +
             (f", {run.config.attack_steps} attack steps" if run.config.attack_steps else "") for run in sweep.runs]
    n = sweep.n_examples if sweep.n_examples is not None else "all"
    for name, protocol, source in evaluation_plan(sweep):
        via = f" (attacks crafted on {source})" if source else ""
        lines.append(f"evaluate {name} {protocol}{via} on {n} test examples")
    return lines


def run_sweep(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None = None, *,
              config_label: str = "sweep.toml", say: Callable[[str], None] = lambda line: None,
              progress: bool = False, restart: bool = False) -> SweepOutcome:
    """Train every run, evaluate it under every protocol, and write ``leaderboard-<name>.md`` and ``.csv`` into
    ``results_dir`` (default ``<out_dir>/results``). A rerun continues where a crash stopped.

    Args:
        config_label: how the sweep file is named in the leaderboard's header (the command that made it).
        say: receives one line per step (the CLI prints them).
        progress: show training progress bars.
        restart: discard interrupted evaluation states instead of resuming them (``--restart``).
    """
    from midbench.evaluation.config import EvalConfig
    from midbench.evaluation.runner import run_evaluation
    from midbench.training import train
    from midbench.training.loop import STATE_FILE as TRAIN_STATE

    if sweep.threads is not None:
        import torch

        torch.set_num_threads(sweep.threads)
    out = ensure_writable_dir(out_dir)
    results = ensure_writable_dir(results_dir if results_dir is not None else out / "results")
    state_path = out / STATE_FILE
    state = _load_state(state_path, sweep.fingerprint)
    started = time.perf_counter()

    for run in sweep.runs:
        folder = out / run.name
        say(f"[bench] training {run.name} ({run.config.method}, {run.config.epochs} epochs) -> {folder}")
        clock = time.perf_counter()
        result = train(_resolved(run, out), folder, resume=(folder / TRAIN_STATE).exists(), progress=progress)
        record = state["training"].setdefault(run.name, {"seconds": 0.0})
        record["seconds"] = round(record["seconds"] + time.perf_counter() - clock, 1)
        record["epochs"] = len(result.log)
        atomic_write_json(state_path, state)

    from midbench.evaluation.results import software_versions

    shared_settings = {"n_examples": sweep.n_examples, "batch_size": sweep.eval_batch_size, "seed": sweep.seed,
                       "selection": repr(sweep.selection), "device": sweep.device, "versions": software_versions(),
                       "registry": registry_digest()}
    # each model's hash, read once: an evaluation is redone only when its model (or source) changed
    hashes = {run.name: _checkpoint_sha(model_path(out, run.name)) for run in sweep.runs}
    for name, protocol, source_run in evaluation_plan(sweep):
        checkpoint = model_path(out, name)
        sha256 = hashes[name]
        # a transfer row depends on the source model too: a retrained source makes it stale
        source_sha = hashes[source_run] if source_run else None
        settings = {**shared_settings, "source_sha256": source_sha}
        extra = source_run is not None and source_run != sweep.transfer_source
        key = f"{name}/{protocol}" + (f"@{source_run}" if extra else "")
        done = state["evaluations"].get(key)
        if done and done["checkpoint_sha256"] == sha256 and done["settings"] == settings and \
                (results / done["result"]).exists():
            say(f"[bench] {key}: already evaluated ({done['result']})")
            continue
        if done:  # a stale result of a since-retrained model must not share the table with the new one
            for suffix in (".json", ".npz"):
                (results / done["result"]).with_suffix(suffix).unlink(missing_ok=True)
        say(f"[bench] evaluating {key}")
        clock = time.perf_counter()
        source = str(model_path(out, source_run)) if source_run else None
        evaluated = run_evaluation(EvalConfig(
            checkpoint=str(checkpoint), selection=sweep.selection, protocol=protocol, source=source,
            # the extra sources are named by run, so their tables stay apart from the main source's
            source_name=source_run if extra else None,
            n_examples=sweep.n_examples, batch_size=sweep.eval_batch_size, results_dir=str(results), name=name,
            seed=sweep.seed, device=sweep.device, restart=restart, data_dir=sweep.data_dir,
            download=sweep.download))
        state["evaluations"][key] = {"checkpoint_sha256": sha256, "settings": settings,
                                     "result": str(evaluated.path.relative_to(results)),
                                     "seconds": round(time.perf_counter() - clock, 1)}
        atomic_write_json(state_path, state)
        say(f"[bench]   result: {evaluated.path}")

    board, paths = write_leaderboards(sweep, results, config_label)
    seconds = {f"train {name}": record["seconds"] for name, record in state["training"].items()}
    seconds.update({f"eval {key}": record["seconds"] for key, record in state["evaluations"].items()})
    state["last_run_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(state_path, state)
    return SweepOutcome(board, paths, results, seconds)


def registry_digest() -> str:
    """SHA-256 of the shipped attack registry's files: an edited entry, suite or ladder redoes the evaluations."""
    from midbench.paths import shipped_registry_dir

    digest = hashlib.sha256()
    for path in sorted(Path(shipped_registry_dir()).glob("*.toml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _checkpoint_sha(path: Path) -> str:
    from midbench.checkpoint import load_checkpoint

    return load_checkpoint(path).sha256


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
    lines = [f"# {sweep.name}: leaderboard of the sweep", "",
             f"Made by `midbench bench --config {config_label}` (seed {sweep.seed}{pinned}). Every model is "
             f"evaluated on the first {sweep.n_examples if sweep.n_examples is not None else 'all'} test examples of "
             f"`{sweep.dataset}` against {', '.join(attacks) or 'the default attacks'}; worst cases are per "
             "example. Columns: `results/README.md`.", ""]
    if "transfer" in sweep.protocols:
        lines += [f"Transfer protocol: every attack is crafted on the `{sweep.transfer_source}` run's model and "
                  "classified by the evaluated model."]
        if sweep.extra_transfer_sources:
            extra = ", ".join(f"`{source}`" for source in sweep.extra_transfer_sources)
            lines += [f"Also under transfer from {extra} (a model no defense was trained against; tables named "
                      "after the run)."]
        lines += [""]
    lines += ["| run | method | arch | epochs | batch | training attack steps | notes |",
              "|---|---|---|---|---|---|---|"]
    for run in sweep.runs:
        c = run.config
        task = build_task(c, get_dataset(c.dataset))
        lines.append(f"| {run.name} | {c.method} | {c.arch} | {c.epochs} | {c.batch_size} | "
                     f"{task.training_steps()} | {task.summary()} |")
    return "\n".join(lines) + "\n\n"


def write_leaderboards(sweep: Sweep, results: Path, config_label: str, write: bool = True
                       ) -> tuple[str, list[Path]]:
    """``leaderboard-<name>.md`` (header + one table per protocol) and ``.csv`` in ``results``, from every result
    file there; with ``write=False`` only returns the markdown (to check a committed table)."""
    from midbench.leaderboard import render

    board = leaderboard_header(sweep, config_label) + render(results, "markdown", dataset=sweep.dataset)
    markdown, csv = results / f"leaderboard-{sweep.name}.md", results / f"leaderboard-{sweep.name}.csv"
    if write:
        atomic_write_text(markdown, board)
        atomic_write_text(csv, render(results, "csv", dataset=sweep.dataset))
    return board, [markdown, csv]



