"""``midbench bench``: train a list of methods on one dataset, evaluate each (and any evaluate-only models: zoo
entries, checkpoints, factories) under the chosen protocols and write the leaderboard — the one command that
produces a paper table. The file format is :mod:`midbench.bench.sweep_file`.

Every model is attacked white-box; under ``transfer`` every model but the source itself is attacked through the
same source model, so the rows of the transfer table are comparable (the MID paper's protocol, docs/evaluation.md).

Nothing is lost on a crash: training runs resume from their last finished epoch, and finished evaluations are
recorded in ``<out>/sweep-state.json`` with the checkpoint hash and evaluation settings, so a rerun of the same
command skips them and continues with the first unfinished step.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from midbench.bench.cells import EvaluationJob, craft_job, model_path, model_sha, resolved_config, shared_settings
from midbench.bench.executors import EXECUTORS, LocalPool, SlurmOptions, SlurmPool, check_slurm
from midbench.bench.leaderboards import write_leaderboards
from midbench.bench.plan import crafted_sources, evaluation_key, evaluation_plan
from midbench.bench.state import SWEEP_STATE_FILE, already_crafted, load_state
from midbench.bench.step import evaluate_step, train_step
from midbench.bench.submitted import run_submitted
from midbench.bench.sweep_file import Sweep, SweepRun, config_label, load_sweep, run_references
from midbench.bench.workspace import SweepOutcome, finish_sweep, open_folders
from midbench.errors import UsageError
from midbench.fileio import atomic_write_json, ensure_writable_dir, hold_output
from midbench.paths import TRANSFER_CACHE_DIR

__all__ = ["Sweep", "SweepRun", "config_label", "load_sweep", "run_sweep", "status_lines", "model_path"]

#: held by the `midbench bench` that runs the sweep folder
LOCK_FILE = ".sweep.lock"


def run_sweep(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None = None, *,
              config_label: str = "sweep.toml", say: Callable[[str], None] = lambda line: None,
              progress: bool = False, restart: bool = False, workers: int = 1,
              devices: tuple[str, ...] = (), executor: str | None = None,
              slurm: SlurmOptions | None = None, detach: bool = False) -> SweepOutcome | None:
    """Train every run, evaluate it under every protocol, and write ``leaderboard-<name>.md`` and ``.csv`` into
    ``results_dir`` (default ``<out_dir>/results``). A rerun continues where a crash stopped.

    Args:
        config_label: how the sweep file is named in the leaderboard's header (the command that made it).
        say: receives one line per step (the CLI prints them).
        progress: show training progress bars (serial runs only).
        restart: discard interrupted evaluation states instead of resuming them (``--restart``).
        workers: run up to this many independent steps at once (:func:`_run_parallel`), each in a process of its
            own; 1 runs them one after the other in this process.
        devices: with ``workers``, the device of each worker slot (e.g. ``cuda:0``, ``cuda:1``); default: every
            slot on the sweep's device.
        executor: ``local`` (worker processes of this machine; the default, serial with one worker) or ``slurm``
            (one Slurm job per step with ``slurm``'s options; :mod:`midbench.bench.executors`; with
            ``dependencies`` every step at once, :mod:`midbench.bench.submitted`).
        detach: with ``slurm.dependencies``, return None once every step is submitted instead of waiting; the same
            call again waits for the jobs (or records what they left) and writes the tables.

    Raises:
        UsageError: bad workers or devices, an unknown executor, Slurm options without Slurm, or another
            ``midbench bench`` already running this sweep folder.
    """
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    if devices and len(devices) != workers:
        raise UsageError(f"--devices names {len(devices)} device(s) for {workers} worker(s); give one per worker")
    if executor is not None and executor not in EXECUTORS:
        raise UsageError(f"--executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if executor != "slurm" and slurm is not None:
        raise UsageError("Slurm options go with --executor slurm")
    if sweep.nproc > 1 and executor != "slurm" and (workers > 1 or devices):
        raise UsageError(f"[sweep] nproc = {sweep.nproc}: each step takes this machine's first {sweep.nproc} "
                         "device(s) under torchrun, so steps cannot run side by side here; leave out --workers and "
                         "--devices, or send the steps to Slurm (--executor slurm)")
    if detach and not (executor == "slurm" and slurm is not None and slurm.dependencies):
        raise UsageError("--detach needs --executor slurm with dependencies = true in [slurm] (or --slurm-option "
                         "dependencies=true): only then are all steps submitted at once")
    if executor == "slurm":
        check_slurm(slurm or SlurmOptions())  # before a job is submitted or a folder is made
    if sweep.seeds:
        return _run_replicates(sweep, out_dir, results_dir, config_label=config_label, say=say, progress=progress,
                               restart=restart, workers=workers, devices=devices, executor=executor, slurm=slurm,
                               detach=detach)
    with _sweep_lock(out_dir):
        if executor == "slurm":
            options = slurm or SlurmOptions()
            if options.dependencies:
                return run_submitted(sweep, out_dir, results_dir, config_label=config_label, say=say,
                                     restart=restart, slurm=options, detach=detach)
            jobs = options.max_jobs or max(1, len(sweep.runs) + len(evaluation_plan(sweep)))
            return _run_parallel(sweep, out_dir, results_dir, config_label=config_label, say=say, restart=restart,
                                 slots=(sweep.device,) * jobs, slurm=options)
        if workers > 1:
            return _run_parallel(sweep, out_dir, results_dir, config_label=config_label, say=say, restart=restart,
                                 slots=devices or (sweep.device,) * workers)
        return _run_serial(sweep, out_dir, results_dir, config_label=config_label, say=say, progress=progress,
                           restart=restart)


@contextlib.contextmanager
def _sweep_lock(out_dir: str | Path) -> Iterator[None]:
    """Hold the sweep folder for one ``midbench bench`` at a time: two runs of one sweep would train the same runs
    and submit the same jobs twice.

    Raises:
        UsageError: another process holds it.
    """
    out = ensure_writable_dir(out_dir)
    handle = hold_output(out / LOCK_FILE, f"the sweep in {out} (another `midbench bench`)",
                         "wait for it to finish (a rerun afterwards continues where it stopped), or give this one "
                         "another --out")
    try:
        yield
    finally:
        handle.close()


def _run_serial(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None, *, config_label: str,
                say: Callable[[str], None], progress: bool, restart: bool) -> SweepOutcome:
    """The sweep one step after the other in this process."""
    if sweep.threads is not None:
        import torch

        torch.set_num_threads(sweep.threads)
    out, results, state_path, state = open_folders(sweep, out_dir, results_dir)
    started = time.perf_counter()

    for run in sweep.runs:
        folder = out / run.name
        say(f"[bench] training {run.name} ({run.config.method}, {run.config.epochs} epochs{_on(sweep)}) -> {folder}")
        epochs, seconds = train_step(resolved_config(run, out), folder, progress, nproc=sweep.nproc)
        record = state["training"].setdefault(run.name, {"seconds": 0.0})
        record["seconds"] = round(record["seconds"] + seconds, 1)
        record["epochs"] = epochs
        atomic_write_json(state_path, state)

    shared = shared_settings(sweep)
    # each model's hash, read once: an evaluation is redone only when its model (or source) changed
    hashes = {name: model_sha(sweep, out, name) for name in sweep.names}
    for step in evaluation_plan(sweep):
        for name in (step[0], step[2]):  # a zoo entry downloaded by an earlier evaluation has a hash now
            if name is not None and hashes[name] is None:
                hashes[name] = model_sha(sweep, out, name)
        job = EvaluationJob.of(sweep, step, out, results, hashes, shared, restart)
        if job.already_done(state, results, say):
            continue
        say(f"[bench] evaluating {job.key}{_on(sweep)}")
        result_path, seconds = evaluate_step(job.config, nproc=sweep.nproc)
        job.record(state, result_path, seconds, results)
        atomic_write_json(state_path, state)
        say(f"[bench]   result: {result_path}")
    return finish_sweep(sweep, state, state_path, results, config_label, started)


def status_lines(sweep: Sweep, out_dir: str | Path) -> list[str]:
    """One line per step of the sweep from its state file (``bench --status``): finished, or not yet, with the
    Slurm job last submitted for it and whether the queue still lists that job."""
    from midbench.bench.executors import queue_state
    from midbench.reporting.seeds import seed_folder

    if sweep.seeds:
        return [f"seed {seed}: {line}" for seed in sweep.seeds
                for line in status_lines(sweep.replicate(seed), Path(out_dir) / seed_folder(seed))]
    path = Path(out_dir) / SWEEP_STATE_FILE
    state = load_state(path, sweep.fingerprint) if path.is_file() else {"training": {}, "evaluations": {}}
    jobs = state.get("jobs", {})
    cells = [(f"train {run.name}", run.name in state["training"] and model_path(Path(out_dir), run.name).is_file())
             for run in sweep.runs]
    crafted = state.get("crafted", {})
    cells += [(f"craft {source}", source in crafted) for source in crafted_sources(sweep)
              if source in crafted or f"craft {source}" in jobs]
    for step in evaluation_plan(sweep):
        key = evaluation_key(sweep, step)
        cells.append((f"eval {key}", key in state["evaluations"]))
    lines = []
    for cell, finished in cells:
        job = jobs.get(cell)
        where = f", Slurm job {job['job_id']} ({queue_state(job['job_id'])})" if job else ""
        lines.append(f"{cell}: {'finished' if finished else 'not finished'}{where}")
    return lines


def _run_replicates(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None, *, config_label: str,
                    say: Callable[[str], None], **options: Any) -> SweepOutcome | None:
    """A sweep with ``seeds``: each replicate (:meth:`Sweep.replicate`) is a complete sweep of its own in
    ``<out>/seed-<s>/`` (results in ``<results>/seed-<s>/``, resumable and with its own tables), then the
    leaderboard across seeds (:mod:`midbench.reporting.seeds`) is written into the results folder."""
    from midbench.reporting.seeds import SEEDS_FILE, seed_folder

    out = ensure_writable_dir(out_dir)
    results = ensure_writable_dir(results_dir if results_dir is not None else out / "results")
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    paths: list[Path] = []
    # which replicates the table holds: `midbench leaderboard` on this folder reads the same list
    atomic_write_json(results / SEEDS_FILE, {"seeds": list(sweep.seeds)})
    slurm = options.get("slurm")
    if slurm is not None and slurm.dependencies and not options.get("detach"):
        # every replicate's jobs go to the queue before any is waited for, so that the cluster runs the seeds side
        # by side; the loop below then takes over each seed's jobs (none is submitted twice) and waits for them
        for seed in sweep.seeds:
            say(f"[bench] seed {seed}: submitting {out / seed_folder(seed)}")
            run_sweep(sweep.replicate(seed), out / seed_folder(seed), results / seed_folder(seed),
                      config_label=config_label, say=say, **{**options, "detach": True})
    detached = False
    for seed in sweep.seeds:
        say(f"[bench] seed {seed}: {out / seed_folder(seed)}")
        outcome = run_sweep(sweep.replicate(seed), out / seed_folder(seed), results / seed_folder(seed),
                            config_label=config_label, say=say, **options)
        if outcome is None:  # detached: its jobs are submitted; the other seeds' are submitted too
            detached = True
            continue
        seconds.update({f"seed {seed}: {step}": value for step, value in outcome.seconds.items()})
        paths += outcome.board_paths
    if detached:
        return None
    board, board_paths = write_leaderboards(sweep, results, config_label)
    say(f"[bench] {len(sweep.seeds)} seeds in {time.perf_counter() - started:.0f} s")
    return SweepOutcome(board, [*board_paths, *paths], results, seconds)


def _run_parallel(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None, *, config_label: str,
                  say: Callable[[str], None], restart: bool, slots: tuple[str, ...],
                  slurm: SlurmOptions | None = None) -> SweepOutcome:
    """The sweep with up to ``len(slots)`` steps at once, each in a worker process on its slot's device, or with
    ``slurm`` each in a Slurm job of its own (:mod:`midbench.bench.executors`; the job ids go to the state file).

    A step starts once its inputs exist: a run once the runs it names (MID's source and teacher) are trained, an
    evaluation once its model and its transfer source are. A source through which several models are evaluated
    first gets a crafting step (:func:`crafted_sources`, :func:`craft_job`), and its transfer evaluations wait
    for it, so that they read the source's attacks from the transfer cache instead of each crafting them at the
    same time. Each step is the serial run's step — same config, same seeds — so the result files and tables are
    the serial run's. Threads: the sweep's pinned ``threads``
    per worker, else the CPUs divided among the workers. The parent alone writes the state file, after each
    finished step; on an error, the running steps finish (their progress is kept) and the error is raised.
    """
    import os

    out, results, state_path, state = open_folders(sweep, out_dir, results_dir)
    started = time.perf_counter()
    if slurm is not None:  # a job's threads: pinned by the sweep, else the CPUs it asked for
        threads = sweep.threads or slurm.cpus_per_task
    else:
        threads = sweep.threads or max(1, (os.cpu_count() or 1) // len(slots))
    if sweep.threads is None and slurm is None:
        say(f"[bench] note: the sweep pins no threads, so each of the {len(slots)} workers uses {threads} where a "
            "serial run uses torch's default; trained weights may then differ in the last bits — pin `threads` in "
            "[sweep] for tables identical to a serial run's")
    shared = shared_settings(sweep)
    # a run the state records (written once its training returned) with its model file is finished: no worker or
    # job is spent on finding that out again
    done_before = {run.name for run in sweep.runs
                   if run.name in state["training"] and model_path(out, run.name).is_file()}
    to_train = [run for run in sweep.runs if run.name not in done_before]
    to_evaluate = evaluation_plan(sweep)
    to_craft = crafted_sources(sweep)
    # a source with a single transfer evaluation is crafted by that evaluation
    crafted = {source for _, protocol, source in to_evaluate if protocol == "transfer"} - set(to_craft)
    trained: set[str] = {model.name for model in sweep.models} | done_before  # evaluate-only models: ready at once
    hashes: dict[str, str | None] = {}
    free = list(slots)
    running: dict[Any, tuple[str, Any, str]] = {}
    failure: BaseException | None = None
    jobs = state.setdefault("jobs", {})
    if slurm is not None:
        _refuse_queued_jobs(jobs)
    pool = SlurmPool(out / "slurm", slurm, sweep.name, threads) if slurm is not None else LocalPool(len(slots))

    def submitted(handle: Any, cell: str) -> None:
        job_id = pool.job_id(handle)
        if job_id is not None:  # recorded at once, so `bench --status` and a later rerun see it
            jobs[cell] = {"job_id": job_id, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
            atomic_write_json(state_path, state)
            say(f"[bench]   {cell}: Slurm job {job_id}")

    with pool:
        while (to_train or to_evaluate or running) and not (failure and not running):
            while free and failure is None:
                ready_run = next((run for run in to_train if set(run_references(run.config).values()) <= trained),
                                 None)
                if ready_run is not None:
                    to_train.remove(ready_run)
                    device = free.pop(0)
                    folder = out / ready_run.name
                    config = replace(resolved_config(ready_run, out), device=device)
                    say(f"[bench] training {ready_run.name} ({ready_run.config.method}, {ready_run.config.epochs} "
                        f"epochs) on {device}{_on(sweep)} -> {folder}")
                    handle = pool.submit(train_step, config, folder, False, threads, sweep.nproc, name=ready_run.name)
                    running[handle] = ("train", ready_run.name, device)
                    submitted(handle, f"train {ready_run.name}")
                    continue
                source = next((source for source in to_craft if source in trained), None)
                if source is not None:
                    to_craft.remove(source)
                    if hashes.get(source) is None:
                        hashes[source] = model_sha(sweep, out, source)
                    if already_crafted(sweep, state, source, hashes[source], shared):
                        crafted.add(source)
                        continue
                    device = free.pop(0)
                    job = craft_job(sweep, source, out, hashes, shared, device)
                    say(f"[bench] crafting the transfer attacks of {source} on {device} -> {out / TRANSFER_CACHE_DIR}")
                    handle = pool.submit(evaluate_step, job.config, threads, sweep.nproc, name=f"craft-{source}")
                    running[handle] = ("craft", source, device)
                    submitted(handle, f"craft {source}")
                    continue
                step = next((step for step in to_evaluate if step[0] in trained and (
                    step[2] is None or (step[2] in trained and step[2] in crafted))), None)
                if step is None:
                    break
                to_evaluate.remove(step)
                for name in (step[0], step[2]):  # None: a zoo entry not downloaded yet, perhaps downloaded since
                    if name is not None and hashes.get(name) is None:
                        hashes[name] = model_sha(sweep, out, name)
                device = free[0]
                job = EvaluationJob.of(sweep, step, out, results, hashes, shared, restart, device)
                if job.already_done(state, results, say):
                    continue
                free.pop(0)
                say(f"[bench] evaluating {job.key} on {device}{_on(sweep)}")
                handle = pool.submit(evaluate_step, job.config, threads, sweep.nproc, name=job.key)
                running[handle] = ("eval", job, device)
                submitted(handle, f"eval {job.key}")
            if not running:
                break
            for future in pool.wait(running):
                kind, subject, device = running.pop(future)
                free.append(device)
                try:
                    value = future.result()
                except BaseException as error:  # noqa: BLE001 - the first error stops new steps; raised below
                    failure = failure or error
                    continue
                if kind == "train":
                    epochs, seconds = value
                    record = state["training"].setdefault(subject, {"seconds": 0.0})
                    record["seconds"] = round(record["seconds"] + seconds, 1)
                    record["epochs"] = epochs
                    trained.add(subject)
                elif kind == "craft":
                    state.setdefault("crafted", {})[subject] = {"source_sha256": hashes[subject], "settings": shared,
                                                                "seconds": round(value[1], 1)}
                    crafted.add(subject)
                else:
                    result_path, seconds = value
                    subject.record(state, result_path, seconds, results)
                    say(f"[bench]   result: {result_path}")
                atomic_write_json(state_path, state)
    if failure is not None:
        raise failure
    return finish_sweep(sweep, state, state_path, results, config_label, started)


def _on(sweep: Sweep) -> str:
    """How many processes a step takes, for the log (nothing for one)."""
    return f", {sweep.nproc} processes under torchrun" if sweep.nproc > 1 else ""


def _refuse_queued_jobs(jobs: dict[str, Any]) -> None:
    """Refuse to submit while a job an earlier driver submitted is still queued or running: its step would run
    twice, in the same folder.

    Raises:
        UsageError: such a job is in the queue.
    """
    from midbench.bench.executors import in_queue

    queued = [f"{cell} (job {record['job_id']})" for cell, record in jobs.items() if in_queue(record["job_id"])]
    if queued:
        raise UsageError(f"earlier jobs of this sweep are still in the Slurm queue: {', '.join(queued)}; wait for "
                         "them or scancel them, then rerun")


