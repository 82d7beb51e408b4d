"""Counting forward and backward passes per example with module hooks (docs/performance.md, "How we measure, and
the goals")."""

from __future__ import annotations

import torch
from torch import nn


class PassCounter(nn.Module):
    """Wraps a model and counts the examples that go through its forward and backward passes.

    A batch of 32 counts as 32 forward passes; a backward pass through the model's output counts as many as
    the output has rows. Attacks and training see the wrapper exactly as they would the model.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.training = model.training  # the wrapper is in the wrapped model's mode, not nn.Module's default
        self.forward_passes = 0
        self.backward_passes = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.model(x)
        self.forward_passes += int(x.shape[0])
        if output.requires_grad:
            rows = int(output.shape[0])
            output.register_hook(lambda grad: self._count_backward(rows))
        return output

    def _count_backward(self, rows: int) -> None:
        self.backward_passes += rows

    def reset(self) -> tuple[int, int]:
        """Return (forward, backward) counts and set both to zero."""
        counts = (self.forward_passes, self.backward_passes)
        self.forward_passes = self.backward_passes = 0
        return counts
