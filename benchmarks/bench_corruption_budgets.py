"""How far each optimised corruption's budget breaks an undefended model: accuracy at 0.1, 0.5, 1 and 2 times the
full budget of its registry entry (suite ``unforeseen-ua``), the check behind the full budgets of
``attacks_registry/unforeseen_ua.toml`` (docs/unforeseen.md).

    midbench train --method standard --arch lenet --dataset mnist5k --epochs 5 --out runs/docs-standard-lenet
    python benchmarks/bench_corruption_budgets.py runs/docs-standard-lenet/model.safetensors [--n 200]

Single thread; the first ``--n`` test images of mnist5k; each budget attacked from the same global seed.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from midbench.artifacts.loading import load_classifier
from midbench.attacks.specs import load_registry
from midbench.data import get_dataset, load_split

SCALES = (0.1, 0.5, 1.0, 2.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=200, help="test images (default 200)")
    parser.add_argument("--suite", default="unforeseen-ua")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_classifier(args.checkpoint).model.eval()
    split = load_split("mnist5k", "test").subset(torch.arange(args.n))
    x, y = split.as_float(), split.labels
    with torch.no_grad():
        print(f"clean accuracy {100 * (model(x).argmax(1) == y).float().mean().item():.1f}% on {args.n} images")
    registry = load_registry()
    eps = get_dataset("mnist5k").eps
    print("| attack | " + " | ".join(f"{s:g} x budget" for s in SCALES) + " | seconds |")
    print("|---|" + "---:|" * (len(SCALES) + 1))
    for spec in registry.suite(args.suite):
        resolved = spec.resolve(eps)
        if resolved.needs_colour:
            continue
        start, row = time.perf_counter(), []
        for scale in SCALES:
            params = {**spec.params, **{name: spec.params[name] * scale for name in spec.budget}}
            attack = replace(spec, params=params).resolve(eps).build()
            torch.manual_seed(0)
            adversarial = attack(model, x, y)
            with torch.no_grad():
                row.append(100 * (model(adversarial).argmax(1) == y).float().mean().item())
        cells = " | ".join(f"{value:.1f}" for value in row)
        print(f"| {spec.id} | {cells} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
