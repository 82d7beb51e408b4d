#!/usr/bin/env python3
"""How much does MID's meta step change the gradient? (issue 13, point 2)

MID's outer gradient is ``∇_θ [L_tr(θ) + L_te(θ − α∇L_tr(θ))]`` (Zhang et al., TPAMI 2024, Alg. 1;
``midbench.mid.meta``). With no inner step (α = 0) it is the plain gradient of ``L_tr(θ) + L_te(θ)``:
multi-attack distillation with the held-out task weighted (1, 1, 1) instead of (1, 1.5, 0.8). This script
measures, on real batches of a trained MID model and of a freshly initialised student (the start of training),

- ``meta vs none``: ‖g_α − g_0‖ / ‖g_0‖, the share of the gradient the inner step contributes at all;
- ``2nd vs 1st``: ‖g_α − g_α^{FO}‖ / ‖g_α‖, the share of the second-order (Hessian-vector) term,

for each α of ``--alphas``, each the median over ``--batches`` training batches (held-out task cycling through the
pool). The pool is the checkpoint's own (its recorded training attacks), crafted on its recorded source model::

    python benchmarks/meta_gradient.py --checkpoint runs/sweep-mnist5k/mid/model.safetensors

Numbers are exact computations (no timing), so one run suffices; the result is recorded in
``docs/reproduce-mid.md``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from midbench.artifacts.loading import load_classifier, load_with_aux, recorded_source
from midbench.attacks.specs import ResolvedAttack
from midbench.data import load_split
from midbench.data.batches import DeviceBatches
from midbench.mid.meta import MetaSettings, meta_step
from midbench.mid.parts import MidModules, freeze
from midbench.models import build_model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/sweep-mnist5k/mid/model.safetensors"))
    parser.add_argument("--alphas", default="1e-4,1e-3,1e-2,1e-1")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def gradient(modules: MidModules, tasks: list[torch.Tensor], y: torch.Tensor, held_out: int,
             settings: MetaSettings) -> torch.Tensor:
    """The flattened outer gradient of one meta step."""
    for parameter in modules.student_encoder.parameters():
        parameter.grad = None
    meta_step(modules, tasks, y, held_out, settings)
    return torch.cat([p.grad.flatten() for p in modules.student_encoder.parameters()])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖."""
    return float((a - b).norm() / b.norm())


def measure(modules: MidModules, batches: list[tuple[list[torch.Tensor], torch.Tensor]], alphas: list[float]
            ) -> list[tuple[float, float, float]]:
    rows = []
    for alpha in alphas:
        none, order = [], []
        for index, (tasks, y) in enumerate(batches):
            held_out = 1 + index % (len(tasks) - 1)
            plain = gradient(modules, tasks, y, held_out, MetaSettings(inner_lr=0.0))
            second = gradient(modules, tasks, y, held_out, MetaSettings(inner_lr=alpha))
            first = gradient(modules, tasks, y, held_out, MetaSettings(inner_lr=alpha, first_order=True))
            none.append(relative(second, plain))
            order.append(relative(first, second))
        rows.append((alpha, statistics.median(none), statistics.median(order)))
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    loaded = load_with_aux(args.checkpoint)
    meta = loaded.metadata
    source_path = recorded_source(meta, args.checkpoint)
    if source_path is None:
        raise SystemExit(f"{args.checkpoint} names no source model (source_checkpoint); pass a MID checkpoint")
    source = freeze(load_classifier(source_path).model)
    pool = [ResolvedAttack.from_dict(attack).build(seed=0, batch_size=args.batch_size)
            for attack in meta.train_attacks]
    split = load_split(meta.dataset, "train")
    batches = []
    for _, x, y in DeviceBatches(split, args.batch_size, torch.device("cpu")).indexed_epoch(shuffle=False):
        batches.append(([x, *(attack(source, x, y).detach() for attack in pool)], y))
        if len(batches) == args.batches:
            break
    alphas = [float(a) for a in args.alphas.split(",")]
    model = loaded.model
    freeze(model.aux)
    freeze(model.net.head)
    states = {"trained": {k: v.clone() for k, v in model.net.encoder.state_dict().items()}}
    torch.manual_seed(1)  # a student as stage 2 starts it (random init)
    fresh = build_model(meta.arch, meta.num_classes, meta.input_shape).net.encoder
    states["fresh init"] = fresh.state_dict()
    print(f"checkpoint {args.checkpoint} (inner_lr {meta.method_params['inner_lr']}), "
          f"{args.batches} batches of {args.batch_size}, pool {[a['id'] for a in meta.train_attacks]}")
    print("| student | α | meta vs none ‖g_α − g_0‖/‖g_0‖ | 2nd vs 1st order ‖g_α − g_α^FO‖/‖g_α‖ |")
    print("|---|---|---|---|")
    for label, state in states.items():
        model.net.encoder.load_state_dict(state)
        modules = MidModules.of(model)
        for alpha, none, order in measure(modules, batches, alphas):
            print(f"| {label} | {alpha:g} | {100 * none:.3g}% | {100 * order:.3g}% |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
