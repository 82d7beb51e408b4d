"""``evaluate()``: run attacks on a model under a protocol and build the per-example robustness matrix.

Robust-points-only (goal P5): each attack is run only on the examples the evaluated model classifies
correctly when clean; the others are non-robust by definition and cost no attack step. Every batch of every
attack draws its randomness from a generator seeded by (seed, attack, batch), inside ``fork_rng`` so the
caller's RNG is untouched: results do not depend on which other attacks ran or in which order.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from midbench.attacks.specs import ResolvedAttack
from midbench.data.batches import DeviceBatches
from midbench.data.registry import TensorSplit
from midbench.errors import NumericalError
from midbench.evaluation.counting import PassCounter
from midbench.evaluation.state import AttackProgress, EvalState

PROTOCOLS = ("whitebox", "transfer")

#: progress callback: (attack key, examples done, examples to attack)
ProgressFn = Callable[[str, int, int], None]


@dataclass
class AttackOutcome:
    """One attack's column of the robustness matrix and its cost."""

    attack: ResolvedAttack
    split: str
    robust: np.ndarray
    seconds: float
    forward_passes: int
    backward_passes: int
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Evaluation:
    """Clean correctness per example and one :class:`AttackOutcome` per attack."""

    clean_correct: np.ndarray
    outcomes: list[AttackOutcome]
    protocol: str

    @property
    def matrix(self) -> np.ndarray:
        """``robust[i, a]``: example i is still classified correctly after attack a (N × k, bool)."""
        if not self.outcomes:
            return np.zeros((self.clean_correct.shape[0], 0), dtype=bool)
        return np.stack([outcome.robust for outcome in self.outcomes], axis=1)


def batch_seed(seed: int, attack_key: str, batch_start: int) -> int:
    """The seed of one attack batch: independent of the other attacks of the run."""
    return (seed * 1_000_003 + zlib.crc32(attack_key.encode()) * 7919 + batch_start) % (2**63 - 1)


def predict(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Predicted labels of float ``images``; raises :class:`NumericalError` on NaN/Inf logits."""
    labels = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            logits = model(images[start:start + batch_size])
            if not torch.isfinite(logits).all():
                raise NumericalError("the model produced NaN or Inf logits; no result was written — check the "
                                     "checkpoint")
            labels.append(logits.argmax(1))
    return torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long, device=images.device)


def evaluate(model: nn.Module, data: TensorSplit, attacks: list[tuple[ResolvedAttack, str]], *,
             device: torch.device, protocol: str = "whitebox", source_model: nn.Module | None = None,
             batch_size: int = 256, seed: int = 0, progress: ProgressFn | None = None,
             state: EvalState | None = None) -> Evaluation:
    """Evaluate ``model`` on ``data`` against ``attacks`` (each with its split, "known" or "unknown").

    Args:
        protocol: ``whitebox`` crafts on ``model``; ``transfer`` crafts on ``source_model`` and classifies the
            adversarial images with ``model``.
        batch_size: examples per attack batch (AutoAttack batches internally with the same size).
        seed: the evaluation seed (every attack batch is seeded from it).
        state: resumable state: finished attacks and batches found there are not recomputed, and every batch
            finished here is recorded in it (:mod:`midbench.evaluation.state`).

    Raises:
        NumericalError: NaN/Inf logits.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}")
    if protocol == "transfer" and source_model is None:
        raise ValueError("the transfer protocol needs a source model")
    model = model.to(device).eval()
    counted_attacker = PassCounter((source_model if protocol == "transfer" else model).to(device).eval())
    images = next(DeviceBatches(data, len(data), device).epoch(shuffle=False))[0] if len(data) else None
    labels = data.labels.to(device)
    if images is None:
        return Evaluation(np.zeros(0, dtype=bool), [], protocol)
    clean_correct = predict(model, images, batch_size) == labels
    if state is not None:
        state.check_clean(clean_correct.cpu().numpy())
    candidates = torch.nonzero(clean_correct).flatten()
    total = int(candidates.numel())
    outcomes = []
    for spec, split in attacks:
        saved = state.progress(spec.key) if state is not None else None
        if saved is not None and saved.finished:
            outcomes.append(AttackOutcome(spec, split, saved.robust, saved.seconds, saved.forward_passes,
                                          saved.backward_passes, saved.details))
            continue
        attack = spec.build(seed=seed, batch_size=batch_size)
        if saved is None:  # a fresh attack starts from the clean-correct examples, nothing spent yet
            saved = AttackProgress(clean_correct.cpu().numpy(), done=0)
        robust = torch.from_numpy(saved.robust.copy()).to(device)
        done, forward, backward, seconds = saved.done, saved.forward_passes, saved.backward_passes, saved.seconds
        counted_attacker.reset()
        chunk = max(1, total) if attack.handles_batching else batch_size
        outcome = None
        for start in range(done, total, chunk):
            started = time.perf_counter()
            index = candidates[start:start + chunk]
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(batch_seed(seed, spec.key, start))
                x_adv = attack(counted_attacker, images[index], labels[index])
            robust[index] = predict(model, x_adv, batch_size) == labels[index]
            batch_forward, batch_backward = counted_attacker.reset()
            forward, backward = forward + batch_forward, backward + batch_backward
            seconds += time.perf_counter() - started
            done = min(start + chunk, total)
            # the batch is recorded before it is reported, so whatever was reported is never recomputed
            if done == total:
                outcome = _finished(attack, spec, split, robust, seconds, forward, backward, protocol, total,
                                    labels.numel(), state)
            elif state is not None:
                state.record(spec.key, AttackProgress(robust.cpu().numpy(), done, forward, backward, seconds))
            if progress is not None:
                progress(spec.key, done, total)
        if outcome is None:  # no example to attack
            outcome = _finished(attack, spec, split, robust, seconds, forward, backward, protocol, total,
                                labels.numel(), state)
        outcomes.append(outcome)
    return Evaluation(clean_correct.cpu().numpy(), outcomes, protocol)


def _finished(attack: Any, spec: ResolvedAttack, split: str, robust: torch.Tensor, seconds: float, forward: int,
              backward: int, protocol: str, attacked: int, n: int, state: EvalState | None) -> AttackOutcome:
    """The outcome of a finished attack (recorded in ``state`` as finished)."""
    # AutoAttack's per-component accuracies describe the model it attacked: meaningful only in white-box.
    details = ({"components": dict(attack.component_accuracy)}
               if hasattr(attack, "component_accuracy") and protocol == "whitebox" else {})
    if details and attacked:
        # component accuracies were measured over the attacked points; express them over all examples
        share = attacked / n
        details["components"] = {k: v * share for k, v in details["components"].items()}
    outcome = AttackOutcome(spec, split, robust.cpu().numpy(), seconds, forward, backward, details)
    if state is not None:
        state.record(spec.key, AttackProgress(outcome.robust, attacked, forward, backward, seconds, True, details))
    return outcome
