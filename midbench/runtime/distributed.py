"""Running on several processes with ``torch.distributed`` (``torchrun``): which share of the work is this
process's, and the collective operations that merge the shares.

midbench does not launch processes itself: ``torchrun --nproc-per-node K -m midbench eval ...`` (or ``midbench
eval --nproc K``, which calls torchrun) starts them and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; :func:`current_shard` joins the process group (NCCL for CUDA, gloo on the CPU).

An evaluation is sharded by batch: batch *b* of every attack is run by rank ``b mod K``, with exactly the data
and seed a single process would give it (the engine seeds each batch from (seed, attack, position)), and the
per-example robust masks are merged with a logical AND — an example that no rank attacked keeps its starting
value on every rank, so the AND is the value of the rank that attacked it. The merged matrix is therefore
identical to a single process's, as long as each batch's computation is deterministic (on a CPU, fix the thread
count: a different number of threads may sum floating-point numbers in another order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from midbench.errors import UsageError

if TYPE_CHECKING:  # torch is imported where it is used, so that `--nproc`'s launcher starts without it
    import torch


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world_size`` processes (rank 0 writes the result files)."""

    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    def owns(self, batch_number: int) -> bool:
        """Whether batch ``batch_number`` (0, 1, 2, … in the order a single process runs them) is this rank's."""
        return batch_number % self.world_size == self.rank

    def all_and(self, mask: torch.Tensor) -> torch.Tensor:
        """The element-wise AND of every rank's boolean ``mask`` (the merged robust mask)."""
        if not self.distributed:
            return mask
        import torch
        import torch.distributed as dist

        merged = mask.to(torch.uint8)  # gloo and NCCL reduce integers, not booleans
        dist.all_reduce(merged, op=dist.ReduceOp.MIN)
        return merged.bool()

    def all_sum(self, value: int) -> int:
        """The sum of an integer over every rank (e.g. forward passes)."""
        return int(self._reduce(float(value), "SUM"))

    def all_min(self, value: int) -> int:
        """The smallest integer over every rank (e.g. whether every rank has finished: 1 only if all have)."""
        return int(self._reduce(float(value), "MIN"))

    def all_max(self, value: float) -> float:
        """The largest value over every rank (e.g. wall seconds: the ranks run at the same time)."""
        return self._reduce(float(value), "MAX")

    def _reduce(self, value: float, op: str) -> float:
        if not self.distributed:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64, device=collective_device())
        dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
        return float(tensor.item())

    def broadcast_(self, tensor: torch.Tensor, source: int) -> None:
        """Overwrite ``tensor`` on every rank with rank ``source``'s (same shape and dtype everywhere)."""
        if self.distributed:
            import torch.distributed as dist

            dist.broadcast(tensor, src=source)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Shard()


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def writes_outputs() -> bool:
    """Whether this process writes the run's files, known before the process group is joined: outside torchrun
    always, under it rank 0 alone (as :attr:`Shard.is_writer`)."""
    return not launched_by_torchrun() or os.environ.get("RANK", "0") == "0"


def current_shard(device: torch.device) -> Shard:
    """This process's shard: :data:`SINGLE` outside torchrun, else the process group's rank and size (joined
    here on first use: NCCL for a CUDA ``device``, gloo otherwise).

    Raises:
        UsageError: torchrun's variables are incomplete (started by hand rather than by torchrun).
    """
    if not launched_by_torchrun():
        return SINGLE
    import torch.distributed as dist

    if not dist.is_initialized():
        missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
        if missing:
            raise UsageError(f"WORLD_SIZE is set but {', '.join(missing)} not: start the processes with torchrun "
                             "(or midbench eval --nproc K)")
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Shard(dist.get_rank(), dist.get_world_size())


def rank_device(device: torch.device) -> torch.device:
    """A CUDA device of this process's own under torchrun (``cuda:LOCAL_RANK``); other devices as they are."""
    if device.type != "cuda" or not launched_by_torchrun():
        return device
    import torch

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def finish() -> None:
    """Leave the process group (at the end of a command), so the processes exit without warnings."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def collective_device() -> torch.device:
    """Where a collective's tensors must live: the process's GPU under NCCL, the CPU under gloo."""
    import torch
    import torch.distributed as dist

    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
