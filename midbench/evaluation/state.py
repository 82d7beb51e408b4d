"""Resumable evaluation: the state file of an unfinished ``midbench eval`` run (docs/reliability.md, "Faults that
lose nothing": SIGKILL during an evaluation).

The state lies beside the future result, ``<results>/runs/<dataset>/.<name>__<protocol>.evalstate.npz``, so that
rerunning *the same command* finds it. It holds the clean-correctness vector, and per attack the robust column
so far, how many attacked examples are finished, and the passes and seconds spent on them. It is rewritten
atomically after every finished batch, so a SIGKILL loses at most the batch in flight; batches are seeded by
(seed, attack, batch start), so a resumed run computes exactly what the uninterrupted run would have, and the
final matrix is identical.

A fingerprint (checkpoint hash, source hash, dataset and example indices, ε, attack specifications, seed, batch
size, device type, versions) guards the state: rerunning with other settings while an interrupted state waits is
refused (exit 2) rather than mixing two evaluations in one matrix; ``--restart`` discards it (and
``midbench calibrate``, which owns its measurements, discards it only when the settings differ). While a run holds
its state it also holds an exclusive lock on it: a second, concurrent run with the same name and protocol runs
without a state (not resumable) instead of corrupting the first one's.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from midbench.errors import UsageError
from midbench.fileio import atomic_write_with, ensure_writable_dir, hold_output, release_output, safe_file_name
from midbench.runtime.distributed import SINGLE, Shard

STATE_SUFFIX = ".evalstate.npz"


@dataclass
class AttackProgress:
    """How far one attack got: ``done`` of the attacked (clean-correct) examples are finished."""

    robust: np.ndarray
    done: int
    forward_passes: int = 0
    backward_passes: int = 0
    seconds: float = 0.0
    finished: bool = False
    details: dict[str, Any] = field(default_factory=dict)


def state_path(results_dir: str | Path, dataset: str, name: str, protocol: str, shard: Shard = SINGLE) -> Path:
    """Where the state of evaluation ``name`` under ``protocol`` lives (a hidden file beside the results); under
    torchrun each rank keeps its own (``….rank1of2.evalstate.npz``), since each holds its own batches."""
    ranks = f".rank{shard.rank}of{shard.world_size}" if shard.distributed else ""
    folder = Path(results_dir) / "runs" / safe_file_name(dataset)
    return folder / f".{safe_file_name(name)}__{protocol}{ranks}{STATE_SUFFIX}"


def states_of_other_world_sizes(results_dir: str | Path, dataset: str, name: str, protocol: str,
                                shard: Shard) -> dict[int, list[Path]]:
    """The interrupted states of this evaluation left by a run with another number of processes, by that
    number (1: a single process). Such a state cannot be continued here: its batches were dealt otherwise."""
    folder = Path(results_dir) / "runs" / safe_file_name(dataset)
    found: dict[int, list[Path]] = {}
    single = folder / f".{safe_file_name(name)}__{protocol}{STATE_SUFFIX}"
    if shard.distributed and single.exists():
        found[1] = [single]
    for path in sorted(folder.glob(f".{safe_file_name(name)}__{protocol}.rank*of*{STATE_SUFFIX}")):
        world = int(path.name[: -len(STATE_SUFFIX)].rpartition("of")[2] or 0)
        if world != shard.world_size:
            found.setdefault(world, []).append(path)
    return found


def _differences(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))


class EvalState:
    """The resumable state of one evaluation run; use :meth:`open` and, once the result is written,
    :meth:`finish`."""

    def __init__(self, path: Path | None, fingerprint: dict[str, Any]) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.clean: np.ndarray | None = None
        self.attacks: dict[str, AttackProgress] = {}
        self.resumed = False
        self._lock: BinaryIO | None = None

    @classmethod
    def open(cls, path: Path, fingerprint: dict[str, Any], restart: bool = False,
             discard_other_settings: bool = False) -> EvalState:
        """Load the state at ``path`` (or start an empty one) and lock it for this process. ``restart`` discards
        any state; ``discard_other_settings`` one whose settings differ.

        Raises:
            UsageError: the state belongs to an evaluation with other settings, or another live process runs this
                evaluation (same model name and protocol in the same results folder; exit 2).
        """
        # the fingerprint is compared as JSON, which is also how it is stored
        fingerprint = json.loads(json.dumps(fingerprint))
        ensure_writable_dir(path.parent)
        # one writer per evaluation: two processes interleaving one state would each resume from half of it
        lock = hold_output(path.with_name(path.name + ".lock"), f"this evaluation ({path.name} in {path.parent})",
                           "wait for it to finish (a rerun then reuses its result), or give this one its own --name "
                           "or --results-dir")
        state = cls(path, fingerprint)
        state._lock = lock
        try:
            if path.exists() and restart:
                path.unlink()
            if path.exists():
                state._load(discard_other_settings)
        except BaseException:
            state.finish(keep=True)  # refused: release the lock, keep the other run's state for its owner
            raise
        return state

    def _load(self, discard_other_settings: bool = False) -> None:
        assert self.path is not None
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                meta = json.loads(str(saved["meta"]))
                arrays = {key: np.asarray(saved[key]) for key in saved.files if key != "meta"}
        except Exception as error:  # noqa: BLE001 - any unreadable state is refused the same way
            raise UsageError(f"{self.path} is not a readable evaluation state ({type(error).__name__}); rerun "
                             "with --restart to discard it") from error
        differing = _differences(meta.get("fingerprint", {}), self.fingerprint)
        if differing and discard_other_settings:
            self.path.unlink()
            return
        if differing:
            raise UsageError(f"{self.path} holds an interrupted evaluation with other settings "
                             f"({', '.join(differing)} differ); rerun that command to finish it, or add --restart "
                             "to discard it")
        self.clean = arrays["clean"].astype(bool)
        for index, record in enumerate(meta["attacks"]):
            self.attacks[record["key"]] = AttackProgress(
                arrays[f"robust_{index}"].astype(bool), int(record["done"]), int(record["forward_passes"]),
                int(record["backward_passes"]), float(record["seconds"]), bool(record["finished"]),
                dict(record.get("details", {})))
        self.resumed = True

    def check_clean(self, clean: np.ndarray) -> None:
        """Record the clean-correctness vector, or check it equals the saved one (same model, same data)."""
        if self.clean is not None and not np.array_equal(self.clean, clean):
            raise UsageError(f"{self.path}: the model now classifies the clean examples differently from the "
                             "interrupted run; rerun with --restart")
        self.clean = np.asarray(clean, dtype=bool).copy()

    def progress(self, key: str) -> AttackProgress | None:
        return self.attacks.get(key)

    def record(self, key: str, progress: AttackProgress) -> None:
        """Remember ``progress`` of attack ``key`` and rewrite the state file atomically."""
        self.attacks[key] = progress
        if self.path is None:
            return
        meta = {"fingerprint": self.fingerprint, "attacks": [
            {"key": k, "done": p.done, "forward_passes": p.forward_passes, "backward_passes": p.backward_passes,
             "seconds": p.seconds, "finished": p.finished, "details": p.details} for k, p in self.attacks.items()]}
        arrays = {f"robust_{i}": p.robust for i, p in enumerate(self.attacks.values())}

        def write(handle: BinaryIO) -> None:
            buffer = io.BytesIO()  # np.savez seeks; write through memory so any handle works
            np.savez(buffer, meta=np.array(json.dumps(meta)), clean=self.clean, **arrays)
            handle.write(buffer.getvalue())

        atomic_write_with(self.path, write)

    def finish(self, keep: bool = False) -> None:
        """Release the lock; delete the state unless ``keep`` (the result is written, nothing to resume)."""
        if self.path is not None and not keep:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        if self._lock is not None:
            release_output(self._lock, remove=not keep)
            self._lock = None


