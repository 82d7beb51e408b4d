"""Where a sweep's steps run: worker processes of this machine (``local``), or one Slurm job per step (``slurm``,
through submitit). docs/clusters.md explains both.

The sweep's scheduler (:func:`midbench.bench.sweep._run_parallel`) is the same for both: it submits a step once its
inputs exist (a run once the runs it names are trained, an evaluation once its model and its transfer source are),
waits for any to finish, records it in the state file and submits what became ready. Only the pool differs:

- :class:`LocalPool`: a pool of spawned processes, one slot per worker (``--workers``, ``--devices``).
- :class:`SlurmPool`: every step a job of its own, with the sweep's ``[slurm]`` options (partition, GPUs, CPUs,
  time, memory, account, QOS and any other ``sbatch`` option), its log in ``<out>/slurm/<job id>/``. submitit
  (Meta's library for submitting Python functions to Slurm) pickles the function and its arguments, writes the
  sbatch script and reads the result back.

A job that ends without a result (cancelled with ``scancel``, timed out, failed, preempted) is noticed even on a
cluster without Slurm accounting (``sacct``): once ``squeue`` no longer lists it and no result was written, it
failed, and the error carries the last lines of its log. The state file records only finished steps, so rerunning
the same command submits just the unfinished ones; a run interrupted mid-epoch resumes from its checkpoint.

With ``[slurm] dependencies = true`` that scheduler is not used: :mod:`midbench.bench.submitted` submits every
unfinished step at once, each after its prerequisites' jobs (``afterok``), optionally as job arrays
(:meth:`SlurmPool.submit_after`), and a rerun adopts the jobs still queued (:meth:`SlurmPool.adopt`).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from midbench.config import check_types
from midbench.errors import StepFailed, UsageError

EXECUTORS = ("local", "slurm")
#: seconds between two looks at the Slurm queue while waiting
POLL_SECONDS = 2.0
#: lines of a failed job's log shown in the error
LOG_LINES = 15


@dataclass(frozen=True)
class SlurmOptions:
    """The ``[slurm]`` table of a sweep file (and ``--slurm-option KEY=VALUE``): the resources of every job."""

    partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    #: the time limit of a job, in minutes
    time: int | None = None
    #: memory per node, in GB
    mem_gb: int | None = None
    account: str | None = None
    qos: str | None = None
    #: run at most this many jobs at once (default: every ready step)
    max_jobs: int | None = None
    #: submit every step at once, each job with ``--dependency=afterok:`` on the jobs of the steps it needs
    #: (:mod:`midbench.bench.submitted`); default: the driver submits each step when its inputs exist
    dependencies: bool = False
    #: with ``dependencies``: the steps that need the same jobs go into one job array
    arrays: bool = False
    #: any other sbatch option, by its long name without dashes (``{"constraint": "a100"}``)
    extra: dict[str, str] = field(default_factory=dict)


_SLURM_KEYS = tuple(f.name for f in fields(SlurmOptions) if f.name != "extra")
#: the named resources that are counts (the others are names or switches); a count is at least 1, GPUs at least 0
_COUNTS = tuple(key for key in _SLURM_KEYS if typing.get_type_hints(SlurmOptions)[key] == int | None)
#: how midbench submits rather than what a job asks for: true or false
_SWITCHES = tuple(key for key in _SLURM_KEYS if typing.get_type_hints(SlurmOptions)[key] is bool)
_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def slurm_options(table: dict[str, Any], pairs: Iterable[str] = (), where: str = "[slurm]") -> SlurmOptions:
    """``[slurm]`` of a sweep file, then the ``KEY=VALUE`` pairs of the command line over it. A key that is not one
    of the named resources is passed to sbatch as it is (``constraint``, ``nodelist``, ...).

    Raises:
        UsageError: a value of the wrong type, a pair that is not ``KEY=VALUE``.
    """
    values = {key.replace("-", "_"): value for key, value in table.items()}
    extra = {key: value for key, value in values.items() if key not in _SLURM_KEYS}
    named = {key: value for key, value in values.items() if key in _SLURM_KEYS}
    check_types(named, SlurmOptions, label=lambda key: f"{where} {key}")
    for key, value in extra.items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise UsageError(f"{where} {key} is passed to sbatch and must be a string or an integer, got {value!r}")
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise UsageError(f"--slurm-option {pair!r}: write KEY=VALUE, e.g. partition=gpu")
        if key in _COUNTS:
            try:
                named[key] = int(text)
            except ValueError as error:
                raise UsageError(f"--slurm-option {key} must be an integer, got {text!r}") from error
        elif key in _SWITCHES:
            if text.strip().lower() not in _TRUE + _FALSE:
                raise UsageError(f"--slurm-option {key} must be true or false, got {text!r}")
            named[key] = text.strip().lower() in _TRUE
        elif key in _SLURM_KEYS:
            named[key] = text.strip()
        else:
            extra[key] = text.strip()
    for key in _COUNTS:
        if named.get(key) is not None and named[key] < (0 if key == "gpus_per_node" else 1):
            raise UsageError(f"{where} {key} must be at least {0 if key == 'gpus_per_node' else 1}, got {named[key]}")
    if named.get("arrays") and not named.get("dependencies"):
        raise UsageError(f"{where} arrays = true needs dependencies = true: a job array is submitted at once, "
                         "with the dependencies of its steps")
    if named.get("dependencies") and named.get("max_jobs") is not None:
        raise UsageError(f"{where} max_jobs holds steps back in the driver, and dependencies = true submits them "
                         "all at once: leave one of the two out")
    return SlurmOptions(**named, extra={key: str(value) for key, value in extra.items()})


class LocalPool:
    """Spawned worker processes of this machine (a fresh interpreter each: no forked torch threads)."""

    def __init__(self, workers: int) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)

    def submit(self, fn: Callable[..., Any], *args: Any, name: str = "") -> Any:
        return self._pool.submit(fn, *args)

    @staticmethod
    def job_id(handle: Any) -> str | None:
        return None

    @staticmethod
    def wait(handles: Iterable[Any]) -> set[Any]:
        from concurrent.futures import FIRST_COMPLETED, wait

        return set(wait(list(handles), return_when=FIRST_COMPLETED).done)


class SlurmJob:
    """One step's Slurm job, with :meth:`done` and :meth:`result` like a future."""

    def __init__(self, job: Any, name: str) -> None:
        self.job, self.name = job, name
        self._lost = False

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    def done(self) -> bool:
        if self._lost or self.job.done():
            return True
        if in_queue(self.job_id):
            return False
        # gone from the queue: it finished (its result may have appeared since the first look) or it died
        self._lost = not self.job.done()
        return True

    def result(self) -> Any:
        if self._lost:
            raise StepFailed(f"step {self.name}: Slurm job {self.job_id} ended without a result (cancelled, timed "
                            f"out, failed or preempted); rerun the same command to submit it again."
                            f"{_log_tail(self.job)}")
        try:
            return self.job.result()
        except Exception as error:  # noqa: BLE001 - submitit raises its own errors for a job that failed
            raise StepFailed(f"step {self.name}: Slurm job {self.job_id} failed: {str(error).splitlines()[0]}"
                            f"{_log_tail(self.job)}") from error


