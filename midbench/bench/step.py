"""The two kinds of sweep step, as functions a worker process or a Slurm job runs: :func:`train_step` and
:func:`evaluate_step`. With ``nproc`` above 1 (``[sweep] nproc = K``) a step runs under torchrun with K processes
on the machine it is on (data-parallel training, sharded evaluation: docs/clusters.md), the way ``midbench train
--nproc K`` and ``midbench eval --nproc K`` do.

Such a step is written to a file (pickled: the step's function and its arguments, which midbench wrote itself a
moment before, in a private temporary folder), and torchrun starts ``python -m midbench.bench.step FILE`` K times.
Every process runs the function; rank 0 writes what it returns beside the file, and the caller reads it back.
"""

from __future__ import annotations

import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from midbench.errors import ArtifactError, MidbenchError, StepFailed, UsageError

#: the file beside the step's where rank 0 leaves the step's return value
RESULT_SUFFIX = ".result"


def train_step(config: Any, folder: Path, progress: bool, threads: int | None = None, nproc: int = 1
               ) -> tuple[int, float]:
    """Train (or resume) one run of a sweep; returns its epochs and the seconds spent."""
    if nproc > 1:
        return _in_processes("train_step", (config, folder, False, threads), nproc)
    from midbench.paths import TRAIN_STATE_FILE
    from midbench.training import train

    _use_threads(threads)
    clock = time.perf_counter()
    result = train(config, folder, resume=(folder / TRAIN_STATE_FILE).exists(), progress=progress)
    return len(result.log), time.perf_counter() - clock


def evaluate_step(config: Any, threads: int | None = None, nproc: int = 1) -> tuple[Path, float]:
    """Run one evaluation of a sweep (an ``EvalConfig``); returns its result file and the seconds spent."""
    if nproc > 1:
        return _in_processes("evaluate_step", (config, threads), nproc)
    from midbench.evaluation.runner import run_evaluation

    _use_threads(threads)
    clock = time.perf_counter()
    evaluated = run_evaluation(config)
    # under torchrun rank 0 alone writes the result; the others return None, which nobody reads
    return evaluated.path, time.perf_counter() - clock  # type: ignore[return-value]


def _use_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _in_processes(function: str, arguments: tuple[Any, ...], nproc: int) -> Any:
    """Run ``function(*arguments)`` in ``nproc`` processes under torchrun and return rank 0's value.

    Raises:
        UsageError, ArtifactError, StepFailed: what stopped the processes (a process's own error keeps its kind:
            exit 2 or 3; anything else, a kill or a crash included, is a failed step, exit 5).
    """
    from midbench.runtime.launch import run_torchrun

    with tempfile.TemporaryDirectory(prefix="midbench-step-") as folder:
        path = Path(folder) / "step.pkl"
        path.write_bytes(pickle.dumps({"function": function, "arguments": arguments}))
        launched = run_torchrun(["midbench.bench.step", str(path)], nproc)
        if launched.returncode == 0:
            sys.stderr.write(launched.stderr)  # torchrun's notes, in the step's log
            return pickle.loads(path.with_suffix(RESULT_SUFFIX).read_bytes())
    if launched.error is None:
        tail = " | ".join(line for line in launched.stderr.strip().splitlines()[-3:])
        raise StepFailed(f"a process of the {nproc}-process step ended without a midbench error (killed or "
                         f"crashed; exit code {launched.returncode}): {tail}; rerun the same command to continue")
    code, message = launched.error
    kind = {UsageError.exit_code: UsageError, ArtifactError.exit_code: ArtifactError}.get(code, StepFailed)
    raise kind(message)


def main(argv: list[str]) -> int:
    """One process of a step started by :func:`_in_processes`."""
    import os

    from midbench.runtime.distributed import finish
    from midbench.runtime.launch import leave_error

    path = Path(argv[0])
    step = pickle.loads(path.read_bytes())  # written by this midbench a moment ago, in its own temporary folder
    try:
        value = {"train_step": train_step, "evaluate_step": evaluate_step}[step["function"]](*step["arguments"])
    except MidbenchError as error:
        if not leave_error(error.exit_code, str(error)):
            print(f"midbench: error: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        finish()  # leave the process group, so that the processes exit without warnings
    if os.environ.get("RANK", "0") == "0":
        path.with_suffix(RESULT_SUFFIX).write_bytes(pickle.dumps(value))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
