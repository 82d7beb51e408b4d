"""What every command shares: one-line errors with the right exit code, signals, and console output."""

from __future__ import annotations

import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

from midbench.errors import Interrupted, MidbenchError
from midbench.runtime.launch import leave_error

F = TypeVar("F", bound=Callable[..., Any])

RESUME_HINT = ("files already written are intact (training: rerun with --resume to continue from the last "
               "finished epoch; evaluation: rerun the same command to resume from the last finished batch)")

#: set by the global --debug option
DEBUG = {"enabled": False}


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives, so clean-up code runs like on Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def install_signal_handlers() -> None:
    """Turn SIGTERM into an exception (Ctrl-C is already KeyboardInterrupt)."""
    signal.signal(signal.SIGTERM, _raise_terminated)


def fail(error: MidbenchError) -> None:
    """Print ``error`` as one line (traceback only with --debug) and exit with its code. A process started by
    ``--nproc`` leaves the error to its launcher instead, which prints the one that matters once."""
    if DEBUG["enabled"]:
        traceback.print_exc()
    hint = "" if error.exit_code != 1 or DEBUG["enabled"] else " (run with --debug for the traceback)"
    if not leave_error(error.exit_code, f"{error}{hint}"):  # under --nproc the launcher prints it
        print(f"midbench: error: {error}{hint}", file=sys.stderr)
    raise typer.Exit(error.exit_code)


def guarded(func: F) -> F:
    """Decorator for command functions: MidbenchError → one line + exit code; signals → 130/143;
    any other exception is a bug → exit 1 with a hint."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MidbenchError as error:
            fail(error)
        except KeyboardInterrupt:
            fail(Interrupted(f"interrupted (SIGINT); {RESUME_HINT}", 130))
        except Terminated:
            fail(Interrupted(f"terminated (SIGTERM); {RESUME_HINT}", 143))
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except BrokenPipeError as error:
            if not _stdout_closed():
                _internal_error(error)
            # the reader of the output went away (``midbench attacks list | head``): stop quietly, as the shell's
            # tools do, with 128 + SIGPIPE
            raise typer.Exit(141) from None
        except Exception as error:  # noqa: BLE001 - the last line of defence: report a bug, exit 1
            # a signal that lands inside a library's cleanup (numpy closing the zip of a state file) surfaces as
            # that cleanup's error, with the interrupt as its context: it is still the interrupt
            cause = _interrupt_behind(error)
            if isinstance(cause, KeyboardInterrupt):
                fail(Interrupted(f"interrupted (SIGINT); {RESUME_HINT}", 130))
            if isinstance(cause, Terminated):
                fail(Interrupted(f"terminated (SIGTERM); {RESUME_HINT}", 143))
            _internal_error(error)
        return None

    return wrapper  # type: ignore[return-value]


def _internal_error(error: BaseException) -> NoReturn:
    """A bug: one line on stderr (the traceback with ``--debug``), exit 1."""
    if DEBUG["enabled"]:
        traceback.print_exception(error)
    print(f"midbench: internal error: {type(error).__name__}: {error} (a bug; rerun with --debug and report the "
          "traceback)", file=sys.stderr)
    raise typer.Exit(1) from None


def _stdout_closed() -> bool:
    """Whether standard output is a pipe whose reader has gone (Linux and macOS report that as an error event when
    polled); if so, it is pointed at the null device so that the interpreter's final flush does not fail again. A
    broken pipe to anything else (a worker process) is a bug to report."""
    import select

    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        gone = any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll() (Windows) or no real stdout (captured)
        return False
    if gone:
        _discard_stdout()
    return gone


def _discard_stdout() -> None:
    """Point standard output at the null device: its reader is gone, and the interpreter's final flush (or rich's
    next write) must not fail on it again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _interrupt_behind(error: BaseException) -> BaseException | None:
    """The SIGINT or SIGTERM exception in ``error``'s chain of causes and contexts, if any."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt | Terminated):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class OneLineErrors(TyperGroup):
    """The root command group: a usage error the option parser finds (an unknown option, a value outside a
    closed set, text for a number) is one line with exit code 2, like midbench's own errors, instead of
    Typer's framed message (docs/reliability.md: one line that says how to fix it)."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as error:
            code = getattr(error, "exit_code", None)
            if not (isinstance(code, int) and callable(getattr(error, "format_message", None))):
                raise  # not the parser's: a command's own errors are handled by @guarded
            message = " ".join(str(error.format_message()).split()).rstrip(".")
            if message:  # no message: the parser has printed the help (a command given no arguments)
                context = getattr(error, "ctx", None)
                hint = f"; see '{context.command_path} --help'" if context is not None else ""
                print(f"midbench: error: {message}{hint}", file=sys.stderr)
            sys.exit(code)
        # without standalone mode the parser returns an exit code (e.g. 0 after --help) instead of exiting
        sys.exit(result if isinstance(result, int) else 0)


def console() -> Any:
    """A rich console on stdout (imported lazily); when the reader of the output goes away it stops as
    :func:`guarded` does (exit 141, nothing on stderr) instead of rich's exit 1."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            _discard_stdout()
            raise typer.Exit(141)

    return _Console()


def split_csv(values: list[str] | None) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]