class SlurmPool:
    """One Slurm job per step, submitted through submitit with the sweep's :class:`SlurmOptions`."""

    def __init__(self, folder: Path, options: SlurmOptions, name: str, threads: int | None) -> None:
        check_slurm(options)
        import submitit

        self.folder = Path(folder)
        self.executor = submitit.SlurmExecutor(folder=str(self.folder / "%j"), max_num_timeout=0)
        parameters: dict[str, Any] = {"job_name": f"midbench-{name}", "ntasks_per_node": 1, "nodes": 1}
        cpus = options.cpus_per_task or threads
        for key, value in (("partition", options.partition), ("gpus_per_node", options.gpus_per_node),
                           ("cpus_per_task", cpus), ("time", options.time), ("mem", _memory(options.mem_gb)),
                           ("account", options.account), ("qos", options.qos)):
            if value is not None:
                parameters[key] = value
        extra = dict(options.extra)
        if options.dependencies:  # a job whose prerequisite failed is cancelled, not left pending for ever
            extra.setdefault("kill_on_invalid_dep", "yes")
        if extra:
            parameters["additional_parameters"] = extra
        self.executor.update_parameters(**parameters)

    def __enter__(self) -> SlurmPool:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def submit(self, fn: Callable[..., Any], *args: Any, name: str = "") -> SlurmJob:
        return SlurmJob(self.executor.submit(fn, *args), name)

    def submit_after(self, calls: list[tuple[str, Callable[..., Any], tuple[Any, ...]]], after: Iterable[str],
                     array: bool) -> list[SlurmJob]:
        """Submit ``calls`` (name, function, arguments), each starting only once every job of ``after`` has
        finished successfully (``--dependency=afterok:``); with ``array``, as one job array."""
        after = list(after)
        self.executor.update_parameters(dependency="afterok:" + ":".join(after) if after else None)
        if not array or len(calls) == 1:
            return [SlurmJob(self.executor.submit(fn, *args), name) for name, fn, args in calls]
        with self.executor.batch():
            jobs = [self.executor.submit(fn, *args) for _, fn, args in calls]
        return [SlurmJob(job, name) for job, (name, _, _) in zip(jobs, calls, strict=True)]

    def adopt(self, job_id: str, name: str) -> SlurmJob:
        """The job ``job_id`` that an earlier ``midbench bench`` submitted into this pool's folder: whether it is
        done and its result are read from the queue and from the files it left."""
        import submitit

        return SlurmJob(submitit.SlurmJob(folder=self.executor.folder, job_id=job_id), name)

    @staticmethod
    def job_id(handle: SlurmJob) -> str:
        return handle.job_id

    @staticmethod
    def wait(handles: Iterable[SlurmJob]) -> set[SlurmJob]:
        pending = list(handles)
        while True:
            finished = {handle for handle in pending if handle.done()}
            if finished:
                return finished
            time.sleep(POLL_SECONDS)


