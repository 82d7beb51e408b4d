#!/usr/bin/env python3
"""PGD benchmarks for goals P1 and P3 of docs/performance.md.

- P1: native PGD-K L∞ per-example time vs torchattacks ``PGD`` (same run, interleaved): median ratio ≤ 1.0.
- P3: a PGD-K adversarial-training step costs exactly K+1 forwards and K+1 backwards per example, and its wall
  time is at most (K+1)× that of a clean training step.

Modes:

``--mode passes``
    Counts forward/backward passes per example (``midbench.evaluation.counting.PassCounter``) of one
    PGD-AT training step (``task.loss`` on the counted model, then ``loss.backward()``) for several K, and
    of one clean step; exits non-zero unless they are exactly K+1 / K+1 and 1 / 1.
``--mode attack --impl native|torchattacks``
    Runs PGD-40 L∞ (ε 0.3, step 0.01, random start) once on N mnist5k test images against a fixed,
    seeded, briefly trained LeNet, then exits. This is the command ``abbench``
    (the interleaved A/B timer of docs/performance.md) times (run from the
    repository root)::

        abbench -n 7 \\
            -a "python benchmarks/bench_pgd.py --mode attack --impl native" \\
            -b "python benchmarks/bench_pgd.py --mode attack --impl torchattacks"

    With ``--check`` it instead runs both implementations on the same model, data and random start and prints
    their robust accuracies (exit non-zero if they differ by more than ``--tolerance``).
``--mode attack-ratio``
    The same attack, both implementations timed in one process, interleaved (attack time only, without the
    interpreter start-up and model set-up that the abbench figure includes).
``--mode step-ratio``
    Same-process interleaved timing (≥ 7 pairs, median and IQR) of a PGD-AT step vs a clean training
    step, with the ratio and the K+1 bound of P3.

All modes use ``--threads`` torch threads (default 1) so the two sides of a comparison run alike.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

from midbench.attacks.gradient import PGD
from midbench.attacks.norms import Norm
from midbench.config import TrainConfig
from midbench.data.datasets import get_dataset, load_split
from midbench.defenses import DefenseTask, build_task
from midbench.evaluation.counting import PassCounter
from midbench.models import build_model

DATASET = "mnist5k"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", required=True, choices=("passes", "attack", "attack-ratio", "step-ratio"))
    parser.add_argument("--impl", choices=("native", "torchattacks"), default="native",
                        help="attack implementation for --mode attack (default native)")
    parser.add_argument("--check", action="store_true",
                        help="--mode attack: compare the robust accuracy of both implementations instead")
    parser.add_argument("--tolerance", type=float, default=0.01,
                        help="--check: largest allowed robust-accuracy difference (default 0.01)")
    parser.add_argument("-n", "--num-images", type=int, default=200,
                        help="test images attacked (default 200)")
    parser.add_argument("--batch-size", type=int, default=200, help="attack batch size (default 200)")
    parser.add_argument("--eps", type=float, default=0.3, help="L∞ radius (default 0.3)")
    parser.add_argument("--step-size", type=float, default=0.01, help="attack step size (default 0.01)")
    parser.add_argument("--steps", type=int, default=None,
                        help="PGD steps K (default 40 for attack modes, 10 for step-ratio)")
    parser.add_argument("--ks", default="1,5,10",
                        help="--mode passes: comma-separated K values (default 1,5,10)")
    parser.add_argument("--train-steps", type=int, default=20,
                        help="Adam steps (batch 32) on clean mnist5k before attacking (default 20)")
    parser.add_argument("--train-batch", type=int, default=128,
                        help="batch size of the training step in passes/step-ratio (default 128)")
    parser.add_argument("--pairs", type=int, default=9,
                        help="timed pairs for the *-ratio modes (default 9, min 7)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


# ---------------------------------------------------------------------------------------------- set-up


def lenet(seed: int) -> nn.Module:
    spec = get_dataset(DATASET)
    torch.manual_seed(seed)
    return build_model("lenet", spec.num_classes, spec.input_shape, spec.mean, spec.std)


def train_split() -> tuple[torch.Tensor, torch.Tensor]:
    data = load_split(DATASET, "train")
    return data.as_float(), data.labels


def test_batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_split(DATASET, "test")
    n = min(n, len(data))
    return data.images[:n].float().div_(255.0), data.labels[:n]


def fixed_model(seed: int, train_steps: int, batch: int = 32) -> nn.Module:
    """A seeded LeNet after ``train_steps`` deterministic Adam steps on clean training images (eval mode)."""
    model = lenet(seed)
    if train_steps > 0:
        x, y = train_split()
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for step in range(train_steps):
            index = order[(step * batch) % len(y):][:batch]
            optimizer.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(True)  # as a user hands a model to either library
    return model


# ---------------------------------------------------------------------------------------------- attacks


def build_attack(impl: str, model: nn.Module, eps: float, step_size: float, steps: int
                 ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if impl == "torchattacks":
        import torchattacks

        attack = torchattacks.PGD(model, eps=eps, alpha=step_size, steps=steps, random_start=True)
        return lambda x, y: attack(x, y)
    native = PGD(eps, Norm.LINF, steps=steps, step_size=step_size, random_start=True)
    return lambda x, y: native(model, x, y)


def run_attack(attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor,
               batch_size: int, seed: int) -> torch.Tensor:
    """Adversarial examples for all of ``x``, batch by batch; random starts drawn after manual_seed(seed)."""
    torch.manual_seed(seed)
    return torch.cat([attack(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)])


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def mode_attack(args: argparse.Namespace) -> int:
    steps = args.steps or 40
    model = fixed_model(args.seed, args.train_steps)
    x, y = test_batch(args.num_images)
    if not args.check:
        attack = build_attack(args.impl, model, args.eps, args.step_size, steps)
        started = time.perf_counter()
        run_attack(attack, x, y, args.batch_size, args.seed + 1)
        elapsed = time.perf_counter() - started
        print(f"{args.impl} PGD-{steps} Linf eps {args.eps} step {args.step_size}: {len(y)} images, "
              f"{elapsed:.3f} s attack, {1e3 * elapsed / len(y):.3f} ms/example")
        return 0
    print(f"model: lenet, seed {args.seed}, {args.train_steps} Adam steps of batch 32; clean accuracy "
          f"{accuracy(model, x, y):.4f} on {len(y)} {DATASET} test images")
    adversarial = {}
    for impl in ("native", "torchattacks"):
        attack = build_attack(impl, model, args.eps, args.step_size, steps)
        adversarial[impl] = run_attack(attack, x, y, args.batch_size, args.seed + 1)
        delta = (adversarial[impl] - x).abs().amax()
        print(f"{impl:>12}: PGD-{steps} robust accuracy {accuracy(model, adversarial[impl], y):.4f} "
              f"(max |δ| {float(delta):.4f})")
    native, reference = adversarial["native"], adversarial["torchattacks"]
    difference = abs(accuracy(model, native, y) - accuracy(model, reference, y))
    same = float((native - reference).flatten(1).abs().amax(1).le(1e-6).float().mean())
    print(f"robust accuracy difference {difference:.4f} (tolerance {args.tolerance}); "
          f"identical adversarial examples: {same:.1%}")
    return 0 if difference <= args.tolerance else 1


# ---------------------------------------------------------------------------------------------- timing


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return q1, statistics.median(values), q3


def interleaved(a: Callable[[], object], b: Callable[[], object], pairs: int
                ) -> tuple[list[float], list[float]]:
    """Times ``a`` and ``b`` alternately (A B, then B A, ...) after one warm-up pair."""
    def timed(fn: Callable[[], object]) -> float:
        started = time.perf_counter()
        fn()
        return time.perf_counter() - started

    a(), b()
    a_times, b_times = [], []
    for i in range(pairs):
        if i % 2 == 0:
            a_times.append(timed(a))
            b_times.append(timed(b))
        else:
            b_times.append(timed(b))
            a_times.append(timed(a))
    return a_times, b_times


def report(name_a: str, name_b: str, a_times: list[float], b_times: list[float]) -> float:
    for name, times in ((name_a, a_times), (name_b, b_times)):
        q1, median, q3 = quartiles(times)
        print(f"{name:>24}: median {1e3 * median:.1f} ms  IQR {1e3 * q1:.1f}-{1e3 * q3:.1f} ms")
    q1, median, q3 = quartiles([a / b for a, b in zip(a_times, b_times, strict=True)])
    print(f"{'ratio A/B':>24}: median {median:.3f}  IQR {q1:.3f}-{q3:.3f}  ({len(a_times)} pairs)")
    return median


def mode_attack_ratio(args: argparse.Namespace) -> int:
    steps = args.steps or 40
    model = fixed_model(args.seed, args.train_steps)
    x, y = test_batch(args.num_images)
    native = build_attack("native", model, args.eps, args.step_size, steps)
    reference = build_attack("torchattacks", model, args.eps, args.step_size, steps)
    a_times, b_times = interleaved(lambda: run_attack(native, x, y, args.batch_size, args.seed + 1),
                                   lambda: run_attack(reference, x, y, args.batch_size, args.seed + 1),
                                   max(args.pairs, 7))
    print(f"PGD-{steps} Linf on {len(y)} images, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s)")
    median = report("A native", "B torchattacks", a_times, b_times)
    print(f"P1 (native/torchattacks <= 1.0): {'met' if median <= 1.0 else 'NOT met'}")
    return 0


def training_step(task: DefenseTask, model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                  y: torch.Tensor) -> None:
    """One step of midbench.training.loop: ``task.loss``, zero_grad, ``loss.backward()``, optimiser step."""
    loss = task.loss(model, x, y)["loss"]
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def mode_step_ratio(args: argparse.Namespace) -> int:
    k = args.steps or 10
    dataset = get_dataset(DATASET)
    x, y = train_split()
    x, y = x[:args.train_batch], y[:args.train_batch]
    arms = []
    for config in (TrainConfig.of(method="pgd-at", attack_steps=k, batch_size=args.train_batch),
                   TrainConfig.of(method="standard", batch_size=args.train_batch)):
        model = lenet(args.seed)
        model.train()
        arms.append((build_task(config, dataset), model, torch.optim.Adam(model.parameters(), lr=1e-3)))
    torch.manual_seed(args.seed)
    a_times, b_times = interleaved(lambda: training_step(*arms[0], x, y),
                                   lambda: training_step(*arms[1], x, y), max(args.pairs, 7))
    print(f"training step, lenet, batch {len(y)}, PGD-AT K={k}, {torch.get_num_threads()} thread(s)")
    median = report(f"A PGD-AT step (K={k})", "B clean step", a_times, b_times)
    print(f"P3 bound K+1 = {k + 1}: ratio {median:.2f} {'<=' if median <= k + 1 else '>'} {k + 1} "
          f"({'met' if median <= k + 1 else 'NOT met'})")
    return 0


# ---------------------------------------------------------------------------------------------- passes


def count_step(config: TrainConfig, x: torch.Tensor, y: torch.Tensor, seed: int) -> tuple[float, float]:
    """Forward and backward passes per example of one training step of ``config.method``."""
    task = build_task(config, get_dataset(DATASET))
    counted = PassCounter(lenet(seed))
    counted.train()
    task.loss(counted, x, y)["loss"].backward()
    forward, backward = counted.reset()
    return forward / len(y), backward / len(y)


def mode_passes(args: argparse.Namespace) -> int:
    x, y = train_split()
    x, y = x[:args.train_batch], y[:args.train_batch]
    ok = True
    print(f"passes per example of one training step on a batch of {len(y)} {DATASET} images (lenet)")
    forward, backward = count_step(TrainConfig.of(method="standard"), x, y, args.seed)
    good = forward == 1 and backward == 1
    ok &= good
    print(f"  clean step:       forward {forward:g}  backward {backward:g}  expected 1/1  "
          f"{'OK' if good else 'WRONG'}")
    for k in (int(value) for value in args.ks.split(",")):
        forward, backward = count_step(TrainConfig.of(method="pgd-at", attack_steps=k), x, y, args.seed)
        good = forward == k + 1 and backward == k + 1
        ok &= good
        print(f"  PGD-AT step K={k:<3} forward {forward:g}  backward {backward:g}  expected K+1 = {k + 1}  "
              f"{'OK' if good else 'WRONG'}")
    print("P3 pass counts:", "met" if ok else "NOT met")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    modes = {"passes": mode_passes, "attack": mode_attack, "attack-ratio": mode_attack_ratio,
             "step-ratio": mode_step_ratio}
    return modes[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
