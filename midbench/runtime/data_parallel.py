"""Data-parallel training under ``torchrun``: each process takes a slice of the global batch, and the slices'
gradients are combined into the global batch's gradient with ``torch.distributed`` collectives.

The contract (Li et al., "PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB 2020,
describe the same decomposition): a method's step writes into ``.grad`` the gradient of the **mean loss over its
slice**; :meth:`SliceWeights.combine_gradients` then forms ``Σ_r (n_r / B) · g_r``, the gradient of the mean over
the global batch of ``B`` examples, whatever the slice sizes ``n_r``. PyTorch's ``DistributedDataParallel``
is not used for this because its hooks fire on every backward through the model — the training attacks run many
of them per step, on inputs rather than parameters — and because it averages with equal weights, which is wrong
for a last batch that does not split evenly.

A step whose loss depends on a quantity of the whole global batch (MID's inner update
``θ' = θ − α ∇L_tr(θ)``, taken on the global batch) forms that quantity with :func:`mean_over_slices`. Its
backward pass is weighted like its forward pass, so that after :meth:`SliceWeights.combine_gradients` the
second-order meta-gradient is the single-process one as well (tested in ``tests/test_data_parallel.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from midbench.runtime.distributed import Shard, collective_device


@dataclass(frozen=True)
class SliceWeights:
    """This process's slice of a global batch and its weight ``n_r / B`` in the global mean."""

    shard: Shard
    start: int
    stop: int
    global_size: int

    @classmethod
    def of(cls, shard: Shard, global_size: int) -> SliceWeights:
        """Contiguous slices whose sizes differ by at most one (``torch.tensor_split``'s rule)."""
        base, extra = divmod(global_size, shard.world_size)
        start = shard.rank * base + min(shard.rank, extra)
        return cls(shard, start, start + base + (1 if shard.rank < extra else 0), global_size)

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def weight(self) -> float:
        return self.size / self.global_size

    def take(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """This slice of each tensor's first axis."""
        return tuple(tensor[self.start:self.stop] for tensor in tensors)

    def combine_gradients(self, parameters: Sequence[torch.nn.Parameter]) -> None:
        """Replace every ``.grad`` (of this slice's mean loss) by the global batch's: ``Σ_r (n_r / B) g_r``.

        All gradients travel in one flat buffer (one collective per step). A parameter without a gradient
        counts as zeros, so every process sends the same layout."""
        if not self.shard.distributed:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in parameters])
        flat.mul_(self.weight)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for parameter in parameters:
            count = parameter.numel()
            parameter.grad = flat[offset:offset + count].view_as(parameter).clone()
            offset += count

    def sum_statistics(self, values: Sequence[float]) -> list[float]:
        """Per-slice sums (loss × examples, correct predictions) added over the processes, in float64."""
        if not self.shard.distributed:
            return list(values)
        tensor = torch.tensor(list(values), dtype=torch.float64, device=collective_device())
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()


_CURRENT: ContextVar[SliceWeights | None] = ContextVar("midbench_slice_weights", default=None)


@contextlib.contextmanager
def training_slice(weights: SliceWeights) -> Iterator[None]:
    """Within the block, :func:`mean_over_slices` combines with ``weights`` (the training loop sets it around a
    step)."""
    token = _CURRENT.set(weights)
    try:
        yield
    finally:
        _CURRENT.reset(token)


class _WeightedAllReduce(torch.autograd.Function):
    """``Σ_r w_r · t_r`` over the processes; the backward pass sends ``Σ_q w_q · ∂_q`` back to every process."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor, weight: float) -> torch.Tensor:  # noqa: ANN401 - autograd's ctx
        ctx.weight = weight
        total = tensor.detach() * weight
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        # Process q differentiates its own slice's mean loss L_q, unweighted; the loop multiplies process r's
        # gradient by w_r afterwards. The global loss is Σ_q w_q L_q, whose adjoint at t_r is
        # w_r · Σ_q w_q ∂L_q/∂out, so process r must receive Σ_q w_q ∂L_q/∂out here (the loop adds the w_r).
        # The sum is the same weighted all-reduce, so it stays differentiable for a second-order graph.
        return _WeightedAllReduce.apply(grad, ctx.weight), None


def mean_over_slices(tensor: torch.Tensor) -> torch.Tensor:
    """The global batch's mean of a per-slice mean ``tensor`` (e.g. a gradient of the slice's mean loss):
    ``Σ_r (n_r / B) · tensor_r``, differentiable; ``tensor`` itself outside torchrun or outside a training step.

    Every process must call it the same number of times in the same order (it is a collective)."""
    weights = _CURRENT.get()
    if weights is None or not weights.shard.distributed:
        return tensor
    return _WeightedAllReduce.apply(tensor, weights.weight)
