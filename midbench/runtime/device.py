"""Choosing the compute device: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda`` or ``cuda:i``."""

from __future__ import annotations

import torch

from midbench.errors import UsageError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn a ``--device`` value into a :class:`torch.device`.

    Raises:
        UsageError: an unknown name, or CUDA asked for on a machine without it.
    """
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: no CUDA device is available here; use --device cpu or auto")
        try:
            device = torch.device(name)
        except RuntimeError as error:
            raise UsageError(f"--device {name}: not a device name; use cuda or cuda:N") from error
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
        return device
    raise UsageError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N")


def configure_for_speed(device: torch.device) -> None:
    """cuDNN autotuning on CUDA (fixed input shapes make it pay off); nothing on CPU."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
