"""A sweep submitted to Slurm at once (``[slurm] dependencies = true``; docs/clusters.md, "Every step at once").

Every unfinished step becomes a job when the command starts, each with ``--dependency=afterok:`` on the jobs of the
steps it needs (a run after the runs it names, a crafting step after its source's training, an evaluation after
its model, its source and the source's crafting) and ``--kill-on-invalid-dep=yes``, so that Slurm cancels a job
whose prerequisite failed instead of leaving it pending. With ``arrays = true`` the steps that need the same jobs
go into one job array (one ``sbatch`` for all of a zoo's white-box evaluations, say).

What the ready-step driver (:func:`midbench.bench.sweep._run_parallel`) checks before submitting a step, a job
here cannot have checked when it was submitted: whether its model changed, or its source was crafted. So every
step that depends on a job in flight runs unconditionally (a model being trained is a new model; crafting a
source already in the transfer cache costs a cache read), and the model and source hashes are read when a step's
result is recorded, from the files the jobs left.

The driver then waits and writes each finished step into the state file, or with ``detach`` returns at once.
Rerunning the same command adopts the jobs an earlier run left: one still queued or running is waited for (no job
is submitted twice), one that finished is recorded from the result it left in its folder, and one that ended
without a result is submitted again. The tables are written once every step is recorded.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midbench.bench.cells import EvaluationJob, craft_job, model_path, model_sha, resolved_config, shared_settings
from midbench.bench.executors import SlurmJob, SlurmOptions, SlurmPool
from midbench.bench.plan import crafted_sources, evaluation_key, evaluation_plan
from midbench.bench.state import already_crafted
from midbench.bench.step import evaluate_step, train_step
from midbench.bench.sweep_file import Sweep, run_references
from midbench.bench.workspace import SweepOutcome, finish_sweep, open_folders
from midbench.errors import StepFailed
from midbench.fileio import atomic_write_json


@dataclass
class _Cell:
    """One step to submit: its name in the state file's ``jobs`` (``train NAME``, ``craft SOURCE``,
    ``eval KEY``), the step function and its arguments, and the cells it needs that are not finished yet."""

    name: str
    function: Callable[..., Any]
    arguments: tuple[Any, ...]
    needs: list[str] = field(default_factory=list)


@dataclass
class _Sweep:
    """The sweep being submitted, with what recording a finished step needs."""

    sweep: Sweep
    out: Path
    results: Path
    state_path: Path
    state: dict[str, Any]
    shared: dict[str, Any]
    restart: bool
    say: Callable[[str], None]

    @functools.cached_property
    def steps(self) -> dict[str, tuple[str, str, str | None]]:
        """The sweep's evaluation steps by their key in the state file (built once: recording looks one up for
        every finished evaluation)."""
        return {evaluation_key(self.sweep, step): step for step in evaluation_plan(self.sweep)}

    def has(self, cell: str) -> bool:
        """Whether the sweep still has step ``cell`` (a job of an earlier submission may name one it dropped)."""
        kind, _, subject = cell.partition(" ")
        if kind == "train":
            return any(run.name == subject for run in self.sweep.runs)
        if kind == "craft":
            return subject in crafted_sources(self.sweep)
        return subject in self.steps

    @property
    def jobs(self) -> dict[str, Any]:
        return self.state.setdefault("jobs", {})

    def trained(self, run: str) -> bool:
        return run in self.state["training"] and model_path(self.out, run).is_file()

    def record(self, cell: str, value: Any) -> None:
        """Write a finished step into the state file; the hashes of its model and source are read now, from the
        files its jobs wrote."""
        kind, _, subject = cell.partition(" ")
        if kind == "train":
            epochs, seconds = value
            record = self.state["training"].setdefault(subject, {"seconds": 0.0})
            record["seconds"] = round(record["seconds"] + seconds, 1)
            record["epochs"] = epochs
        elif kind == "craft":
            self.state.setdefault("crafted", {})[subject] = {
                "source_sha256": model_sha(self.sweep, self.out, subject), "settings": self.shared,
                "seconds": round(value[1], 1)}
        else:
            job = self.evaluation(self.steps[subject], fresh=True)
            result_path, seconds = value
            job.record(self.state, Path(result_path), seconds, self.results)
            self.say(f"[bench]   result: {result_path}")
        atomic_write_json(self.state_path, self.state)

    def evaluation(self, step: tuple[str, str, str | None], fresh: bool) -> EvaluationJob:
        """The evaluation ``step`` with its model's and source's hashes (None for a model still to be trained)."""
        hashes = {name: model_sha(self.sweep, self.out, name) if fresh or self._final(name) else None
                  for name in (step[0], step[2]) if name is not None}
        return EvaluationJob.of(self.sweep, step, self.out, self.results, hashes, self.shared, self.restart)

    def _final(self, name: str) -> bool:
        """Whether model ``name`` is what its evaluations will see: evaluate-only, or trained and recorded."""
        return self.sweep.model(name) is not None or self.trained(name)


def run_submitted(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None, *, config_label: str,
                  say: Callable[[str], None], restart: bool, slurm: SlurmOptions, detach: bool
                  ) -> SweepOutcome | None:
    """Submit every unfinished step of ``sweep`` with its dependencies, then wait for them and write the tables,
    or with ``detach`` return None once they are submitted.

    Raises:
        StepFailed: a step failed (the first whose prerequisites did not fail, with its log's last lines).
    """
    out, results, state_path, state = open_folders(sweep, out_dir, results_dir)
    started = time.perf_counter()
    threads = sweep.threads or slurm.cpus_per_task
    context = _Sweep(sweep, out, results, state_path, state, shared_settings(sweep), restart, say)
    pool = SlurmPool(out / "slurm", slurm, sweep.name, threads)
    running = _adopt(context, pool)
    cells = _plan(context, threads, set(running))
    running.update(_submit(context, pool, cells, running, arrays=slurm.arrays))
    if running and detach:
        say(f"[bench] {len(running)} Slurm jobs submitted or still queued")
        return None
    needs = {cell.name: cell.needs for cell in cells}
    failures: dict[str, StepFailed] = {}
    while running:
        for handle in pool.wait(running.values()):
            name = handle.name
            del running[name]
            try:
                value = handle.result()
            except StepFailed as error:
                failures[name] = error
                continue
            context.record(name, value)
    if failures:
        # a job cancelled because a step it needs failed says nothing new: the first failure of its own is raised
        roots = [name for name in failures if not set(needs.get(name, [])) & set(failures)]
        for name in roots[1:]:
            say(f"[bench] {failures[name]}")
        cancelled = len(failures) - len(roots)
        first = failures[roots[0]] if roots else next(iter(failures.values()))
        raise StepFailed(str(first) + (f"\n  ({cancelled} step(s) that need a failed step were cancelled by "
                                       "Slurm; rerun the same command to submit them again)" if cancelled else ""))
    return finish_sweep(sweep, state, state_path, results, config_label, started)


def _adopt(context: _Sweep, pool: SlurmPool) -> dict[str, SlurmJob]:
    """The jobs an earlier run submitted for steps the state does not record yet: those still queued or running,
    to wait for; a finished one's result is recorded now, one that ended without a result is forgotten (and
    submitted again)."""
    running: dict[str, SlurmJob] = {}
    for name, record in list(context.jobs.items()):
        if not context.has(name) or _recorded(context, name):
            continue
        handle = pool.adopt(record["job_id"], name)
        if not handle.done():
            running[name] = handle
            context.say(f"[bench]   {name}: Slurm job {record['job_id']}, submitted earlier, still in the queue")
            continue
        try:
            context.record(name, handle.result())
        except StepFailed as error:
            context.say(f"[bench] {name}: submitting again ({str(error).splitlines()[0]})")
    return running


def _recorded(context: _Sweep, name: str) -> bool:
    kind, _, subject = name.partition(" ")
    if kind == "train":
        return context.trained(subject)
    if kind == "craft":  # the check the plan makes: crafted from this very source with these settings
        sweep = context.sweep
        return context._final(subject) and already_crafted(sweep, context.state, subject,
                                                           model_sha(sweep, context.out, subject), context.shared)
    return subject in context.state["evaluations"]


def _plan(context: _Sweep, threads: int | None, running: set[str]) -> list[_Cell]:
    """The steps still to do, each with the unfinished steps it needs; a step already running (``running``) is
    planned too, so that what needs it waits for its job, but it is not submitted again."""
    sweep, out = context.sweep, context.out
    cells: dict[str, _Cell] = {}
    pending = {run.name for run in sweep.runs if not context.trained(run.name)}
    for run in sweep.runs:
        if run.name in pending:
            cells[f"train {run.name}"] = _Cell(
                f"train {run.name}", train_step, (resolved_config(run, out), out / run.name, False, threads,
                                                  sweep.nproc),
                [f"train {other}" for other in run_references(run.config).values() if other in pending])
    for source in crafted_sources(sweep):
        if source not in pending and already_crafted(sweep, context.state, source,
                                                     model_sha(sweep, out, source), context.shared):
            continue
        hashes = {source: None}
        job = craft_job(sweep, source, out, hashes, context.shared, sweep.device)
        cells[f"craft {source}"] = _Cell(f"craft {source}", evaluate_step, (job.config, threads, sweep.nproc),
                                         [f"train {source}"] if source in pending else [])
    for step in evaluation_plan(sweep):
        name, _, source = step
        needs = [f"train {model}" for model in (name, source) if model in pending]
        if source is not None and f"craft {source}" in cells:
            needs.append(f"craft {source}")
        job = context.evaluation(step, fresh=False)
        if not needs and job.already_done(context.state, context.results, context.say):
            continue
        cells[f"eval {job.key}"] = _Cell(f"eval {job.key}", evaluate_step, (job.config, threads, sweep.nproc), needs)
    # a step running from an earlier submission is waited for, whatever this plan thinks of it
    for name in running - set(cells):
        cells[name] = _Cell(name, evaluate_step, ())
    return list(cells.values())


def _submit(context: _Sweep, pool: SlurmPool, cells: list[_Cell], running: dict[str, SlurmJob], arrays: bool
            ) -> dict[str, SlurmJob]:
    """Submit the cells not running yet, prerequisites first, each after its prerequisites' jobs; with ``arrays``
    those of one wave that need the same jobs as one array. Each job id goes to the state file at once."""
    handles = dict(running)
    submitted: dict[str, SlurmJob] = {}
    waiting = [cell for cell in cells if cell.name not in running]
    while waiting:
        ready = [cell for cell in waiting if all(need in handles for need in cell.needs)]
        if not ready:  # cannot happen with a sweep file load_sweep accepted (its references form no cycle)
            raise StepFailed(f"steps {', '.join(cell.name for cell in waiting)} wait on each other")
        groups: dict[tuple[str, ...], list[_Cell]] = {}
        for cell in ready:
            after = tuple(sorted(handles[need].job_id for need in cell.needs))
            groups.setdefault(after, []).append(cell)
        for after, group in groups.items():
            batches = [group] if arrays else [[cell] for cell in group]
            for batch in batches:
                jobs = pool.submit_after([(cell.name, cell.function, cell.arguments) for cell in batch], after,
                                         array=arrays)
                for cell, job in zip(batch, jobs, strict=True):
                    handles[cell.name] = submitted[cell.name] = job
                    context.jobs[cell.name] = {"job_id": job.job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
                    context.say(f"[bench]   {cell.name}: Slurm job {job.job_id}" +
                                (f" (after {', '.join(after)})" if after else ""))
                atomic_write_json(context.state_path, context.state)
        waiting = [cell for cell in waiting if cell.name not in handles]
    return submitted
