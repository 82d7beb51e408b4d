"""Options several commands share, declared once so that their help and defaults cannot drift apart."""

from __future__ import annotations

from typing import Annotated

import typer

_DEVICES = "auto (CUDA when present, else CPU), cpu, cuda or cuda:N"

#: where a command runs (default auto)
Device = Annotated[str, typer.Option(help=f"{_DEVICES}.")]
#: the device of a command whose config or sweep file may name one: None keeps the file's (else auto)
DeviceOverride = Annotated[str | None, typer.Option(help=f"{_DEVICES}; overrides the config or sweep file (default auto).")]
