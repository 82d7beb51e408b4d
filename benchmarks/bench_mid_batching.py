#!/usr/bin/env python3
"""P6 of docs/performance.md, the change on its own: one MID meta step with the meta-train tasks batched
through each module (``MetaSettings(batch_tasks=True)``, the default) against one forward per task
(``batch_tasks=False``, the release's way), on the same LeNet MID model, batch and tasks, interleaved::

    python benchmarks/bench_mid_batching.py --reps 30 --batch-size 64 --attacks 4

Each rep times one step of each kind, in alternating order; the script prints the median time of each and the
median of the per-rep ratios batched / per-task with its IQR, for second-order, first-order and no-meta steps.
``--threads`` (default 1) pins torch's thread count.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from midbench.mid.meta import MetaSettings, meta_step
from midbench.mid.parts import MidModules, assemble_mid_classifier, attach_decoder
from midbench.models import build_model

SHAPE = (1, 28, 28)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--attacks", type=int, default=4, help="pool attacks (tasks = attacks + the clean one)")
    parser.add_argument("--threads", type=int, default=1)
    return parser.parse_args(argv)


def _modules() -> MidModules:
    torch.manual_seed(0)
    teacher = build_model("lenet", 10, SHAPE)
    attach_decoder(teacher, "lenet", SHAPE)
    student = build_model("lenet", 10, SHAPE)
    assemble_mid_classifier(student, teacher)
    parts = MidModules.of(student)
    parts.student_encoder.train()
    for frozen in (parts.teacher_encoder, parts.decoder, parts.head):
        frozen.eval().requires_grad_(False)
    return parts


def _timed_step(parts: MidModules, tasks: list[torch.Tensor], y: torch.Tensor, settings: MetaSettings) -> float:
    for parameter in parts.student_encoder.parameters():
        parameter.grad = None
    started = time.perf_counter()
    meta_step(parts, tasks, y, held_out=1, settings=settings)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    parts = _modules()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(args.batch_size, *SHAPE, generator=generator)
    tasks = [x] + [(x + 0.3 * (2 * torch.rand(x.shape, generator=generator) - 1)).clamp(0, 1)
                   for _ in range(args.attacks)]
    y = torch.randint(10, (args.batch_size,), generator=generator)
    for mode in ("second-order", "first-order", "no-meta"):
        kinds = {batched: MetaSettings(first_order=mode == "first-order", meta=mode != "no-meta",
                                       batch_tasks=batched) for batched in (True, False)}
        for settings in kinds.values():  # warm-up
            _timed_step(parts, tasks, y, settings)
        seconds: dict[bool, list[float]] = {True: [], False: []}
        for rep in range(args.reps):
            for batched in (True, False) if rep % 2 == 0 else (False, True):
                seconds[batched].append(_timed_step(parts, tasks, y, kinds[batched]))
        ratios = [b / p for b, p in zip(seconds[True], seconds[False], strict=True)]
        quartiles = statistics.quantiles(ratios, n=4)
        print(f"{mode}: batched {statistics.median(seconds[True]) * 1e3:.1f} ms, per task "
              f"{statistics.median(seconds[False]) * 1e3:.1f} ms, ratio {statistics.median(ratios):.3f} "
              f"(IQR {quartiles[0]:.3f}–{quartiles[2]:.3f}; {args.reps} reps, batch {args.batch_size}, "
              f"{args.attacks + 1} tasks, {args.threads} thread(s))", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
