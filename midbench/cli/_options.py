"""Options several commands share, declared once so that their help and defaults cannot drift apart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.paths import DEFAULT_RESULTS_DIR

_DEVICES = "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"

#: where a command runs (default auto)
Device = Annotated[str, typer.Option(help=f"{_DEVICES}.")]
#: the device of a command whose config or sweep file may name one: None keeps the file's (else auto)
DeviceOverride = Annotated[str | None, typer.Option(help=f"{_DEVICES}; overrides the config or sweep file (default auto).")]
#: the results folder a reading command (leaderboard, report, plot) takes its result files from
ResultsDir = Annotated[Path, typer.Option(help="Directory holding runs/<dataset>/*.json.")]
#: its default, the folder ``midbench eval`` writes to by default
RESULTS_DIR = DEFAULT_RESULTS_DIR
