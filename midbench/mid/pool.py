"""MID's Attacker Pool and its cache (Zhang et al., TPAMI 2024, arXiv:2404.03340; docs/mid.md).

The pool is a list of registry attacks (default the ``mid-mnist-known`` suite: PGD and MI-FGSM, untargeted and
targeted, at the dataset's L∞ ε). In the paper's protocol the pool attacks a *fixed* source model, so its
adversarial examples do not depend on the student: :class:`PoolCache` crafts them for the whole training split
once per block of ``refresh_every`` epochs instead of once per batch (goal P6 of docs/performance.md).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from midbench.attacks.randomness import example_seeds, per_example_generators
from midbench.attacks.specs import AttackRegistry, ResolvedAttack, evaluate_passes, load_registry
from midbench.attacks.training import resolve_training_attack, training_registry
from midbench.config import TrainConfig
from midbench.data.batches import DeviceBatches
from midbench.data.datasets import DatasetSpec, TensorSplit
from midbench.errors import UsageError
from midbench.runtime.distributed import SINGLE, Shard

DEFAULT_POOL = "mid-mnist-known"


def resolve_pool(config: TrainConfig, dataset: DatasetSpec, pool: str | None = None,
                 pool_target: str | None = None) -> list[ResolvedAttack]:
    """The pool of ``pool`` (MID's ``--pool``: a suite name or comma-separated attack ids) at the dataset's ε,
    with the config's ``--eps``/``--attack-steps``/``--attack-step-size`` overrides applied to every attack that
    has steps (one-step attacks such as FGSM keep their single step), and ``pool_target`` (``--pool-target``) as
    the target policy of every targeted attack (the release aimed them all at class 0: ``fixed:0``). An
    overridden attack is recorded as a custom configuration (``id@custom``)."""
    name = pool or DEFAULT_POOL
    registry = training_registry(config)
    ids = [spec.id for spec in registry.suite(name)] if name in registry.suites else \
        [part.strip() for part in name.split(",") if part.strip()]
    if not ids:
        raise UsageError(f"--pool {name!r} names no attack; give a suite (e.g. {DEFAULT_POOL}) or attack ids")
    if len(set(ids)) != len(ids):
        raise UsageError(f"--pool {name!r} names an attack twice; list each once")
    specs = [resolve_training_attack(config, dataset, attack_id, steps_optional=True, registry=registry)
             for attack_id in ids]
    if pool_target is not None:
        specs = [replace(spec, target=pool_target, version=0)
                 if spec.target is not None and spec.target != pool_target else spec for spec in specs]
    return specs


class AttackerPool:
    """The built pool attacks; :meth:`craft` returns ``[a_1(x), …, a_n(x)]`` against ``model``."""

    def __init__(self, specs: list[ResolvedAttack], seed: int, batch_size: int,
                 registry: AttackRegistry | None = None) -> None:
        self.specs = specs
        #: where the pool's entries (and their pass counts) are defined: the run's registry
        self.registry = registry or load_registry()
        self.attacks = [spec.build(seed=seed, batch_size=batch_size) for spec in specs]

    def __len__(self) -> int:
        return len(self.attacks)

    def craft(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        return [attack(model, x, y).detach() for attack in self.attacks]

    def passes_per_example(self) -> dict[str, int]:
        """Forward and backward passes through the attacked model per example for one craft of every attack."""
        total = {"forward": 0, "backward": 0}
        for spec in self.specs:  # the registry's pass expressions, evaluated at this attack's (overridden) params
            for kind, expression in self.registry.get(spec.id).passes.items():
                total[kind] += evaluate_passes(expression, spec.params)
        return total


class PoolCache:
    """The pool's adversarial examples of a whole training split, regenerated every ``refresh_every`` epochs.

    Memory: ``n_attacks × N`` images in float32 on the training device (MNIST 3,800 × 4: 48 MB; CIFAR-10
    50,000 × 4: 2.5 GB). Each block is crafted under its own seed, every example drawing its random start and
    target from a generator of its own (seeded with the block's seed and its index) inside a forked RNG: a run
    resumed in the middle of a block rebuilds the identical cache and leaves the epoch's random stream
    untouched, and under torchrun the processes can share the work — batch *b* is crafted by rank ``b mod K``
    and broadcast to the others — with the single process's cache as the result.
    """

    def __init__(self, pool: AttackerPool, split: TensorSplit, batch_size: int, device: torch.device,
                 refresh_every: int, shard: Shard = SINGLE) -> None:
        self.pool = pool
        self.batches = DeviceBatches(split, batch_size, device)
        self.refresh_every = refresh_every
        self.device = device
        self.shard = shard
        self.block: int | None = None
        self.examples: torch.Tensor | None = None  # (n_attacks, N, C, H, W)

    def block_of(self, epoch: int) -> int:
        return (epoch - 1) // self.refresh_every

    def ensure(self, epoch: int, model: nn.Module, seed: int) -> bool:
        """Craft the block of ``epoch`` against ``model`` unless it is cached; returns True if it crafted."""
        block = self.block_of(epoch)
        if block == self.block and self.examples is not None:
            return False
        devices = [self.device] if self.device.type == "cuda" else []
        parts = []
        for number, (index, x, y) in enumerate(self.batches.indexed_epoch(shuffle=False)):
            owner = number % self.shard.world_size
            if owner == self.shard.rank:
                seeds = example_seeds(seed, index.tolist())
                with torch.random.fork_rng(devices=devices), per_example_generators(seeds):
                    torch.manual_seed(seed + number)  # an attack that still draws from the global stream
                    crafted = torch.stack(self.pool.craft(model, x, y))
            else:
                crafted = torch.empty((len(self.pool.attacks), *x.shape), dtype=x.dtype, device=x.device)
            self.shard.broadcast_(crafted, owner)
            parts.append(crafted)
        self.examples = torch.cat(parts, dim=1)
        self.block = block
        return True

    def lookup(self, index: torch.Tensor) -> list[torch.Tensor]:
        """The cached ``[a_1(x), …, a_n(x)]`` of the examples at ``index`` in the split."""
        assert self.examples is not None, "ensure() first"
        return list(self.examples[:, index].unbind(0))
