"""``--nproc K``: run the same command under ``torchrun`` with K processes on this machine
(:mod:`midbench.runtime.launch` starts them and reads back their error). The rendezvous port must be free: a taken
one is refused here with a one-line error rather than by a stack trace from every process.
"""

from __future__ import annotations

import socket
import sys

from midbench.errors import UsageError
from midbench.runtime.distributed import launched_by_torchrun
from midbench.runtime.launch import run_torchrun

#: what a rerun does after a killed or crashed process, per command
RESUME_HINTS = {"eval": "finished batches are kept: rerun the same command to resume",
                "train": "finished epochs are kept: rerun the same command with --resume to continue"}


def launch_torchrun(command: str, nproc: int, port: int | None, n_examples: int | None = None) -> int:
    """Run ``midbench <command> <the same options, without --nproc/--master-port>`` under torchrun with
    ``nproc`` processes and return its exit code.

    The processes leave their errors in a folder instead of each printing them; when the run fails, the error
    that caused it (the lowest rank's, preferring one that is not the stop torchrun sent to the others) is
    printed once, as one line, and its exit code returned.

    Raises:
        UsageError: ``nproc`` below 1 or above ``n_examples``, already under torchrun, the command line cannot be
            found, or ``port`` in use.
    """
    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, got {nproc}")
    if n_examples is not None and nproc > n_examples:
        raise UsageError(f"--nproc {nproc} is more processes than the {n_examples} examples; use at most "
                         f"{n_examples}")
    if launched_by_torchrun():
        raise UsageError("--nproc launches torchrun; under torchrun already, leave it out")
    arguments = _arguments_after(command)
    launched = run_torchrun(["midbench", command, *arguments], nproc, None if port is None else _checked_port(port))
    if launched.returncode == 0:
        sys.stderr.write(launched.stderr)
        return 0
    if launched.error is None:  # no process reported one: a crash or a kill; torchrun's report says which
        sys.stderr.write(launched.stderr)
        print(f"midbench: error: a process of the {nproc}-process run ended without a midbench error (killed or "
              f"crashed; torchrun's report is above); {RESUME_HINTS[command]}",
              file=sys.stderr)
        return launched.returncode
    code, message = launched.error
    print(f"midbench: error: {message}", file=sys.stderr)
    return code


def _arguments_after(command: str) -> list[str]:
    """This process's own options after ``command``, without ``--nproc`` and ``--master-port``."""
    argv = sys.argv[1:]
    if command not in argv:
        raise UsageError(f"--nproc needs the `midbench {command}` command line; run it from a shell")
    arguments = argv[argv.index(command) + 1:]
    kept: list[str] = []
    skip = False
    for argument in arguments:
        if skip:
            skip = False
            continue
        name = argument.split("=", 1)[0]
        if name in ("--nproc", "--master-port"):
            skip = "=" not in argument
            continue
        kept.append(argument)
    return kept


def _checked_port(port: int) -> int:
    if not 0 < port < 65536:
        raise UsageError(f"--master-port must be a port number (1–65535), got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            raise UsageError(f"--master-port {port} is in use ({error.strerror}); pick another or leave it out "
                             "for a free one") from error
    return port
