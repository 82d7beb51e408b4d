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
TRAIN_STATE_FILE = "state.pt"
#: held by the process training into the folder (fileio.hold_output); removed when it ends
TRAIN_LOCK_FILE = ".train.lock"
#: the transfer cache's folder inside a results folder (``midbench eval``'s default) or a sweep's folder
TRANSFER_CACHE_DIR = "transfer-cache"


def shipped_registry_dir() -> Path:
    """The ``attacks_registry`` directory shipped inside the installed package."""
    return Path(str(resources.files("midbench.attacks_registry")))


def shipped_references_dir() -> Path:
    """The reference sets shipped inside the installed package (``results/references`` of the repository)."""
    return Path(str(resources.files("midbench.reference_sets")))


def shipped_reference_dirs() -> list[Path]:
    """One folder per shipped reference set (``<dataset>-<arch family>``), sorted by name."""
    root = shipped_references_dir()
    return sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith(("_", "."))) \
        if root.is_dir() else []


def cache_dir() -> Path:
    """A per-user cache (``$MIDBENCH_CACHE`` or ``$XDG_CACHE_HOME/midbench``) for derived, re-creatable files."""
    explicit = os.environ.get("MIDBENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "midbench"
