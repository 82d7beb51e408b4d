"""Starting K processes of midbench under ``torchrun`` on this machine: ``midbench train|eval --nproc K``
(:mod:`midbench.cli._launch`) and the steps of a sweep with ``[sweep] nproc = K`` (:mod:`midbench.bench.step`).

torchrun (``torch.distributed.run``) starts the processes, sets their ranks and the rendezvous address, and stops
them all when one fails; midbench builds its command line and reads back the error that stopped the run. A process
that fails leaves its error as a record in the folder named by ``MIDBENCH_ERROR_DIR`` instead of printing it, and
the launcher shows the one that matters, once: the lowest rank's that is not an interruption (the other ranks
were stopped because of it).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: set by the launcher: the folder where each process of the run leaves its error
ERROR_DIR_VARIABLE = "MIDBENCH_ERROR_DIR"


@dataclass(frozen=True)
class Launched:
    """How a torchrun run ended."""

    returncode: int
    #: the error that stopped it, as (exit code, message), when a process reported one
    error: tuple[int, str] | None
    #: torchrun's own report (its stderr), for a run that ended without a reported error
    stderr: str


def run_torchrun(module_arguments: list[str], nproc: int, port: int | None = None) -> Launched:
    """Run ``python -m <module_arguments>`` in ``nproc`` processes under torchrun, on this machine (rendezvous on
    127.0.0.1 at ``port``, default a free one), and wait for them. Their standard output is this process's."""
    port = free_port() if port is None else port
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", *module_arguments]
    with tempfile.TemporaryDirectory(prefix="midbench-ranks-") as errors:
        env = {**os.environ, ERROR_DIR_VARIABLE: errors}
        completed = subprocess.run(launcher, env=env, stderr=subprocess.PIPE, text=True, check=False)
        error = None if completed.returncode == 0 else reported_error(Path(errors))
    return Launched(completed.returncode, error, completed.stderr)


def leave_error(code: int, message: str) -> bool:
    """In a process started by :func:`run_torchrun`: leave the error for the launcher and return True; elsewhere
    return False (the caller prints it)."""
    error_dir = os.environ.get(ERROR_DIR_VARIABLE)
    if not error_dir or "RANK" not in os.environ:
        return False
    record = json.dumps({"code": code, "message": message})
    Path(error_dir, f"rank{os.environ['RANK']}.json").write_text(record, encoding="utf-8")
    return True


def reported_error(folder: Path) -> tuple[int, str] | None:
    """The error to show from the processes' records: the lowest rank's that is not an interruption (the
    others were stopped because of it), else the lowest rank's interruption; None when no process left one."""
    records = []
    for path in folder.glob("rank*.json"):
        record = json.loads(path.read_text(encoding="utf-8"))
        records.append((int(record["code"]) in (130, 143), int(path.stem[4:]), int(record["code"]), record["message"]))
    if not records:
        return None
    _, _, code, message = min(records)
    return code, message


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
