"""Minibatches from tensors held on the training device: no DataLoader workers, no per-item Python.

For datasets that fit in memory (all of midbench's) this is several times faster on CPU than a DataLoader
over the same tensors (goal P9 of docs/performance.md), and on a GPU it avoids host-to-device copies every step.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from midbench.data.datasets import TensorSplit


class DeviceBatches:
    """Shuffled minibatches of (float images in [0, 1], labels) from a :class:`TensorSplit` on ``device``.

    Images stay uint8 on the device and are converted per batch, which keeps CIFAR at a quarter of the memory.
    The order depends only on the ``generator`` passed to :meth:`epoch`, so a run is reproducible.
    """

    def __init__(self, data: TensorSplit, batch_size: int, device: torch.device) -> None:
        if batch_size <= 0:
            raise ValueError("batch size must be positive")
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.batch_size = batch_size
        self.device = device

    def __len__(self) -> int:
        return (int(self.labels.shape[0]) + self.batch_size - 1) // self.batch_size

    def epoch(self, generator: torch.Generator | None = None, shuffle: bool = True
              ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield the batches of one pass over the data."""
        for _, images, labels in self.indexed_epoch(generator, shuffle):
            yield images, labels

    def indexed_epoch(self, generator: torch.Generator | None = None, shuffle: bool = True
                      ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Like :meth:`epoch`, with each batch's example indices into the split first (for per-example caches)."""
        count = int(self.labels.shape[0])
        order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
        order = order.to(self.device)
        for start in range(0, count, self.batch_size):
            index = order[start : start + self.batch_size]
            yield index, self.images[index].float().div_(255.0), self.labels[index]
