"""Independent jobs side by side, each in a process of its own (``midbench calibrate`` and ``midbench tune``).

Both commands run jobs that share nothing but files (one training run, or one reference's chain, per job). With
one worker they run one after the other in this process; with more, in a pool of spawned processes, started in
the order given. A job pins its own torch threads; with pinned threads a job's numbers are the same bits in
whichever process it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def run_side_by_side(workers: int, job: Callable[..., Any], arguments: dict[str, tuple[Any, ...]]
                     ) -> dict[str, Any]:
    """``job(*arguments[key])`` for every key: one after the other, or ``workers`` at once in processes of their
    own, started in the order given. Returns each key's result, in the order given. A job's error is raised here;
    what the others finished before it stays on disk (the commands resume from it)."""
    if workers <= 1 or len(arguments) <= 1:
        return {key: job(*args) for key, args in arguments.items()}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a fresh interpreter per worker (fork after torch's thread pools exist is unsafe)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(job, *args): key for key, args in arguments.items()}
        results = {futures[future]: future.result() for future in as_completed(futures)}
    return {key: results[key] for key in arguments}
