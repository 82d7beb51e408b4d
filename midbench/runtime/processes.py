"""Independent jobs side by side, each in a process of its own (``midbench calibrate``, ``midbench tune`` and the
demo's steps).

Both commands run jobs that share nothing but files (one training run, or one reference's chain, per job). With
one worker they run one after the other in this process; with more, in a pool of spawned processes, started in
the order given. A job pins its own torch threads; with pinned threads a job's numbers are the same bits in
whichever process it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any


class InlineExecutor(Executor):
    """An executor of one worker that is this process: each submitted job runs at once, its result or error in
    the returned future (what a pool would hand back), so callers need no separate serial path."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001 - handed to the caller through the future, as a pool does
            future.set_exception(error)
        return future


def process_pool(workers: int) -> Executor:
    """``workers`` spawned processes, or :class:`InlineExecutor` for one worker."""
    if workers <= 1:
        return InlineExecutor()
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # spawn: a fresh interpreter per worker (fork after torch's thread pools exist is unsafe)
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def run_side_by_side(workers: int, job: Callable[..., Any], arguments: dict[str, tuple[Any, ...]]
                     ) -> dict[str, Any]:
    """``job(*arguments[key])`` for every key: one after the other, or ``workers`` at once in processes of their
    own, started in the order given. Returns each key's result, in the order given. A job's error is raised here;
    what the others finished before it stays on disk (the commands resume from it)."""
    if workers <= 1 or len(arguments) <= 1:
        return {key: job(*args) for key, args in arguments.items()}
    from concurrent.futures import as_completed

    with process_pool(workers) as pool:
        futures = {pool.submit(job, *args): key for key, args in arguments.items()}
        results = {futures[future]: future.result() for future in as_completed(futures)}
    return {key: results[key] for key in arguments}
