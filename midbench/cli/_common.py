"""What every command shares: one-line errors with the right exit code, signals, and console output."""

from __future__ import annotations

import functools
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from midbench.errors import Interrupted, MidbenchError

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
    """Print ``error`` as one line (traceback only with --debug) and exit with its code."""
    if DEBUG["enabled"]:
        traceback.print_exc()
    hint = "" if error.exit_code != 1 or DEBUG["enabled"] else " (run with --debug for the traceback)"
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
        except Exception as error:  # noqa: BLE001 - the last line of defence: report a bug, exit 1
            if DEBUG["enabled"]:
                traceback.print_exc()
            print(f"midbench: internal error: {type(error).__name__}: {error} (a bug; rerun with --debug and "
                  "report the traceback)", file=sys.stderr)
            raise typer.Exit(1) from None
        return None

    return wrapper  # type: ignore[return-value]


def console() -> Any:
    """A rich console on stdout (imported lazily)."""
    from rich.console import Console

    return Console()


def split_csv(values: list[str] | None) -> list[str]:
    """``["a,b", "c"]`` → ``["a", "b", "c"]``."""
    return [item.strip() for value in values or [] for item in value.split(",") if item.strip()]
