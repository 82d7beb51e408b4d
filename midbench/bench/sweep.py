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
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from midbench.bench.executors import EXECUTORS, LocalPool, SlurmOptions, SlurmPool, check_slurm
from midbench.bench.leaderboards import write_leaderboards
from midbench.bench.plan import crafted_sources, evaluation_key, evaluation_plan
from midbench.bench.state import SWEEP_STATE_FILE, already_crafted, load_state, registry_digest
from midbench.bench.step import evaluate_step, train_step
from midbench.bench.sweep_file import Sweep, SweepModel, SweepRun, config_label, load_sweep, run_references
from midbench.config import TrainConfig
from midbench.errors import UsageError
from midbench.fileio import atomic_write_json, ensure_writable_dir, hold_output
from midbench.paths import TRANSFER_CACHE_DIR
from midbench.reporting.html import REPORT_FILE, write_report

__all__ = ["Sweep", "SweepRun", "config_label", "load_sweep", "run_sweep", "status_lines", "model_path"]

#: where a crafting step's evaluation of the source leaves its result (its product is the transfer cache)
CRAFTING_DIR = "transfer-crafting"
#: held by the `midbench bench` that runs the sweep folder
LOCK_FILE = ".sweep.lock"


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


def _open_folders(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None
                  ) -> tuple[Path, Path, Path, dict[str, Any]]:
    """The sweep folder, the results folder (default ``<out>/results``), the state file and its content."""
    out = ensure_writable_dir(out_dir)
    results = ensure_writable_dir(results_dir if results_dir is not None else out / "results")
    state_path = out / SWEEP_STATE_FILE
    return out, results, state_path, load_state(state_path, sweep.fingerprint)


def run_sweep(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None = None, *,
              config_label: str = "sweep.toml", say: Callable[[str], None] = lambda line: None,
              progress: bool = False, restart: bool = False, workers: int = 1,
              devices: tuple[str, ...] = (), executor: str | None = None,
              slurm: SlurmOptions | None = None) -> SweepOutcome:
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
            (one Slurm job per step with ``slurm``'s options; :mod:`midbench.bench.executors`).

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
    if executor == "slurm":
        check_slurm(slurm or SlurmOptions())  # before a job is submitted or a folder is made
    if sweep.seeds:
        return _run_replicates(sweep, out_dir, results_dir, config_label=config_label, say=say, progress=progress,
                               restart=restart, workers=workers, devices=devices, executor=executor, slurm=slurm)
    with _sweep_lock(out_dir):
        if executor == "slurm":
            options = slurm or SlurmOptions()
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
    out, results, state_path, state = _open_folders(sweep, out_dir, results_dir)
    started = time.perf_counter()

    for run in sweep.runs:
        folder = out / run.name
        say(f"[bench] training {run.name} ({run.config.method}, {run.config.epochs} epochs{_on(sweep)}) -> {folder}")
        epochs, seconds = train_step(_resolved(run, out), folder, progress, nproc=sweep.nproc)
        record = state["training"].setdefault(run.name, {"seconds": 0.0})
        record["seconds"] = round(record["seconds"] + seconds, 1)
        record["epochs"] = epochs
        atomic_write_json(state_path, state)

    shared = _shared_settings(sweep)
    # each model's hash, read once: an evaluation is redone only when its model (or source) changed
    hashes = {name: _model_sha(sweep, out, name) for name in sweep.names}
    for step in evaluation_plan(sweep):
        for name in (step[0], step[2]):  # a zoo entry downloaded by an earlier evaluation has a hash now
            if name is not None and hashes[name] is None:
                hashes[name] = _model_sha(sweep, out, name)
        job = _EvaluationJob.of(sweep, step, out, results, hashes, shared, restart)
        if job.already_done(state, results, say):
            continue
        say(f"[bench] evaluating {job.key}{_on(sweep)}")
        result_path, seconds = evaluate_step(job.config, nproc=sweep.nproc)
        job.record(state, result_path, seconds, results)
        atomic_write_json(state_path, state)
        say(f"[bench]   result: {result_path}")
    return _finish(sweep, state, state_path, results, config_label, started)


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
                    say: Callable[[str], None], **options: Any) -> SweepOutcome:
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
    for seed in sweep.seeds:
        say(f"[bench] seed {seed}: {out / seed_folder(seed)}")
        outcome = run_sweep(sweep.replicate(seed), out / seed_folder(seed), results / seed_folder(seed),
                            config_label=config_label, say=say, **options)
        seconds.update({f"seed {seed}: {step}": value for step, value in outcome.seconds.items()})
        paths += outcome.board_paths
    board, board_paths = write_leaderboards(sweep, results, config_label)
    say(f"[bench] {len(sweep.seeds)} seeds in {time.perf_counter() - started:.0f} s")
    return SweepOutcome(board, [*board_paths, *paths], results, seconds)


