#!/usr/bin/env python3
"""The transfer cache (midbench.evaluation.transfer_cache): a sweep's transfer evaluations with and without it.

Evaluates ``--models`` LeNets, one after the other as a serial sweep does, under the transfer protocol from one
source, with the attack selection and example count of the MID ablation's sweep file
(``results/mnist5k-mid-ablation/sweep.toml``: known attacks, the paper's unknown attacks but C&W and JSMA,
AutoAttack and the unknown-attack profile, 120 test images). With ``--cache`` every run starts from an empty
cache, so the first model crafts and the others reuse; ``--no-cache`` crafts for every model. ``--check``
compares the per-example arrays of a cached and an uncached run of the same models, file by file.

Time the two with the interleaved A/B timer (``$ABBENCH``, docs/performance.md), from the repository root::

    python benchmarks/bench_transfer_cache.py runs/bench-transfer-cache --prepare
    python "$ABBENCH" -n 3 \\
        -a "python benchmarks/bench_transfer_cache.py runs/bench-transfer-cache --cache" \\
        -b "python benchmarks/bench_transfer_cache.py runs/bench-transfer-cache --no-cache"
    python benchmarks/bench_transfer_cache.py runs/bench-transfer-cache --check
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

SWEEP = Path(__file__).resolve().parents[1] / "results" / "mnist5k-mid-ablation" / "sweep.toml"
#: the source (seed 0) and the evaluated models (seeds 1, 2, ...): standard LeNets, 2 epochs each
SOURCE = "source"


def prepare(folder: Path, models: int) -> None:
    """Train the source and the evaluated models (skipped where already trained)."""
    from midbench.config import TrainConfig
    from midbench.paths import MODEL_FILE
    from midbench.training import train

    for index, name in enumerate([SOURCE, *(f"model-{i}" for i in range(1, models + 1))]):
        if (folder / name / MODEL_FILE).is_file():
            continue
        config = TrainConfig.of(method="standard", arch="lenet", epochs=2, batch_size=64, seed=index, device="cpu")
        train(config, folder / name, progress=False)


def evaluate_all(folder: Path, models: int, cache: bool, results: Path, n: int | None = None) -> list[Path]:
    """Each model under transfer from the source; the result files, in order."""
    from midbench.bench.sweep_file import load_sweep
    from midbench.evaluation.eval_config import EvalConfig
    from midbench.evaluation.runner import run_evaluation
    from midbench.paths import MODEL_FILE

    sweep = load_sweep(SWEEP)
    paths = []
    for index in range(1, models + 1):
        config = EvalConfig(checkpoint=str(folder / f"model-{index}" / MODEL_FILE), selection=sweep.selection,
                            protocol="transfer", source=str(folder / SOURCE / MODEL_FILE),
                            n_examples=n or sweep.n_examples, batch_size=sweep.eval_batch_size,
                            results_dir=str(results), name=f"model-{index}", seed=sweep.seed, device="cpu",
                            transfer_cache=cache)
        evaluated = run_evaluation(config)
        assert evaluated.path is not None
        paths.append(evaluated.path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where the source and the models are trained")
    parser.add_argument("--models", type=int, default=4, help="evaluated models")
    parser.add_argument("--n", type=int, default=None, help="test images (default: the sweep file's, 120)")
    parser.add_argument("--prepare", action="store_true", help="train the models and exit")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--cache", dest="cache", action="store_true", default=True)
    mode.add_argument("--no-cache", dest="cache", action="store_false")
    parser.add_argument("--check", action="store_true", help="compare a cached and an uncached run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.prepare:
        prepare(args.folder, args.models)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        if not args.check:
            evaluate_all(args.folder, args.models, args.cache, Path(scratch), args.n)
            return 0
        cached = evaluate_all(args.folder, args.models, True, Path(scratch) / "cached", args.n)
        plain = evaluate_all(args.folder, args.models, False, Path(scratch) / "plain", args.n)
        differing = 0
        for a, b in zip(cached, plain, strict=True):
            with np.load(a.with_suffix(".npz")) as left, np.load(b.with_suffix(".npz")) as right:
                keys = [key for key in left.files if not key.startswith("examples_")]
                equal = keys == [key for key in right.files if not key.startswith("examples_")] and all(
                    np.array_equal(left[key], right[key]) for key in keys)
            differing += not equal
            print(f"{a.stem}: {'identical' if equal else 'DIFFERENT'} per-example arrays ({len(keys)} arrays)")
        return 1 if differing else 0


if __name__ == "__main__":
    sys.exit(main())
