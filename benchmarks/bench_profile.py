#!/usr/bin/env python3
"""Goal P11: the unknown-attack profile climbed nested vs the same strengths evaluated independently.

Both runs attack the first ``--n`` mnist5k test images with the shipped ``unknown-profile`` suite at every
strength of every threat model's ladder. The nested climb (``midbench eval --unknown-attacks``) attacks at each
strength only the examples still robust; the independent evaluation attacks every clean-correct example at every
strength, and its curve is the per-example worst case over the strengths up to each one. The script prints, per
threat model and in total, the forward + backward passes of each (counted by ``PassCounter``: exact and
deterministic) and their ratio, the wall-time ratio of the two runs done in alternation (``--pairs``), and
checks that the two curves are identical example by example. Run from the repository root on a robust model,
e.g. the README's PGD-AT LeNet::

    midbench train --method pgd-at --dataset mnist5k --epochs 6 --attack-steps 10 --batch-size 64 --out runs/pgdat
    python benchmarks/bench_profile.py runs/pgdat/model.safetensors --n 200 --pairs 1
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from midbench.artifacts.loading import load_classifier
from midbench.attacks.plans import profile_plan, seen_threat_models
from midbench.attacks.specs import ResolvedAttack, load_registry
from midbench.data.datasets import get_dataset, load_split
from midbench.evaluation.attacking import AttackRunner, predict
from midbench.evaluation.profile import climb, independent_curves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=200, help="test images")
    parser.add_argument("--pairs", type=int, default=1, help="nested/independent runs, alternated")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    loaded = load_classifier(args.checkpoint)
    model = loaded.model.eval()
    dataset = loaded.metadata.dataset
    data = load_split(dataset, "test").subset(torch.arange(args.n))
    images, labels = data.as_float(), data.labels.clone()
    clean = (predict(model, images, 256) == labels).numpy()
    registry = load_registry()
    train_attacks = [ResolvedAttack.from_dict(item) for item in loaded.metadata.train_attacks]
    plans = profile_plan(registry, get_dataset(dataset).eps, seen_threat_models(train_attacks, registry),
                         dataset=dataset)

    def runner() -> AttackRunner:
        return AttackRunner(model, model, images, labels, device=torch.device("cpu"), protocol="whitebox",
                            batch_size=256, seed=0, progress=None, state=None)

    def nested() -> dict[str, tuple[np.ndarray, int]]:
        return {c.plan.threat_model.id: (c.robust, c.forward_passes + c.backward_passes)
                for c in climb(runner(), plans, clean)}

    def independent() -> dict[str, tuple[np.ndarray, int]]:
        return {c.plan.threat_model.id: (c.robust, c.forward_passes + c.backward_passes)
                for c in independent_curves(runner(), plans, clean)}

    times: dict[str, list[float]] = {"nested": [], "independent": []}
    results = {}
    for _ in range(args.pairs):
        for name, function in (("nested", nested), ("independent", independent)):
            started = time.perf_counter()
            results[name] = function()
            times[name].append(time.perf_counter() - started)

    print(f"{loaded.metadata.name} ({loaded.metadata.method}), n={args.n}, clean {clean.mean():.3f}, "
          f"threads={args.threads}")
    print(f"{'threat model':<12} {'seen':<5} {'nested passes':>14} {'independent':>12} {'ratio':>6}  identical")
    total_nested = total_independent = 0
    for plan in plans:
        model_id = plan.threat_model.id
        (nested_curve, nested_cost), (independent_curve, independent_cost) = (results["nested"][model_id],
                                                                                results["independent"][model_id])
        total_nested, total_independent = total_nested + nested_cost, total_independent + independent_cost
        same = np.array_equal(nested_curve, independent_curve)
        accuracy = " ".join(f"{a:.2f}" for a in nested_curve.mean(axis=0))
        print(f"{model_id:<12} {'yes' if plan.seen else '':<5} {nested_cost:>14} {independent_cost:>12} "
              f"{nested_cost / max(independent_cost, 1):>6.3f}  {same}   curve {accuracy}")
    print(f"{'total':<18} {total_nested:>14} {total_independent:>12} {total_nested / total_independent:>6.3f}")
    wall = statistics.median(n / i for n, i in zip(times["nested"], times["independent"], strict=True))
    print(f"wall: nested {statistics.median(times['nested']):.1f} s, independent "
          f"{statistics.median(times['independent']):.1f} s, median ratio {wall:.3f} over {args.pairs} pair(s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
