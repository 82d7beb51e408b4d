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
             batch_size: int = 256, seed: int = 0, progress: ProgressFn | None = None) -> Evaluation:
    """Evaluate ``model`` on ``data`` against ``attacks`` (each with its split, "known" or "unknown").

    Args:
        protocol: ``whitebox`` crafts on ``model``; ``transfer`` crafts on ``source_model`` and classifies the
            adversarial images with ``model``.
        batch_size: examples per attack batch (AutoAttack batches internally with the same size).
        seed: the evaluation seed (every attack batch is seeded from it).

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
    candidates = torch.nonzero(clean_correct).flatten()
    outcomes = []
    for spec, split in attacks:
        attack = spec.build(seed=seed, batch_size=batch_size)
        robust = clean_correct.clone()
        counted_attacker.reset()
        started = time.perf_counter()
        chunk = max(1, int(candidates.numel())) if attack.handles_batching else batch_size
        for start in range(0, int(candidates.numel()), chunk):
            index = candidates[start:start + chunk]
            devices = [device] if device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(batch_seed(seed, spec.key, start))
                x_adv = attack(counted_attacker, images[index], labels[index])
            robust[index] = predict(model, x_adv, batch_size) == labels[index]
            if progress is not None:
                progress(spec.key, min(start + chunk, int(candidates.numel())), int(candidates.numel()))
        forward, backward = counted_attacker.reset()
        # AutoAttack's per-component accuracies describe the model it attacked: meaningful only in white-box.
        details = ({"components": dict(attack.component_accuracy)}
                   if hasattr(attack, "component_accuracy") and protocol == "whitebox" else {})
        if details and candidates.numel():
            # component accuracies were measured over the attacked points; express them over all examples
            share = candidates.numel() / labels.numel()
            details["components"] = {k: v * share for k, v in details["components"].items()}
        outcomes.append(AttackOutcome(spec, split, robust.cpu().numpy(), time.perf_counter() - started,
                                      forward, backward, details))
    return Evaluation(clean_correct.cpu().numpy(), outcomes, protocol)
