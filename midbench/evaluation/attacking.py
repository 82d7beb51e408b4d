"""Running one attack on a subset of the examples: its column of the robustness matrix, its cost, its resumable
progress. Shared by :func:`midbench.evaluation.engine.evaluate` (the attack list) and the unknown-attack profile
(:mod:`midbench.evaluation.profile`, the strength ladders), so batching, seeding, pass counting, NaN checks,
progress and the state file are the same for both.

Every batch of every attack draws its randomness from a generator seeded by (seed, attack, batch), inside
``fork_rng`` so the caller's RNG is untouched: results do not depend on which other attacks ran or in which order.
Under ``torchrun`` the batches are dealt across the processes (:class:`midbench.runtime.distributed.Shard`).
"""

from __future__ import annotations

import contextlib
import json
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
from midbench.errors import NumericalError
from midbench.evaluation.counting import PassCounter
from midbench.evaluation.state import AttackProgress, EvalState
from midbench.evaluation.transfer_cache import CacheStep, TransferCache
from midbench.runtime.distributed import SINGLE, Shard

#: progress callback: (attack key, examples done, examples to attack)
ProgressFn = Callable[[str, int, int], None]


class BuiltAttacks:
    """The attacks of one evaluation, each built once, before anything runs: a bad parameter or a missing backend
    is refused before any compute, and :class:`AttackRunner` takes these instead of building each again. Each
    built attack is handed out once, so every run starts from an attack as fresh as a new build."""

    def __init__(self, specs: list[ResolvedAttack], seed: int, batch_size: int) -> None:
        self.seed, self.batch_size = seed, batch_size
        self._built: dict[str, list[Any]] = {}
        for spec in specs:
            self._built.setdefault(_identity(spec), []).append(spec.build(seed=seed, batch_size=batch_size))

    def take(self, spec: ResolvedAttack) -> Any:  # noqa: ANN401 - an Attack or a backend adapter
        """The attack of ``spec``: one built here, or a new build when every one of them has been taken."""
        waiting = self._built.get(_identity(spec))
        return waiting.pop() if waiting else spec.build(seed=self.seed, batch_size=self.batch_size)