def _shared_settings(sweep: Sweep) -> dict[str, Any]:
    """What every evaluation of the sweep shares; a change of it redoes the evaluations."""
    from midbench.evaluation.results import software_versions

    return {"n_examples": sweep.n_examples, "batch_size": sweep.eval_batch_size, "seed": sweep.seed,
            "selection": repr(sweep.selection), "device": sweep.device, "versions": software_versions(),
            "registry": registry_digest()}


@dataclass
class _EvaluationJob:
    """One evaluation of the plan: its key in the state file, what must match for a recorded result to stand,
    and the evaluation's config."""

    key: str
    #: the evaluated model's hash; None for a zoo entry whose weights are yet to be downloaded (hashed afterwards)
    sha256: str | None
    settings: dict[str, Any]
    config: Any  # EvalConfig
    model: SweepModel | None = None
    dataset: str = ""

    @classmethod
    def of(cls, sweep: Sweep, step: tuple[str, str, str | None], out: Path, results: Path,
           hashes: dict[str, str | None], shared: dict[str, Any], restart: bool, device: str | None = None
           ) -> _EvaluationJob:
        from midbench.evaluation.eval_config import EvalConfig

        name, protocol, source_run = step
        model = sweep.model(name)
        # a transfer row depends on the source model too: a retrained source makes it stale; an evaluate-only
        # model's row depends on how it is named (zoo entry, threat model, factory) as well as on its files
        settings = {**shared, "source_sha256": hashes[source_run] if source_run else None,
                    **({"model": model.describe()} if model else {})}
        extra = source_run is not None and source_run != sweep.transfer_source
        key = evaluation_key(sweep, step)
        if model is None:
            loaded = {"checkpoint": str(model_path(out, name))}
        else:
            loaded = {"checkpoint": model.checkpoint, "arch": model.arch, "model_spec": model.model,
                      "weights": model.weights, "zoo_threat_model": model.zoo_threat_model,
                      "model_dir": model.model_dir, "dataset": sweep.dataset, "normalize": model.normalize,
                      "output": model.output}
        config = EvalConfig(
            **loaded, **(_source_options(sweep, out, source_run) if source_run else {}), selection=sweep.selection,
            protocol=protocol,
            # the extra sources are named by run, so their tables stay apart from the main source's
            source_name=source_run if extra else None,
            n_examples=sweep.n_examples, batch_size=sweep.eval_batch_size, results_dir=str(results), name=name,
            seed=sweep.seed, device=device or sweep.device, restart=restart, data_dir=sweep.data_dir,
            download=sweep.download,
            # one cache for the sweep, beside its runs (not in a results folder that may be committed)
            transfer_cache_dir=str(out / TRANSFER_CACHE_DIR))
        return cls(key, hashes[name], settings, config, model, sweep.dataset)

    def already_done(self, state: dict[str, Any], results: Path, say: Callable[[str], None]) -> bool:
        """Whether the state records this evaluation of this very model; a stale result is deleted, so that it
        does not share the table with the new one."""
        done = state["evaluations"].get(self.key)
        if done and self.sha256 is not None and done["checkpoint_sha256"] == self.sha256 and \
                done["settings"] == self.settings and (results / done["result"]).exists():
            say(f"[bench] {self.key}: already evaluated ({done['result']})")
            return True
        if done:
            for suffix in (".json", ".npz"):
                (results / done["result"]).with_suffix(suffix).unlink(missing_ok=True)
        return False

    def record(self, state: dict[str, Any], result_path: Path, seconds: float, results: Path) -> None:
        # a zoo entry downloaded by its evaluation is hashed now that its file is there
        sha = self.sha256 if self.sha256 is not None or self.model is None else _files_sha(self.model, self.dataset)
        state["evaluations"][self.key] = {"checkpoint_sha256": sha, "settings": self.settings,
                                          "result": str(result_path.relative_to(results)),
                                          "seconds": round(seconds, 1)}


def _source_options(sweep: Sweep, out: Path, name: str) -> dict[str, Any]:
    """The EvalConfig options naming a transfer source: a run's model file, an evaluate-only model's checkpoint,
    or a zoo entry with its threat model list and weights folder."""
    model = sweep.model(name)
    if model is None:
        return {"source": str(model_path(out, name))}
    if model.is_zoo:
        return {"source": model.model, "source_zoo_threat_model": model.zoo_threat_model,
                "source_model_dir": model.model_dir}
    assert model.checkpoint is not None  # load_sweep admits checkpoints and zoo entries only as sources
    return {"source": model.checkpoint}


def _model_sha(sweep: Sweep, out: Path, name: str) -> str | None:
    """What identifies the model ``name`` in the state file: a trained run's checkpoint hash, or the hash of an
    evaluate-only model's files (None while a zoo entry's weights are not downloaded)."""
    model = sweep.model(name)
    return _checkpoint_sha(model_path(out, name)) if model is None else _files_sha(model, sweep.dataset)


