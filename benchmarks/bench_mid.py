#!/usr/bin/env python3
"""Goal P6 of docs/performance.md: a MID epoch (paper protocol, fixed source model) costs no more than a
PGD-AT epoch with the same attack budget.

"Same attack budget" means the same attack steps per training example and epoch: MID's pool of ``A`` attacks
of ``S`` steps, crafted once per block of ``R`` epochs (``--refresh-every R``), spends ``A·S/R`` steps per
example and epoch, so it is compared with PGD-AT of ``K = A·S/R`` steps. Both sides run the real training
loop (``midbench.training.train``) for ``R`` epochs on the same ``--n-train`` mnist5k images with the held-out
evaluation switched off; MID reuses a source model and teacher trained once beforehand (stage 2 only, the
cost the goal is about). Pairs are interleaved in one process; the script prints each pair and the median
ratio MID / PGD-AT per epoch with its IQR::

    python benchmarks/bench_mid.py --pairs 3 --n-train 1000 --pool-steps 10 --refresh-every 4

``--threads`` (default 1) pins torch's thread count so both sides run alike.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from midbench.config import TrainConfig
from midbench.training import train

POOL_SIZE = 4  # mid-mnist-known: PGD and MI-FGSM, untargeted and targeted


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--n-train", type=int, default=1000)
    parser.add_argument("--pool-steps", type=int, default=10)
    parser.add_argument("--refresh-every", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--order", choices=("first", "second"), default="second")
    parser.add_argument("--batch-tasks", action="store_true", help="MID with --batch-tasks (one forward per module)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    budget = POOL_SIZE * args.pool_steps / args.refresh_every
    if budget != int(budget):
        raise SystemExit(f"pool budget {POOL_SIZE}×{args.pool_steps}/{args.refresh_every} is not a whole number "
                         "of PGD steps; pick --refresh-every dividing it")
    base = TrainConfig(dataset="mnist5k", arch="lenet", batch_size=args.batch_size, n_train=args.n_train,
                       val_size=0, device="cpu", lr=1e-3, epochs=args.refresh_every)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        stages = replace(base, method="mid", epochs=1, attack_steps=1,
                         options={"source_epochs": 1, "teacher_epochs": 1})
        train(stages, root / "stages", progress=False)  # trains source and teacher once
        mid = replace(base, method="mid", attack_steps=args.pool_steps,
                      options={"refresh_every": args.refresh_every, "first_order": args.order == "first",
                               "batch_tasks": args.batch_tasks,
                               "source": str(root / "stages" / "source" / "model.safetensors"),
                               "teacher": str(root / "stages" / "teacher" / "model.safetensors")})
        pgd_at = replace(base, method="pgd-at", attack_steps=int(budget))
        ratios = []
        for pair in range(args.pairs):
            seconds = {}
            for label, config in (("mid", mid), ("pgd-at", pgd_at)) if pair % 2 == 0 else \
                    (("pgd-at", pgd_at), ("mid", mid)):
                started = time.perf_counter()
                train(config, root / f"{label}-{pair}", progress=False)
                seconds[label] = (time.perf_counter() - started) / args.refresh_every
            ratios.append(seconds["mid"] / seconds["pgd-at"])
            print(f"pair {pair + 1}: MID {seconds['mid']:.2f} s/epoch, PGD-AT-{int(budget)} "
                  f"{seconds['pgd-at']:.2f} s/epoch, ratio {ratios[-1]:.3f}", flush=True)
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    batched = ", tasks batched" if args.batch_tasks else ""
    print(f"P6 ({args.order}-order MID{batched}, pool {POOL_SIZE}×{args.pool_steps} steps every "
          f"{args.refresh_every} epochs "
          f"vs PGD-AT-{int(budget)}, {args.n_train} images, batch {args.batch_size}, {args.threads} thread(s)): "
          f"median ratio {statistics.median(ratios):.3f} (IQR {quartiles[0]:.3f}–{quartiles[2]:.3f}; goal ≤ 1.0)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
