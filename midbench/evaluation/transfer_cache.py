"""Adversarial examples crafted on a transfer source, stored once and reused by every evaluation that needs them
(docs/evaluation.md, "The transfer cache").

Under the transfer protocol the adversarial images depend on the source model, the attack, the seed, the examples
and how they were batched, never on the evaluated model: the engine crafts every example of the evaluated slice,
in fixed batches (:class:`midbench.evaluation.attacking.AttackRunner`). Ten models
evaluated through one source therefore need the source's attacks once. Each attack step has a folder named by
the digest of everything that decides its images (the source's weights hash, the data, the seed, the batch size,
the device type, the attack's full specification and step name, and the code that runs it:
:func:`midbench.evaluation.digests.code_digest`), so a changed source, attack version, seed or checkout
misses.

A folder holds one file per crafted batch: the examples' indices in the evaluated split, their adversarial images
and the SHA-256 of both. A file that is unreadable or whose hash does
not match (a truncated write, a corrupt disk) is deleted and its examples are crafted again — never used. Files
are written atomically under unique names, so evaluations running side by side (``bench --workers``, Slurm jobs)
may share a cache; two that craft the same batch at once write identical files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from midbench.attacks.specs import ResolvedAttack
from midbench.evaluation.digests import code_digest
from midbench.fileio import atomic_write_with

_SUFFIX = ".npz"


def data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of the evaluated examples (images and labels, in order): the cache's notion of "the same data"."""
    digest = hashlib.sha256()
    for tensor in (images, labels):
        array = np.ascontiguousarray(tensor.detach().cpu().numpy())
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def _array_digest(indices: np.ndarray, images: np.ndarray) -> str:
    digest = hashlib.sha256()
    for array in (indices, images):
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass
class CacheStats:
    """What one evaluation took from the cache and added to it (examples), and the entries it found corrupt."""

    reused: int = 0
    crafted: int = 0
    corrupt: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"reused": self.reused, "crafted": self.crafted, "corrupt": self.corrupt}


@dataclass
class TransferCache:
    """The cache of one evaluation: its folder and the digest of what all its steps share."""

    root: Path
    #: source weights, data, seed, batch size, device type and code, as one digest (:meth:`of`)
    context: str
    stats: CacheStats = field(default_factory=CacheStats)

    @classmethod
    def of(cls, root: str | Path, *, source_sha256: str, images: torch.Tensor, labels: torch.Tensor, seed: int,
           batch_size: int, device: torch.device) -> TransferCache:
        context = {"source": source_sha256, "data": data_digest(images, labels), "seed": seed,
                   "batch_size": batch_size, "device": device.type, "code": code_digest()}
        return cls(Path(root), hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest())

    def step(self, step_key: str, attack: ResolvedAttack, per_example: bool) -> CacheStep:
        """The entries of one attack step (``step_key``: its name in the state file)."""
        what = {"context": self.context, "step": step_key, "attack": attack.key, "spec": attack.equivalence(),
                "implementation": attack.implementation, "per_example": per_example}
        name = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()
        return CacheStep(self.root / name[:2] / name, self.stats)


class CacheStep:
    """One attack step's cached batches: a batch is reused only when it holds exactly the same examples (an
    attack's output depends on its batch: its randomness, and the last bits of a convolution's sums)."""

    def __init__(self, folder: Path, stats: CacheStats) -> None:
        self.folder, self.stats = folder, stats
        self._batches: dict[bytes, np.ndarray] | None = None

    def _load(self) -> dict[bytes, np.ndarray]:
        batches: dict[bytes, np.ndarray] = {}
        for path in sorted(self.folder.glob(f"*{_SUFFIX}")) if self.folder.is_dir() else []:
            entry = _read(path)
            if entry is None:
                self.stats.corrupt += 1
                path.unlink(missing_ok=True)
                continue
            indices, images = entry
            batches[indices.tobytes()] = images
        return batches

    def batch(self, indices: np.ndarray) -> np.ndarray | None:
        """The images of exactly this batch, or None."""
        if self._batches is None:
            self._batches = self._load()
        found = self._batches.get(np.asarray(indices, dtype=np.int64).tobytes())
        if found is not None:
            self.stats.reused += len(indices)
        return found

    def store(self, indices: np.ndarray, images: torch.Tensor) -> None:
        """Add a crafted batch (atomically, under a name of its own; the writer creates the folder)."""
        indices = np.asarray(indices, dtype=np.int64)
        array = images.detach().cpu().numpy()
        self.stats.crafted += len(indices)
        if not len(indices):
            return
        digest = _array_digest(indices, array)
        final = self.folder / f"{int(indices[0])}-{len(indices)}-{digest[:16]}{_SUFFIX}"
        atomic_write_with(final, lambda stream: np.savez(stream, indices=indices, images=array,
                                                         sha256=np.array(digest)))
        if self._batches is not None:
            self._batches[indices.tobytes()] = array


def _read(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A file's indices and images, or None when it is unreadable or its hash does not match."""
    try:
        with np.load(path, allow_pickle=False) as saved:
            indices, images, recorded = saved["indices"], saved["images"], str(saved["sha256"])
    except Exception:  # noqa: BLE001 - numpy's header parser raises SyntaxError or TokenError on a corrupt header
        return None
    if indices.ndim != 1 or images.shape[:1] != indices.shape or _array_digest(indices, images) != recorded:
        return None
    return indices, images

