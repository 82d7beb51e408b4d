"""Max pooling that takes PyTorch's fast CPU path without changing a single bit of any result.

PyTorch's CPU max-pool kernel for NCHW-contiguous tensors is several times slower than its channels-last kernel
(``docs/performance.md``, P20: about 10 ms against under 3 ms, conversions included, for a 64×32×28×28 batch on
one thread). A maximum involves no rounding, and both kernels scan a window in the same order and keep the first
maximum, so the values, the indices and the gradient (routed to that index) are identical: running the
channels-last kernel and converting back is a pure speed-up. On other devices, and for tensors already in
channels-last layout, this is ``torch.nn.functional.max_pool2d`` itself.
"""

from __future__ import annotations

import torch
from torch import nn


def _through_channels_last(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dim() == 4 and x.is_contiguous() \
        and not x.is_contiguous(memory_format=torch.channels_last)


class _ChannelsLastMaxPool(torch.autograd.Function):
    """Forward through the channels-last kernel; backward in the input's NCHW layout, so every later gradient
    computation (a convolution's backward picks its algorithm by layout) sees what it would have seen anyway."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, kernel_size: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        pooled, indices = nn.functional.max_pool2d(x.contiguous(memory_format=torch.channels_last), kernel_size,
                                                   return_indices=True)
        indices = indices.contiguous()
        ctx.save_for_backward(x, indices)
        ctx.kernel_size = kernel_size
        ctx.mark_non_differentiable(indices)
        return pooled.contiguous(), indices

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor, _: torch.Tensor
                 ) -> tuple[torch.Tensor, None]:
        # PyTorch's own max-pool backward, on the NCHW input: the very kernel the plain call would have run.
        # It is differentiable (its gradient is a gather), so second-order gradients work too.
        x, indices = ctx.saved_tensors
        kernel = [ctx.kernel_size, ctx.kernel_size]
        return torch.ops.aten.max_pool2d_with_indices_backward(grad.contiguous(), x, kernel, kernel, [0, 0], [1, 1],
                                                               False, indices), None


def max_pool2d(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """``F.max_pool2d(x, kernel_size)`` (stride = kernel), bit for bit, in the input's memory layout."""
    return max_pool2d_with_indices(x, kernel_size)[0]


def max_pool2d_with_indices(x: torch.Tensor, kernel_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.max_pool2d(x, kernel_size, return_indices=True)``, bit for bit; the indices (into each plane's
    ``H·W``) feed ``max_unpool2d`` as usual."""
    if not _through_channels_last(x):
        return nn.functional.max_pool2d(x, kernel_size, return_indices=True)
    return _ChannelsLastMaxPool.apply(x, kernel_size)


class MaxPool2d(nn.Module):
    """``nn.MaxPool2d(kernel_size)`` through :func:`max_pool2d` (no parameters, so state dicts are unchanged)."""

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return max_pool2d(x, self.kernel_size)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"