def _identity(spec: ResolvedAttack) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True, default=str)


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
                 state: EvalState | None, shard: Shard = SINGLE, cache: TransferCache | None = None,
                 built: BuiltAttacks | None = None) -> None:
        self.model, self.images, self.labels, self.device = model, images, labels, device
        self.counted_attacker = PassCounter(attacker)
        self.counted_model = self.counted_attacker if attacker is model else PassCounter(model)
        self.protocol, self.batch_size, self.seed = protocol, batch_size, seed
        self.progress, self.state, self.shard = progress, state, shard
        #: the transfer cache (transfer protocol, one process): adversarial images crafted on the source, reused
        self.cache = cache if protocol == "transfer" and not shard.distributed else None
        self.built = built if built is not None else BuiltAttacks([], seed, batch_size)

    def run(self, spec: ResolvedAttack, split: str, start_robust: np.ndarray, *, key: str | None = None,
            per_example: bool = False, query_evaluated: bool = False) -> AttackOutcome:
        """Attack the examples where ``start_robust`` holds; the others stay non-robust. (Under ``transfer`` every
        example is crafted on the source, and only those where ``start_robust`` holds can count as robust.)

        Args:
            key: the name of this step in the state file and in progress reports (default ``spec.key``).
            per_example: draw each example's randomness from its own generator, seeded by (seed, key, example
                index), so an example's attack does not depend on which others share its batch
                (:mod:`midbench.attacks.randomness`); otherwise every batch is seeded by (seed, key, position).
            query_evaluated: the attack queries the evaluated model even under ``transfer`` (the profile's
                gradient-free attacks: a grid or random search needs no gradient, so nothing stops an attacker
                from running it against the deployed model itself).
        """
        key = key or spec.key
        saved = self.state.progress(key) if self.state is not None else None
        if saved is not None and saved.finished and not self.shard.distributed:
            return AttackOutcome(spec, split, saved.robust, saved.seconds, saved.forward_passes,
                                 saved.backward_passes, saved.details)
        attack = self.built.take(spec)
        if self.shard.distributed:
            saved = self._agree_on_resume(saved, attack.handles_batching)
        if saved is None:  # a fresh attack starts from the given examples, nothing spent yet
            saved = AttackProgress(start_robust.copy(), done=0)
        # Under transfer, what is crafted on the source must not depend on the evaluated model (transfer_cache.py):
        # every example is crafted, in fixed batches. Per-example randomness alone would not do: a batch of other
        # examples changes the floating-point sums of a convolution in the last bits, and now and then an example
        # on the edge of the decision boundary with them.
        every_example = self.protocol == "transfer" and not query_evaluated
        start_tensor = torch.from_numpy(start_robust).to(self.device)
        candidates = torch.arange(start_robust.shape[0], device=self.device) if every_example else \
            torch.from_numpy(np.flatnonzero(start_robust)).to(self.device)
        step = self.cache.step(key, spec, per_example) if self.cache is not None and every_example else None
        total = int(candidates.numel())
        robust = torch.from_numpy(saved.robust.copy()).to(self.device)
        done, forward, backward, seconds = saved.done, saved.forward_passes, saved.backward_passes, saved.seconds
        if saved.finished:  # a rank whose share is done: it only joins the merge below
            done = total
        target = self.counted_model if query_evaluated else self.counted_attacker
        target.reset()
        chunk = max(1, total) if attack.handles_batching else self.batch_size
        if attack.handles_batching:
            attack.shard = self.shard  # it batches internally, so it deals its own batches across the ranks
        ran, outcome = False, None
        for start in range(done, total, chunk):
            # under torchrun a rank runs its own batches only; one that batches internally runs on every rank
            if not (attack.handles_batching or self.shard.owns(start // chunk)):
                continue
            ran = True
            started = time.perf_counter()
            index = candidates[start:start + chunk]
            x_adv = self._craft(attack, target, index, key, start, per_example, step)
            correct = predict(self.model, x_adv, self.batch_size) == self.labels[index]
            robust[index] = correct & start_tensor[index] if every_example else correct
            batch_forward, batch_backward = target.reset()
            forward, backward = forward + batch_forward, backward + batch_backward
            seconds += time.perf_counter() - started
            done = min(start + chunk, total)
            # the batch is recorded before it is reported, so whatever was reported is never recomputed (a
            # single process's last batch finishes the attack; a rank's share is merged after the loop)
            if done == total and not self.shard.distributed:
                outcome = _finished(spec, split, robust, seconds, forward, backward,
                                    _details(attack, self.protocol, total, self.labels.numel()), total,
                                    self.state, key)
            elif self.state is not None:
                self.state.record(key, AttackProgress(robust.cpu().numpy(), done, forward, backward, seconds))
            if self.progress is not None:
                self.progress(key, done, total)
        details = _details(attack, self.protocol, total, self.labels.numel()) if ran or not saved.finished \
            else saved.details
        if not self.shard.distributed:
            if outcome is not None:
                return outcome
            return _finished(spec, split, robust, seconds, forward, backward, details, total, self.state, key)
        # This rank's share is recorded as finished with its own column and cost; the merge (every rank's
        # batches: the single process's column and cost) is recomputed from the shares, also on a resume.
        _finished(spec, split, robust, seconds, forward, backward, details, total, self.state, key)
        return AttackOutcome(spec, split, self.shard.all_and(robust).cpu().numpy(), self.shard.all_max(seconds),
                             self.shard.all_sum(forward), self.shard.all_sum(backward), details)

    def _craft(self, attack: Any, target: nn.Module, index: torch.Tensor, key: str, start: int, per_example: bool,
               step: CacheStep | None) -> torch.Tensor:
        """The adversarial images of the examples ``index`` (batch ``start`` of step ``key``): from the transfer
        cache where it holds this very batch, else crafted (and added to it)."""
        if step is not None:
            cached = step.batch(index.cpu().numpy())
            if cached is not None:
                return torch.from_numpy(cached).to(self.device)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), contextlib.ExitStack() as scope:
            torch.manual_seed(batch_seed(self.seed, key, start))
            if per_example:
                scope.enter_context(per_example_generators(
                    [example_seed(self.seed, key, int(i)) for i in index.tolist()]))
            crafted = attack(target, self.images[index], self.labels[index])
        if step is not None:
            step.store(index.cpu().numpy(), crafted)
        return crafted

    def _agree_on_resume(self, saved: AttackProgress | None, handles_batching: bool) -> AttackProgress | None:
        """Under torchrun, what this rank resumes from — decided alike on every rank, so that all of them take
        part in the same collective operations in the same order.

        A rank resumes its own share (its batches are independent of the others'). An attack that batches
        internally merges between its stages (AutoAttack after each component), so unless every rank finished
        it, every rank runs it again from the start, as a single process would after an interruption."""
        finished_everywhere = self.shard.all_min(int(saved is not None and saved.finished)) == 1
        if handles_batching and not finished_everywhere:
            return None
        return saved


def _details(attack: Any, protocol: str, attacked: int, n: int) -> dict[str, Any]:
    """What an attack reports beyond its column: AutoAttack's accuracy after each component, over all examples
    (meaningful only in white-box, where it describes the evaluated model)."""
    if not (hasattr(attack, "component_accuracy") and protocol == "whitebox"):
        return {}
    # component accuracies were measured over the attacked points; express them over all examples
    share = attacked / n if attacked else 1.0
    return {"components": {k: v * share for k, v in attack.component_accuracy.items()}}


def _finished(spec: ResolvedAttack, split: str, robust: torch.Tensor, seconds: float, forward: int, backward: int,
              details: dict[str, Any], attacked: int, state: EvalState | None, key: str) -> AttackOutcome:
    """The outcome of a finished attack (recorded in ``state`` as finished)."""
    outcome = AttackOutcome(spec, split, robust.cpu().numpy(), seconds, forward, backward, details)
    if state is not None:
        state.record(key, AttackProgress(outcome.robust, attacked, forward, backward, seconds, True, details))
    return outcome
