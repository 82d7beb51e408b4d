#!/usr/bin/env python3
"""P4 of docs/performance.md: AutoAttack standard through midbench against the reference
``pyautoattack.AutoAttack.run_standard_evaluation``, on the same model, images, batch size and seed.

``--impl midbench`` runs the evaluation engine (``midbench.evaluation.engine.evaluate`` with the registry's
``autoattack-linf`` entry: clean prediction, then AutoAttack on the clean-correct points, component by
component); ``--impl reference`` runs ``run_standard_evaluation`` (which also attacks only the clean-correct
points). Each prints the robust count and exits, so ``abbench`` (the
interleaved A/B timer of docs/performance.md) can time the two as whole processes::

    python benchmarks/bench_autoattack.py --prepare runs/p4      # a briefly trained LeNet (once)
    abbench -n 7 \\
        -a "python benchmarks/bench_autoattack.py --impl midbench --checkpoint runs/p4/model.safetensors" \\
        -b "python benchmarks/bench_autoattack.py --impl reference --checkpoint runs/p4/model.safetensors"

``--check`` runs both in one process and exits non-zero unless their per-example robust masks are identical.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch


def robust_mask(impl: str, checkpoint: str, n: int, eps: float, batch_size: int, seed: int,
                device: torch.device | None = None) -> torch.Tensor:
    """The per-example robust mask of AutoAttack standard (L∞, ``eps``) on the first ``n`` mnist5k test images,
    on ``device`` (default the CPU)."""
    from midbench.artifacts.loading import load_classifier
    from midbench.data import load_split

    device = device or torch.device("cpu")
    model = load_classifier(checkpoint).model.to(device).eval()
    split = load_split("mnist5k", "test").subset(torch.arange(n))
    if impl == "midbench":
        from midbench.attacks.specs import load_registry
        from midbench.evaluation.engine import evaluate

        attack = load_registry().get("autoattack-linf").resolve({"Linf": eps})
        evaluation = evaluate(model, split, [(attack, "unknown")], device=device, batch_size=batch_size, seed=seed)
        return torch.from_numpy(evaluation.matrix[:, 0])
    from pyautoattack import AutoAttack

    x, y = split.as_float().to(device), split.labels.to(device)
    reference = AutoAttack(model, norm="Linf", eps=eps, version="standard", device=str(device), seed=seed)
    x_adv, _ = reference.run_standard_evaluation(x, y, batch_size=batch_size)
    with torch.no_grad():
        return (model(x_adv).argmax(1) == y).cpu()


def prepare(out: str) -> None:
    """Train the benchmark's model: a LeNet with a little PGD adversarial training, so that points survive
    APGD-CE and every component does some work."""
    subprocess.run(["midbench", "train", "--method", "pgd-at", "--epochs", "2", "--n-train", "2000",
                    "--attack-steps", "5", "--device", "cpu", "--quiet", "--out", out], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impl", choices=("midbench", "reference"))
    parser.add_argument("--checkpoint")
    parser.add_argument("--prepare", metavar="OUT", help="train the benchmark model into OUT and exit")
    parser.add_argument("--check", action="store_true", help="run both and compare their masks")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.prepare:
        prepare(args.prepare)
        return 0
    if not args.checkpoint or not Path(args.checkpoint).is_file():
        parser.error("--checkpoint FILE is needed (make one with --prepare OUT)")
    if args.check:
        ours, theirs = (robust_mask(impl, args.checkpoint, args.n, args.eps, args.batch_size, args.seed)
                        for impl in ("midbench", "reference"))
        same = bool(torch.equal(ours, theirs))
        print(f"robust: midbench {int(ours.sum())}/{args.n}, reference {int(theirs.sum())}/{args.n}; "
              f"identical per-example masks: {same}")
        return 0 if same else 1
    if args.impl is None:
        parser.error("give --impl midbench|reference, --check or --prepare")
    mask = robust_mask(args.impl, args.checkpoint, args.n, args.eps, args.batch_size, args.seed)
    print(f"{args.impl}: robust {int(mask.sum())}/{args.n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
