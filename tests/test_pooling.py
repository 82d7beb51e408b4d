"""The channels-last max-pool path is a pure speed-up: values, indices and gradients (first and second order)
equal ``torch.nn.functional.max_pool2d`` bit for bit, ties included (docs/performance.md, P20)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midbench.models.pooling import MaxPool2d, max_pool2d, max_pool2d_with_indices


def _inputs(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """ReLU of values rounded to a coarse grid: many windows hold ties (zeros, and equal positive values), where
    a kernel that kept another maximum than the first would route the gradient elsewhere."""
    generator = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randint(-3, 4, shape, generator=generator).float() / 2)


@pytest.mark.parametrize("shape, kernel", [((8, 32, 28, 28), 2), ((5, 3, 7, 9), 2), ((4, 8, 28, 28), 4),
                                           ((2, 2, 5, 5), 4), ((3, 16, 10, 10), 2)])
def test_values_indices_and_gradients_equal_torch_bit_for_bit(shape: tuple[int, ...], kernel: int) -> None:
    x = _inputs(shape, seed=sum(shape) + kernel)
    assert x.is_contiguous() and not x.is_contiguous(memory_format=torch.channels_last)  # the path under test
    weights = torch.randn(x.shape[0], x.shape[1], x.shape[2] // kernel, x.shape[3] // kernel)

    def derivatives(pool: object) -> list[torch.Tensor]:
        leaf = x.clone().requires_grad_()
        out, indices = pool(leaf)
        (grad,) = torch.autograd.grad((out * weights).sum(), leaf, create_graph=True)
        (second,) = torch.autograd.grad((grad * grad.detach().cos()).sum() + (out ** 2).sum(), leaf)
        return [out.detach(), indices, grad.detach(), second]

    ours = derivatives(lambda t: max_pool2d_with_indices(t, kernel))
    theirs = derivatives(lambda t: nn.functional.max_pool2d(t, kernel, return_indices=True))
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.is_contiguous() and torch.equal(a, b)
    assert torch.equal(max_pool2d(x, kernel), theirs[0])
    assert torch.equal(MaxPool2d(kernel)(x), theirs[0])


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_non_finite_values_and_other_dtypes_pool_alike(dtype: torch.dtype) -> None:
    """NaN wins its window and ±inf are ordinary values in both kernels; the same in double and bfloat16."""
    x = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)).to(dtype)
    x[0, 1, 2, 3], x[1, 2, 0, 0], x[1, 0, 4, 4] = float("nan"), float("inf"), float("-inf")
    ours, theirs = max_pool2d_with_indices(x, 2), nn.functional.max_pool2d(x, 2, return_indices=True)
    assert torch.equal(ours[1], theirs[1]) and torch.allclose(ours[0], theirs[0], equal_nan=True)
    assert ours[0].dtype == dtype


def test_a_channels_last_input_stays_channels_last() -> None:
    """The training option ``channels_last`` keeps its layout through the pool (no conversion back to NCHW)."""
    x = _inputs((2, 8, 6, 6), seed=0).contiguous(memory_format=torch.channels_last)
    out = max_pool2d(x, 2)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, nn.functional.max_pool2d(x, 2))
