#!/usr/bin/env python3
"""Time and passes of one training step per method, relative to a clean step (issue 5's benchmark page).

For every adversarial-training method of the registry (not MID, whose stage-2 step is benchmarked by
``bench_mid.py``) this takes one step of the real training code path (``task.step``: forward, attack, loss,
backward; then an Adam step) on a batch of mnist5k training images with LeNet, interleaved with a clean
(``standard``) step in the same process, and prints the median ratio with its IQR, next to the forward and
backward passes per example counted with ``PassCounter``. Run from the repository root::

    python benchmarks/bench_methods.py --pairs 7 --steps 10

All methods use ``--steps`` attack steps (fast-at: its single FGSM step), ``--threads`` torch threads
(default 1).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pgd import interleaved, lenet, quartiles, train_split  # noqa: E402

from midbench.config import TrainConfig  # noqa: E402
from midbench.data.datasets import get_dataset  # noqa: E402
from midbench.defenses import build_task  # noqa: E402
from midbench.defenses.base import METHODS  # noqa: E402
from midbench.evaluation.counting import PassCounter  # noqa: E402

SKIPPED = {"standard", "mid", "mid-teacher"}


def config_for(method: str, steps: int, batch: int) -> TrainConfig:
    # fast-at has no step count to override (one FGSM step by definition)
    return TrainConfig.of(method=method, batch_size=batch, attack_steps=None if method == "fast-at" else steps)


def step(task: object, model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
         y: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    task.step(model, x, y, torch.arange(len(y)))  # type: ignore[attr-defined]
    optimizer.step()


def passes(method: str, steps: int, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[float, float]:
    task = build_task(config_for(method, steps, len(y)), get_dataset("mnist5k"))
    counted = PassCounter(lenet(seed))
    counted.train()
    task.step(counted, x, y, torch.arange(len(y)))
    forward, backward = counted.reset()
    return forward / len(y), backward / len(y)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x, y = train_split()
    x, y = x[:args.batch], y[:args.batch]
    dataset = get_dataset("mnist5k")
    clean_model = lenet(args.seed)
    clean = (build_task(TrainConfig.of(method="standard"), dataset), clean_model,
             torch.optim.Adam(clean_model.parameters(), lr=1e-3))
    print(f"one training step, lenet, batch {len(y)}, K = {args.steps}, {torch.get_num_threads()} thread(s), "
          f"{args.pairs} interleaved pairs per method")
    print("| method | forward / example | backward / example | step / clean step: median (IQR) |")
    print("|---|---|---|---|")
    for method in sorted(set(METHODS.names()) - SKIPPED):
        model = lenet(args.seed)
        model.train()
        arm = (build_task(config_for(method, args.steps, len(y)), dataset), model,
               torch.optim.Adam(model.parameters(), lr=1e-3))
        torch.manual_seed(args.seed)
        a_times, b_times = interleaved(lambda arm=arm: step(*arm, x, y), lambda: step(*clean, x, y), args.pairs)
        q1, median, q3 = quartiles([a / b for a, b in zip(a_times, b_times, strict=True)])
        forward, backward = passes(method, args.steps, x, y, args.seed)
        print(f"| {method} | {forward:g} | {backward:g} | {median:.2f} ({q1:.2f}–{q3:.2f}) |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
