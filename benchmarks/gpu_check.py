#!/usr/bin/env python3
"""The parts of ``benchmarks/gpu_check.sh``: each sub-command checks one thing on a device and prints its figures
as one ``RESULT {json}`` line, which the script gathers into its summary table. Every part also runs on the CPU
(``--device cpu``, small sizes), which is how the tests exercise them (``tests/test_gpu_check.py``).

``precision --method pgd-at|mid [--small]``
    One training step of the real code path (``task.step`` of PGD-AT; MID's ``meta_step``) on ResNet-18 at 32×32,
    in float32 and in bf16 autocast with channels_last memory layout, from the same weights, batch and seeds:
    the same-run speed ratio (interleaved pairs, median) and the relative difference of the first step's loss.
    The batch is uniform noise with random labels: speed and rounding do not depend on the pixels, and the
    device machine has no dataset. MID's four pool tasks are the clean batch plus ±ε sign noise (crafting them
    is PGD on the source model, the cost PGD-AT's row already shows), so the row times the meta step itself.
    ``--small`` takes the tiny networks of the same layouts (``test-resnet``, ``test-resnet-ae``): the CPU run's
    setting, where bf16 is emulated some ten times slower than float32 and only the code path is checked.

    Tolerance: ``LOSS_TOLERANCE`` (2% relative). bf16 keeps an 8-bit significand, a relative rounding of
    2⁻⁹ ≈ 0.2% per operation; a mean cross-entropy over a batch averages many such errors, so a loss further
    than about ten roundings from float32's means the bf16 path computes something else (an op left in the
    wrong precision, a lost gradient), not rounding. PGD-AT's adversarial examples may also differ where bf16
    flips the sign of a near-zero input gradient; at ε = 8/255 that moves the loss far less than 2%.

``pgd``
    Native PGD-10 L∞ (ε 8/255) against torchattacks' ``PGD`` on the same model and images, timed interleaved in
    one process (median ratio native / torchattacks, docs/performance.md P1 on the device), with both robust
    accuracies.

``autoattack CHECKPOINT``
    AutoAttack standard through midbench's engine against the reference ``run_standard_evaluation`` on the same
    model, images, batch and seed (``bench_autoattack.robust_mask``): the per-example robust masks must be
    identical.

``compare-matrices DIR_A DIR_B``
    The per-example matrices of two result folders (the same evaluations run two ways: CPU and GPU, one
    process and several): how many entries differ, per matrix.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from midbench.paths import TRANSFER_CACHE_DIR

sys.path.insert(0, str(Path(__file__).resolve().parent))

#: the networks of the precision rows: the GPU's, and ``--small``'s tiny ones of the same layout (MID's has a decoder)
ARCHS = {"pgd-at": "preact-resnet18", "mid": "resnet18"}
SMALL_ARCHS = {"pgd-at": "test-resnet", "mid": "test-resnet-ae"}
#: the largest relative difference of a bf16 + channels_last step's loss from float32's (reasoning above)
LOSS_TOLERANCE = 0.02
SHAPE = (3, 32, 32)
EPS = 8 / 255


def emit(check: str, device: torch.device, ok: bool | None, **figures: Any) -> None:
    """The part's one summary line (``ok`` None: measured, nothing to pass or fail)."""
    print("RESULT " + json.dumps({"check": check, "device": str(device), "ok": ok, **figures}), flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_seconds(a: Callable[[], object], b: Callable[[], object], pairs: int, device: torch.device
                        ) -> tuple[list[float], list[float]]:
    """``a`` and ``b`` timed alternately (A B, then B A, …) after a warm-up of each, synchronising the device."""
    def timed(fn: Callable[[], object]) -> float:
        synchronize(device)
        started = time.perf_counter()
        fn()
        synchronize(device)
        return time.perf_counter() - started

    timed(a), timed(b)
    a_times: list[float] = []
    b_times: list[float] = []
    for i in range(pairs):
        first, second = ((a, a_times), (b, b_times)) if i % 2 == 0 else ((b, b_times), (a, a_times))
        first[1].append(timed(first[0]))
        second[1].append(timed(second[0]))
    return a_times, b_times


def median_ratio(a_times: list[float], b_times: list[float]) -> float:
    return statistics.median(a / b for a, b in zip(a_times, b_times, strict=True))


def noise_batch(batch: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, *SHAPE, generator=generator)
    y = torch.randint(10, (batch,), generator=generator)
    return x.to(device), y.to(device)


# ---------------------------------------------------------------------------------------------- precision


class _Step:
    """One configuration of a training step: a copy of the weights, its optimizer, layout and autocast."""

    def __init__(self, method: str, base: nn.Module, device: torch.device, fast: bool, attack_steps: int,
                 arch: str) -> None:
        self.method, self.device, self.fast = method, device, fast
        self.model = copy.deepcopy(base).to(device)
        if fast:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.model.train()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(trainable, lr=0.01, momentum=0.9)
        self.attack_steps = attack_steps
        self.task: Any = None
        if method == "pgd-at":
            from midbench.config import TrainConfig
            from midbench.data import get_dataset
            from midbench.defenses import build_task

            self.task = build_task(TrainConfig.of(method="pgd-at", dataset="cifar10", arch=arch,
                                                  attack_steps=attack_steps), get_dataset("cifar10"))

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        return (torch.autocast(device_type=self.device.type, dtype=torch.bfloat16) if self.fast
                else contextlib.nullcontext())

    def __call__(self, x: torch.Tensor, y: torch.Tensor, seed: int) -> float:
        if self.fast:
            x = x.contiguous(memory_format=torch.channels_last)
        torch.manual_seed(seed)  # the PGD random start
        self.optimizer.zero_grad(set_to_none=True)
        if self.method == "pgd-at":
            loss = self.task.step(self.model, x, y, torch.arange(len(y)), self.autocast())["loss"]
        else:
            loss = self._mid_step(x, y)
        self.optimizer.step()
        return float(loss.detach())

    def _mid_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from midbench.mid.meta import MetaSettings, meta_step
        from midbench.mid.parts import MidModules

        generator = torch.Generator().manual_seed(1)
        # the pool's four tasks: sign noise at ε around the clean batch (see the module docstring)
        tasks = [x] + [(x + EPS * torch.randint(0, 2, x.shape, generator=generator).to(x.device).mul(2).sub(1))
                       .clamp(0, 1) for _ in range(4)]
        parts = MidModules.of(self.model)
        self.model.net.head.eval()
        self.model.aux.eval()
        # MID's step is not one loss's backward: autocast wraps the whole meta step (forwards and its
        # second-order gradients), the only way to run it in bf16
        with self.autocast():
            return meta_step(parts, tasks, y, held_out=1, settings=MetaSettings()).objective


def _base_model(method: str, arch: str) -> nn.Module:
    from midbench.data import get_dataset
    from midbench.models import build_model

    spec = get_dataset("cifar10")
    torch.manual_seed(0)
    if method == "pgd-at":
        return build_model(arch, 10, SHAPE, spec.mean, spec.std)
    from midbench.mid.parts import assemble_mid_classifier, attach_decoder

    teacher = build_model(arch, 10, SHAPE, spec.mean, spec.std)
    attach_decoder(teacher, arch, SHAPE)
    student = build_model(arch, 10, SHAPE, spec.mean, spec.std)
    assemble_mid_classifier(student, teacher)
    return student


def check_precision(method: str, device: torch.device, batch: int, pairs: int, attack_steps: int,
                    small: bool = False) -> bool:
    arch = (SMALL_ARCHS if small else ARCHS)[method]
    base = _base_model(method, arch)
    x, y = noise_batch(batch, device)
    fp32, fast = (_Step(method, base, device, flag, attack_steps, arch) for flag in (False, True))
    first = {"fp32": fp32(x, y, seed=0), "bf16+channels_last": fast(x, y, seed=0)}
    difference = abs(first["bf16+channels_last"] - first["fp32"]) / abs(first["fp32"])
    fp32_times, fast_times = interleaved_seconds(lambda: fp32(x, y, 0), lambda: fast(x, y, 0), pairs, device)
    ok = difference <= LOSS_TOLERANCE
    emit(f"{method} step bf16+CL vs fp32", device, ok, arch=arch, batch=batch, pairs=pairs,
         fp32_ms=round(1e3 * statistics.median(fp32_times), 2),
         fast_ms=round(1e3 * statistics.median(fast_times), 2),
         speedup=round(median_ratio(fp32_times, fast_times), 3),
         loss_fp32=round(first["fp32"], 5), loss_bf16=round(first["bf16+channels_last"], 5),
         loss_rel_diff=round(difference, 5), tolerance=LOSS_TOLERANCE)
    return ok


# ---------------------------------------------------------------------------------------------- PGD


def check_pgd(device: torch.device, n: int, batch: int, steps: int, pairs: int) -> bool:
    import torchattacks

    from midbench.attacks.gradient import PGD
    from midbench.attacks.norms import Norm

    model = _base_model("pgd-at", ARCHS["pgd-at"]).to(device).eval()
    x, y = noise_batch(n, device)
    step_size = 2.5 * EPS / steps
    native = PGD(EPS, Norm.LINF, steps=steps, step_size=step_size, random_start=True)
    reference = torchattacks.PGD(model, eps=EPS, alpha=step_size, steps=steps, random_start=True)

    def run(attack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        torch.manual_seed(1)
        return torch.cat([attack(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)])

    def accuracy(images: torch.Tensor) -> float:
        with torch.no_grad():
            return float((model(images).argmax(1) == y).float().mean())

    native_times, reference_times = interleaved_seconds(lambda: run(lambda a, b: native(model, a, b)),
                                                        lambda: run(reference), pairs, device)
    native_x, reference_x = run(lambda a, b: native(model, a, b)), run(reference)
    within = float((native_x - x).abs().amax()) <= EPS + 1e-6
    emit("native PGD vs torchattacks", device, within, n=n, steps=steps, pairs=pairs,
         native_ms=round(1e3 * statistics.median(native_times), 2),
         torchattacks_ms=round(1e3 * statistics.median(reference_times), 2),
         ratio=round(median_ratio(native_times, reference_times), 3),
         acc_native=round(accuracy(native_x), 4), acc_torchattacks=round(accuracy(reference_x), 4))
    return within


# ---------------------------------------------------------------------------------------------- AutoAttack


def check_autoattack(device: torch.device, checkpoint: str, n: int, eps: float, batch: int) -> bool:
    from bench_autoattack import robust_mask

    started = time.perf_counter()
    ours = robust_mask("midbench", checkpoint, n, eps, batch, seed=0, device=device)
    reference = robust_mask("reference", checkpoint, n, eps, batch, seed=0, device=device)
    same = bool(torch.equal(ours.cpu(), reference.cpu()))
    emit("AutoAttack = reference", device, same, n=n, eps=eps, robust_midbench=int(ours.sum()),
         robust_reference=int(reference.sum()), differing=int((ours.cpu() != reference.cpu()).sum()),
         seconds=round(time.perf_counter() - started, 1))
    return same


# ---------------------------------------------------------------------------------------------- result folders


def _matrices(folder: Path) -> dict[str, np.ndarray]:
    """Every per-example matrix of a results folder, keyed by model, protocol and matrix name."""
    found: dict[str, np.ndarray] = {}
    for path in sorted(folder.rglob("*.npz")):
        if TRANSFER_CACHE_DIR in path.parts:  # a transfer cache's entries are not result files
            continue
        document = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        key = f"{document['checkpoint']['name']}/{document['protocol']['name']}"
        with np.load(path) as saved:
            for name in saved.files:
                if name == "robust" or name.startswith("profile_"):
                    found[f"{key}/{name}"] = saved[name]
    return found


def compare_matrices(label: str, first: Path, second: Path, expect_equal: bool) -> bool:
    a, b = _matrices(first), _matrices(second)
    if not a or sorted(a) != sorted(b):
        emit(label, torch.device("cpu"), False, error=f"different matrices: {sorted(a)} vs {sorted(b)}")
        return False
    differing = {key: int((a[key] != b[key]).sum()) for key in sorted(a) if a[key].shape == b[key].shape}
    shapes_ok = len(differing) == len(a)
    total = sum(differing.values())
    entries = sum(int(a[key].size) for key in a)
    ok = shapes_ok and (total == 0 if expect_equal else None)
    emit(label, torch.device("cpu"), ok, matrices=len(a), entries=entries, differing_entries=total,
         differing={key: count for key, count in differing.items() if count})
    return ok is not False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("precision", "pgd", "autoattack", "compare-matrices"))
    parser.add_argument("paths", nargs="*", help="autoattack: CHECKPOINT; compare-matrices: DIR_A DIR_B")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--method", choices=("pgd-at", "mid"), default="pgd-at")
    parser.add_argument("--small", action="store_true", help="precision: the tiny networks of the same layouts")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--attack-steps", type=int, default=10)
    parser.add_argument("--eps", type=float, default=0.1, help="autoattack: L∞ ε on mnist5k")
    parser.add_argument("--label", default="matrices equal")
    parser.add_argument("--expect-equal", action="store_true", help="compare-matrices: fail on any difference")
    args = parser.parse_intermixed_args(argv)
    device = torch.device(args.device)
    if args.part == "precision":
        ok = check_precision(args.method, device, args.batch, args.pairs, args.attack_steps, args.small)
    elif args.part == "pgd":
        ok = check_pgd(device, args.n, args.batch, args.attack_steps, args.pairs)
    elif args.part == "autoattack":
        ok = check_autoattack(device, args.paths[0], args.n, args.eps, args.batch)
    else:
        ok = compare_matrices(args.label, Path(args.paths[0]), Path(args.paths[1]), args.expect_equal)
    return 0 if ok is not False else 1


if __name__ == "__main__":
    raise SystemExit(main())
