"""Errors that reach the user, each with its exit code (README, "Exit codes").

Library code raises these with a message that says how to fix the problem; the CLI prints that one line
and exits with ``exit_code``.
"""

from __future__ import annotations


class MidbenchError(Exception):
    """Base class: an error the user can act on. ``exit_code`` 1 means a bug."""

    exit_code: int = 1


class UsageError(MidbenchError):
    """Bad option, unknown name, bad ε, mismatched resume state."""

    exit_code = 2


class ArtifactError(MidbenchError):
    """A checkpoint or data file is missing, corrupted, unsafe or incompatible; the disk is full."""

    exit_code = 3


class NumericalError(MidbenchError):
    """NaN or Inf in a loss or in logits."""

    exit_code = 4


class StepFailed(MidbenchError):
    """A step of a sweep ran elsewhere (a Slurm job) and ended without a result; the finished steps are kept and a
    rerun submits the others again."""

    exit_code = 5


class Interrupted(MidbenchError):
    """Stopped by a signal after writing resumable state (130 for SIGINT, 143 for SIGTERM)."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
