"""Where attacks draw their random numbers: torch's global RNG, or one generator per example.

By default every draw comes from torch's global RNG, which the evaluation engine seeds per batch (reproducible
for a fixed batching). Inside :func:`per_example_generators`, each example draws from a generator of its own,
seeded from (evaluation seed, attack, strength, example index) by the caller: an example's random start, target
or noise is then the same whichever other examples share its batch. The nested strength ladder of the
unknown-attack profile relies on that, so that attacking only the still-robust examples at the next strength
gives each example exactly the attack an independent evaluation would have given it.

Per-example draws are made on the CPU and moved to the input's device, so they are also the same on every device.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextvars import ContextVar

import torch

_GENERATORS: ContextVar[list[torch.Generator] | None] = ContextVar("midbench_example_generators", default=None)


@contextlib.contextmanager
def per_example_generators(seeds: Sequence[int]) -> Iterator[None]:
    """Within the block, the i-th row of every draw comes from a generator seeded with ``seeds[i]``."""
    generators = []
    for seed in seeds:
        generator = torch.Generator()
        generator.manual_seed(int(seed))
        generators.append(generator)
    token = _GENERATORS.set(generators)
    try:
        yield
    finally:
        _GENERATORS.reset(token)


def example_seeds(seed: int, indices: Sequence[int]) -> list[int]:
    """One generator seed per example from a step's ``seed`` and the examples' indices in their split (a fixed
    mix, so an example draws the same numbers in whichever batch, slice or process it lands)."""
    return [(seed * 1_000_003 + int(index) * 104_729 + 1) % (2**63 - 1) for index in indices]


def _per_row(n: int, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype,
             draw: Callable[[tuple[int, ...], torch.Generator], torch.Tensor]) -> torch.Tensor | None:
    """``n`` draws of ``shape``, one from each per-example generator, stacked and moved to ``like``'s device as
    ``dtype``; ``None`` outside :func:`per_example_generators`."""
    generators = _GENERATORS.get()
    if generators is None:
        return None
    if len(generators) != n:
        raise RuntimeError(f"{len(generators)} per-example generators for a batch of {n} examples")
    rows = [draw(shape, generator) for generator in generators]
    stacked = torch.stack(rows) if rows else torch.empty((0, *shape))
    return stacked.to(device=like.device, dtype=dtype)


def _like(x: torch.Tensor, draw: Callable[[tuple[int, ...], torch.Generator], torch.Tensor]) -> torch.Tensor | None:
    return _per_row(x.shape[0], tuple(x.shape[1:]), x, x.dtype, draw)


def uniform_like(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Uniform [low, high) numbers shaped like ``x``."""
    drawn = _like(x, lambda shape, g: torch.empty(shape, dtype=torch.float64).uniform_(low, high, generator=g))
    return torch.empty_like(x).uniform_(low, high) if drawn is None else drawn


def randn_like(x: torch.Tensor) -> torch.Tensor:
    """Standard normal numbers shaped like ``x``."""
    drawn = _like(x, lambda shape, g: torch.randn(shape, generator=g, dtype=torch.float64))
    return torch.randn_like(x) if drawn is None else drawn


def exponential_like(x: torch.Tensor) -> torch.Tensor:
    """Exponential(1) numbers shaped like ``x``."""
    drawn = _like(x, lambda shape, g: torch.empty(shape, dtype=torch.float64).exponential_(generator=g))
    return torch.empty_like(x).exponential_() if drawn is None else drawn


def random_signs_like(x: torch.Tensor) -> torch.Tensor:
    """±1 with equal probability, shaped like ``x``."""
    drawn = _like(x, lambda shape, g: torch.randint(0, 2, shape, generator=g, dtype=torch.float64) * 2 - 1)
    return torch.randint_like(x, 0, 2) * 2 - 1 if drawn is None else drawn


def rand_per_example(x: torch.Tensor) -> torch.Tensor:
    """One uniform [0, 1) number per example of ``x`` (shape ``(N,)``, ``x``'s dtype and device)."""
    drawn = _per_row(x.shape[0], (), x, x.dtype, lambda shape, g: torch.rand(shape, generator=g, dtype=torch.float64))
    return torch.rand(x.shape[0], device=x.device, dtype=x.dtype) if drawn is None else drawn


def randint_per_example(low: int, high: int, like: torch.Tensor) -> torch.Tensor:
    """One integer in [low, high) per entry of the 1-D tensor ``like`` (its device, dtype long)."""
    drawn = _per_row(like.shape[0], (), like, torch.long, lambda shape, g: torch.randint(low, high, shape, generator=g))
    return torch.randint(low, high, like.shape, device=like.device) if drawn is None else drawn