def check_slurm(options: SlurmOptions) -> None:
    """Refuse a Slurm run that cannot start, before anything is submitted.

    Raises:
        UsageError: sbatch, squeue or sinfo is not on PATH, submitit is not installed, or the partition does not
            exist.
    """
    missing = [tool for tool in ("sbatch", "squeue", "sinfo") if shutil.which(tool) is None]
    if missing:
        raise UsageError(f"--executor slurm needs Slurm's {', '.join(missing)} on PATH; run it on a machine of the "
                         "cluster (a login node), or use --workers K on this one")
    try:
        import submitit  # noqa: F401
    except ImportError as error:
        raise UsageError("--executor slurm needs submitit: pip install 'midbench[slurm]'") from error
    if options.partition is not None:
        listed = subprocess.run(["sinfo", "-h", "-o", "%P", "-p", options.partition], capture_output=True,
                                text=True, check=False)
        if listed.returncode != 0 or not listed.stdout.strip():
            known = subprocess.run(["sinfo", "-h", "-o", "%P"], capture_output=True, text=True, check=False)
            names = ", ".join(part.strip().rstrip("*") for part in known.stdout.split()) or "none listed"
            raise UsageError(f"Slurm partition {options.partition!r} does not exist (sinfo lists: {names})")


def _memory(gigabytes: int | None) -> str | None:
    return f"{gigabytes}G" if gigabytes is not None else None


def in_queue(job_id: str) -> bool:
    """Whether ``squeue`` still lists the job (pending, running, completing)."""
    listed = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True, check=False)
    # squeue exits non-zero for a job id it no longer knows
    return listed.returncode == 0 and bool(listed.stdout.strip())


def queue_state(job_id: str) -> str:
    """The job's state as ``squeue`` shows it (``PENDING``, ``RUNNING``, ...), or ``not in the queue``."""
    if shutil.which("squeue") is None:
        return "squeue not on PATH"
    listed = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, check=False)
    return listed.stdout.strip() or "not in the queue"


def _log_tail(job: Any) -> str:
    """The last lines of a job's stderr (else stdout), indented, or nothing."""
    for read in (job.stderr, job.stdout):
        try:
            text = read() or ""
        except Exception:  # noqa: BLE001 - a log that cannot be read adds nothing to the error
            text = ""
        lines = [line for line in text.splitlines() if line.strip()][-LOG_LINES:]
        if lines:
            return "\n  log (" + str(job.paths.stderr if read == job.stderr else job.paths.stdout) + "):\n    " + \
                "\n    ".join(lines)
    return ""