def _files_sha(model: SweepModel, dataset: str) -> str | None:
    """SHA-256 over an evaluate-only model's description and the bytes of its files (a factory's module file
    among them, so an edited factory is evaluated again); None when one is missing."""
    from midbench.artifacts.usermodel import module_source_sha256

    digest = hashlib.sha256(model.describe().encode())
    if model.model is not None and not model.is_zoo:
        digest.update((module_source_sha256(model.model) or "").encode())
    for path in model.files(dataset):
        if not path.is_file():
            return None
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _finish(sweep: Sweep, state: dict[str, Any], state_path: Path, results: Path, config_label: str,
            started: float) -> SweepOutcome:
    board, paths = write_leaderboards(sweep, results, config_label)
    report, _ = write_report(results, results / REPORT_FILE, title=f"midbench report — {sweep.name}")
    paths = [*paths, report]
    seconds = {f"train {name}": record["seconds"] for name, record in state["training"].items()}
    seconds.update({f"eval {key}": record["seconds"] for key, record in state["evaluations"].items()})
    state["last_run_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(state_path, state)
    return SweepOutcome(board, paths, results, seconds)


def _run_parallel(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None, *, config_label: str,
                  say: Callable[[str], None], restart: bool, slots: tuple[str, ...],
                  slurm: SlurmOptions | None = None) -> SweepOutcome:
    """The sweep with up to ``len(slots)`` steps at once, each in a worker process on its slot's device, or with
    ``slurm`` each in a Slurm job of its own (:mod:`midbench.bench.executors`; the job ids go to the state file).

    A step starts once its inputs exist: a run once the runs it names (MID's source and teacher) are trained, an
    evaluation once its model and its transfer source are. A source through which several models are evaluated
    first gets a crafting step (:func:`crafted_sources`, :func:`_craft_job`), and its transfer evaluations wait
    for it, so that they read the source's attacks from the transfer cache instead of each crafting them at the
    same time. Each step is the serial run's step — same config, same seeds — so the result files and tables are
    the serial run's. Threads: the sweep's pinned ``threads``
    per worker, else the CPUs divided among the workers. The parent alone writes the state file, after each
    finished step; on an error, the running steps finish (their progress is kept) and the error is raised.
    """
    import os

    out, results, state_path, state = _open_folders(sweep, out_dir, results_dir)
    started = time.perf_counter()
    if slurm is not None:  # a job's threads: pinned by the sweep, else the CPUs it asked for
        threads = sweep.threads or slurm.cpus_per_task
    else:
        threads = sweep.threads or max(1, (os.cpu_count() or 1) // len(slots))
    if sweep.threads is None and slurm is None:
        say(f"[bench] note: the sweep pins no threads, so each of the {len(slots)} workers uses {threads} where a "
            "serial run uses torch's default; trained weights may then differ in the last bits — pin `threads` in "
            "[sweep] for tables identical to a serial run's")
    shared = _shared_settings(sweep)
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
                    config = replace(_resolved(ready_run, out), device=device)
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
                        hashes[source] = _model_sha(sweep, out, source)
                    if already_crafted(sweep, state, source, hashes[source], shared):
                        crafted.add(source)
                        continue
                    device = free.pop(0)
                    job = _craft_job(sweep, source, out, hashes, shared, device)
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
                        hashes[name] = _model_sha(sweep, out, name)
                device = free[0]
                job = _EvaluationJob.of(sweep, step, out, results, hashes, shared, restart, device)
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
    return _finish(sweep, state, state_path, results, config_label, started)


def _on(sweep: Sweep) -> str:
    """How many processes a step takes, for the log (nothing for one)."""
    return f", {sweep.nproc} processes under torchrun" if sweep.nproc > 1 else ""


def _craft_job(sweep: Sweep, source: str, out: Path, hashes: dict[str, str | None], shared: dict[str, Any],
               device: str) -> _EvaluationJob:
    """The crafting step of a transfer source: the source evaluated through itself under transfer, with the
    sweep's selection and the sweep's transfer cache. Under transfer every attack crafted on the source crafts
    every example, whatever model is evaluated, so this fills the cache with what each transfer evaluation of the
    sweep reads (all but the known attacks of models trained otherwise than the source, which their evaluations
    craft). Its result file goes to ``<out>/transfer-crafting`` and into no table."""
    job = _EvaluationJob.of(sweep, (source, "transfer", source), out, out / CRAFTING_DIR, hashes, shared,
                            restart=False, device=device)
    job.config = replace(job.config, name=f"craft-{source}", reuse_finished=True, discard_other_settings=True)
    ensure_writable_dir(out / CRAFTING_DIR)
    return job


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


def _checkpoint_sha(path: Path) -> str:
    from midbench.artifacts.checkpoint import load_checkpoint

    return load_checkpoint(path).sha256


