"""Where midbench finds its shipped data and writes its outputs, resolved in one place."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

#: Results go to ``./results`` of the working directory, like any tool that writes where it is run.
DEFAULT_RESULTS_DIR = Path("results")

#: a training run's folder: the last epoch's checkpoint, the best epoch's, and the resumable state
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"
STATE_FILE = "state.pt"


def shipped_registry_dir() -> Path:
    """The ``attacks_registry`` directory shipped inside the installed package."""
    return Path(str(resources.files("midbench.attacks_registry")))


def cache_dir() -> Path:
    """A per-user cache (``$MIDBENCH_CACHE`` or ``$XDG_CACHE_HOME/midbench``) for derived, re-creatable files."""
    explicit = os.environ.get("MIDBENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "midbench"
