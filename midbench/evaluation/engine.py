"""``evaluate()``: run attacks on a model under a protocol and build the per-example robustness matrix.

Robust-points-only (goal P5): each attack is run only on the examples the evaluated model classifies
correctly when clean; the others are non-robust by definition and cost no attack step. Every batch of every
attack draws its randomness from a generator seeded by (seed, attack, batch), inside ``fork_rng`` so the
caller's RNG is untouched: results do not depend on which other attacks ran or in which order.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from midbench.attacks.randomness import per_example_generators
from midbench.attacks.specs import ResolvedAttack
from midbench.attacks.threat_models import ThreatModelPlan
from midbench.data.batches import DeviceBatches
from midbench.data.datasets import TensorSplit
from midbench.errors import NumericalError
from midbench.evaluation.counting import PassCounter
from midbench.evaluation.profile import ThreatModelCurve, climb
from midbench.evaluation.state import AttackProgress, EvalState
from midbench.protocols import PROTOCOLS

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
    #: the unknown-attack profile: one nested curve per threat model (empty unless asked for)
    curves: list[ThreatModelCurve] = field(default_factory=list)

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


def example_seed(seed: int, step_key: str, example_index: int) -> int:
    """The seed of one example's generator in one attack step (per-example randomness, used by the profile)."""
    return (seed * 1_000_003 + zlib.crc32(step_key.encode()) * 7919 + example_index * 104_729) % (2**63 - 1)


class AttackRunner:
    """Runs one attack at a time on a subset of the examples and keeps its column of the robustness matrix.

    Shared by the attack list of :func:`evaluate` and the strength ladders of the unknown-attack profile
    (:mod:`midbench.evaluation.profile`): batching, seeding, pass counting, NaN checks, progress and the resumable
    state are the same for both.
    """

    def __init__(self, model: nn.Module, attacker: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                 device: torch.device, protocol: str, batch_size: int, seed: int, progress: ProgressFn | None,
                 state: EvalState | None) -> None:
        self.model, self.images, self.labels, self.device = model, images, labels, device
        self.counted_attacker = PassCounter(attacker)
        self.protocol, self.batch_size, self.seed = protocol, batch_size, seed
        self.progress, self.state = progress, state

    def run(self, spec: ResolvedAttack, split: str, start_robust: np.ndarray, *, key: str | None = None,
            per_example: bool = False) -> AttackOutcome:
        """Attack the examples where ``start_robust`` holds; the others stay non-robust.

        Args:
            key: the name of this step in the state file and in progress reports (default ``spec.key``).
            per_example: draw each example's randomness from its own generator, seeded by (seed, key, example
                index), so an example's attack does not depend on which others share its batch
                (:mod:`midbench.attacks.randomness`); otherwise every batch is seeded by (seed, key, position).
        """
        key = key or spec.key
        saved = self.state.progress(key) if self.state is not None else None
        if saved is not None and saved.finished:
            return AttackOutcome(spec, split, saved.robust, saved.seconds, saved.forward_passes,
                                 saved.backward_passes, saved.details)
        attack = spec.build(seed=self.seed, batch_size=self.batch_size)
        if saved is None:  # a fresh attack starts from the given examples, nothing spent yet
            saved = AttackProgress(start_robust.copy(), done=0)
        candidates = torch.from_numpy(np.flatnonzero(start_robust)).to(self.device)
        total = int(candidates.numel())
        robust = torch.from_numpy(saved.robust.copy()).to(self.device)
        done, forward, backward, seconds = saved.done, saved.forward_passes, saved.backward_passes, saved.seconds
        self.counted_attacker.reset()
        chunk = max(1, total) if attack.handles_batching else self.batch_size
        outcome = None
        for start in range(done, total, chunk):
            started = time.perf_counter()
            index = candidates[start:start + chunk]
            devices = [self.device] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), contextlib.ExitStack() as scope:
                torch.manual_seed(batch_seed(self.seed, key, start))
                if per_example:
                    scope.enter_context(per_example_generators(
                        [example_seed(self.seed, key, int(i)) for i in index.tolist()]))
                x_adv = attack(self.counted_attacker, self.images[index], self.labels[index])
            robust[index] = predict(self.model, x_adv, self.batch_size) == self.labels[index]
            batch_forward, batch_backward = self.counted_attacker.reset()
            forward, backward = forward + batch_forward, backward + batch_backward
            seconds += time.perf_counter() - started
            done = min(start + chunk, total)
            # the batch is recorded before it is reported, so whatever was reported is never recomputed
            if done == total:
                outcome = _finished(attack, spec, split, robust, seconds, forward, backward, self.protocol, total,
                                    self.labels.numel(), self.state, key)
            elif self.state is not None:
                self.state.record(key, AttackProgress(robust.cpu().numpy(), done, forward, backward, seconds))
            if self.progress is not None:
                self.progress(key, done, total)
        if outcome is None:  # no example to attack
            outcome = _finished(attack, spec, split, robust, seconds, forward, backward, self.protocol, total,
                                self.labels.numel(), self.state, key)
        return outcome


def evaluate(model: nn.Module, data: TensorSplit, attacks: list[tuple[ResolvedAttack, str]], *,
             device: torch.device, protocol: str = "whitebox", source_model: nn.Module | None = None,
             batch_size: int = 256, seed: int = 0, progress: ProgressFn | None = None,
             state: EvalState | None = None, profile: list[ThreatModelPlan] | None = None) -> Evaluation:
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
    runner = AttackRunner(model, attacker, images, labels, device=device, protocol=protocol, batch_size=batch_size,
                          seed=seed, progress=progress, state=state)
    outcomes = [runner.run(spec, split, clean_correct) for spec, split in attacks]
    curves = climb(runner, profile, clean_correct) if profile else []
    return Evaluation(clean_correct, outcomes, protocol, curves)


def _finished(attack: Any, spec: ResolvedAttack, split: str, robust: torch.Tensor, seconds: float, forward: int,
              backward: int, protocol: str, attacked: int, n: int, state: EvalState | None,
              key: str) -> AttackOutcome:
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
        state.record(key, AttackProgress(outcome.robust, attacked, forward, backward, seconds, True, details))
    return outcome
