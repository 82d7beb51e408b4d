"""``evaluate()``: run attacks on a model under a protocol and build the per-example robustness matrix.

Robust-points-only (goal P5): each attack is run only on the examples the evaluated model classifies
correctly when clean; the others are non-robust by definition and cost no attack step. Under ``transfer`` every
attack crafted on the source crafts every example instead, so that what is crafted does not depend on the
evaluated model and can be shared through the transfer cache (:mod:`midbench.evaluation.transfer_cache`).
Each attack runs through :class:`midbench.evaluation.attacking.AttackRunner` (seeding per batch, pass counts,
resumable progress).

Under ``torchrun`` the batches are dealt across the processes (:class:`midbench.runtime.distributed.Shard`): each runs
its batches exactly as a single process would and the robust masks are merged after every attack, so the
per-example matrix is the single process's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from midbench.attacks.plans import ThreatModelPlan
from midbench.attacks.specs import ResolvedAttack
from midbench.data.batches import DeviceBatches
from midbench.data.datasets import TensorSplit
from midbench.evaluation.attacking import AttackOutcome, AttackRunner, BuiltAttacks, ProgressFn, predict
from midbench.evaluation.profile import ThreatModelCurve, climb
from midbench.evaluation.state import EvalState
from midbench.evaluation.transfer_cache import CacheStats, TransferCache
from midbench.protocols import PROTOCOLS
from midbench.runtime.distributed import SINGLE, Shard


@dataclass
class Evaluation:
    """Clean correctness per example and one :class:`AttackOutcome` per attack."""

    clean_correct: np.ndarray
    outcomes: list[AttackOutcome]
    protocol: str
    #: the unknown-attack profile: one nested curve per threat model (empty unless asked for)
    curves: list[ThreatModelCurve] = field(default_factory=list)
    #: what the transfer cache gave and took (None: no cache)
    transfer_cache: CacheStats | None = None

    @property
    def matrix(self) -> np.ndarray:
        """``robust[i, a]``: example i is still classified correctly after attack a (N × k, bool)."""
        if not self.outcomes:
            return np.zeros((self.clean_correct.shape[0], 0), dtype=bool)
        return np.stack([outcome.robust for outcome in self.outcomes], axis=1)


def evaluate(model: nn.Module, data: TensorSplit, attacks: list[tuple[ResolvedAttack, str]], *,
             device: torch.device, protocol: str = "whitebox", source_model: nn.Module | None = None,
             batch_size: int = 256, seed: int = 0, progress: ProgressFn | None = None,
             state: EvalState | None = None, profile: list[ThreatModelPlan] | None = None,
             shard: Shard = SINGLE, cache_dir: str | Path | None = None, source_sha256: str | None = None,
             built: BuiltAttacks | None = None) -> Evaluation:
    """Evaluate ``model`` on ``data`` against ``attacks`` (each with its split, "known" or "unknown").

    Args:
        protocol: ``whitebox`` crafts on ``model``; ``transfer`` crafts on ``source_model`` and classifies the
            adversarial images with ``model``.
        batch_size: examples per attack batch (AutoAttack batches internally with the same size).
        seed: the evaluation seed (every attack batch is seeded from it).
        state: resumable state: finished attacks and batches found there are not recomputed, and every batch
            finished here is recorded in it (:mod:`midbench.evaluation.state`).
        profile: threat models to climb, strength by strength, after the attacks
            (:func:`midbench.evaluation.profile.climb`).
        shard: this process's share under torchrun (every process calls ``evaluate`` with the same arguments
            and gets the same, merged :class:`Evaluation`).
        cache_dir: under ``transfer``, the transfer cache's folder (:mod:`midbench.evaluation.transfer_cache`),
            keyed by ``source_sha256``; None crafts without one (the same images). Unused under torchrun.
        built: the attacks already built (with this ``seed`` and ``batch_size``) when they were checked; an attack
            not among them is built when it runs.

    Raises:
        NumericalError: NaN/Inf logits.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}")
    if protocol == "transfer" and source_model is None:
        raise ValueError("the transfer protocol needs a source model")
    model = model.to(device).eval()
    attacker = (source_model if protocol == "transfer" else model).to(device).eval()
    images = next(DeviceBatches(data, len(data), device).epoch(shuffle=False))[0] if len(data) else None
    labels = data.labels.to(device)
    if images is None:
        return Evaluation(np.zeros(0, dtype=bool), [], protocol)
    clean_correct = (predict(model, images, batch_size) == labels).cpu().numpy()
    if state is not None:
        state.check_clean(clean_correct)
    cache = None
    if protocol == "transfer" and cache_dir is not None and source_sha256 is not None and not shard.distributed:
        cache = TransferCache.of(cache_dir, source_sha256=source_sha256, images=images, labels=labels, seed=seed,
                                 batch_size=batch_size, device=device)
    runner = AttackRunner(model, attacker, images, labels, device=device, protocol=protocol, batch_size=batch_size,
                          seed=seed, progress=progress, state=state, shard=shard, cache=cache, built=built)
    outcomes = [runner.run(spec, split, clean_correct) for spec, split in attacks]
    curves = climb(runner, profile, clean_correct) if profile else []
    return Evaluation(clean_correct, outcomes, protocol, curves, cache.stats if cache is not None else None)
