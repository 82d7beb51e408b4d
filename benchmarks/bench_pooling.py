#!/usr/bin/env python3
"""P20 of docs/performance.md: LeNet forward + input-gradient passes (an attack step's work) with midbench's
max pool (``midbench/models/pooling.py``) against ``torch.nn.functional.max_pool2d``. Run both as whole processes
under the A/B timer::

    python "$ABBENCH" -n 7 -a "python benchmarks/bench_pooling.py --impl midbench" \\
        -b "python benchmarks/bench_pooling.py --impl torch"

Both sides compute the same numbers; the script checks the last input gradient against the other pool's on the
same batch and exits 1 if one bit differs.
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import midbench.models.lenet as lenet
from midbench.models.lenet import LeNet


def _torch_pool(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    return nn.functional.max_pool2d(x, kernel_size)


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(nn.functional.cross_entropy(model(leaf), y), leaf)
    return grad


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=["midbench", "torch"], required=True)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = LeNet(10, (1, 28, 28))
    x, y = torch.rand(args.batch, 1, 28, 28), torch.randint(0, 10, (args.batch,))
    ours = lenet.max_pool2d
    if args.impl == "torch":
        lenet.max_pool2d = _torch_pool
    for _ in range(args.steps):
        grad = input_gradient(model, x, y)
    lenet.max_pool2d = _torch_pool if args.impl == "midbench" else ours
    if not torch.equal(grad, input_gradient(model, x, y)):
        print("the two pools gave different gradients")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
