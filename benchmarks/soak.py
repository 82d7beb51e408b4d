#!/usr/bin/env python3
"""Kill-and-resume soak (docs/reliability.md, "Soak"): ``midbench train``, ``eval`` (known attacks, AutoAttack and
the unknown-attack profile) and ``bench`` are killed with SIGKILL at random moments and rerun, the same command each
time, until they finish; each final result must equal the uninterrupted run's, bit for bit.

For each workload: one uninterrupted run (its wall time T), then a run in a fresh folder that is killed after a delay
drawn uniformly from (start-up, 1.1 T) — over set-up, any epoch or attack, and the final writes; the interpreter's
start and imports, where a kill can lose nothing, are left out — and rerun, for ``--kills`` kills; the last rerun
is left to finish. A rerun that exits with anything but 0 (a refused resume, a
stale lock, a corrupt state) fails the soak. The delays come from ``random.Random(--seed)``, so a soak is repeatable
in where its kills are aimed (where they land also depends on the machine's speed).

Compared at the end:
- train: every tensor of the final model, and the training log's metrics (timings aside);
- eval: every array of the per-example ``.npz`` (matrix, clean mask, the profile's curves), and that exactly one
  result was written;
- bench: the leaderboard's bytes, and every array of every result's ``.npz``.

From the repository root (one thread per process, nothing else running)::

    python benchmarks/soak.py --kills 17 --seed 0 --out runs/soak          # 51 kills, the documented run
    python benchmarks/soak.py --kills 1 --seed 0 --out /tmp/soak --quick  # what CI runs (tests/test_soak.py)

Prints a table and writes ``summary.json`` in ``--out``; exit 0 only if every final result matched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

SWEEP = """
[sweep]
name = "soak"
dataset = "mnist5k"
seed = 0
device = "cpu"
threads = 1
protocols = ["whitebox", "transfer"]
transfer_source = "standard"

[eval]
n_examples = {n}
attacks = ["fgsm-linf", "pgd-linf"]

[train]
arch = "test-cnn"
batch_size = 32
n_train = {n_train}
val_size = 0

[runs.standard]
epochs = {epochs}

[runs.pgd-at]
epochs = {epochs}
attack_steps = 2
"""


@dataclass
class Workload:
    name: str
    command: list[str]  # midbench's arguments; {out} is the run's folder
    compare: Callable[[Path, Path], list[str]]  # (reference, soaked) -> what differs


@dataclass
class Outcome:
    workload: str
    reference_s: float
    kills: int = 0
    attempts: int = 0
    soaked_s: float = 0.0
    #: runs to a finished result (a run that finishes before its kill ends one; the next starts in an empty folder)
    campaigns: int = 0
    #: each kill's moment as a share of the uninterrupted run's wall time
    landed: list[float] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def midbench(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "midbench", *args]


def environment() -> dict[str, str]:
    # one thread: float sums in the same order in every run, so "bit for bit" is a fair demand
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def run_to_end(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=environment(), capture_output=True, text=True, check=False)


def attempt(command: list[str], delay: float) -> tuple[int | None, str]:
    """Run ``command`` and SIGKILL its whole process group after ``delay`` seconds. (exit code or None if killed,
    output)."""
    process = subprocess.Popen(command, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=delay)
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return None, output


def soak(workload: Workload, folder: Path, kills: int, rng: random.Random, startup_s: float) -> Outcome:
    """Kill runs of ``workload`` until ``kills`` kills have landed. A run that finishes before its kill ends a
    campaign: its result is compared with the uninterrupted run's, and the next campaign starts in an empty folder.
    The last campaign's final run is left to finish. Kills are drawn after ``startup_s`` (the interpreter's start
    and midbench's imports, where a kill can lose nothing) and up to 1.1 times the uninterrupted run's time."""
    reference, soaked = folder / "reference", folder / "soaked"
    shutil.rmtree(reference, ignore_errors=True)
    started = time.perf_counter()
    done = run_to_end(midbench([part.format(out=reference) for part in workload.command]))
    outcome = Outcome(workload.name, time.perf_counter() - started)
    if done.returncode != 0:
        outcome.failures.append(f"the uninterrupted run failed: {done.stdout[-500:]}{done.stderr[-500:]}")
        return outcome
    command = midbench([part.format(out=soaked) for part in workload.command])
    while outcome.kills < kills:
        shutil.rmtree(soaked, ignore_errors=True)
        started = time.perf_counter()
        while True:
            outcome.attempts += 1
            delay = rng.uniform(startup_s, 1.1 * outcome.reference_s) if outcome.kills < kills else 24 * 3600.0
            code, output = attempt(command, delay)
            if code is None:
                outcome.kills += 1
                outcome.landed.append(delay / outcome.reference_s)
                continue
            if code != 0:
                outcome.failures.append(f"a rerun exited {code} after {outcome.kills} kills: {output.strip()[-500:]}")
                return outcome
            break
        outcome.campaigns += 1
        outcome.soaked_s += time.perf_counter() - started
        outcome.differences += workload.compare(reference, soaked)
    return outcome


def time_lost(outcome: Outcome) -> float:
    """Wall time the kills cost: the campaigns' time less that of as many uninterrupted runs."""
    return outcome.soaked_s - outcome.campaigns * outcome.reference_s


# ---- comparisons ------------------------------------------------------------------------------------------------

def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def _same_arrays(label: str, first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> list[str]:
    if first.keys() != second.keys():
        return [f"{label}: arrays {sorted(first)} against {sorted(second)}"]
    return [f"{label}: {key} differs" for key in first if not np.array_equal(first[key], second[key])]


def compare_training(reference: Path, soaked: Path) -> list[str]:
    from safetensors.numpy import load_file

    differences = _same_arrays("model", load_file(reference / "model.safetensors"),
                               load_file(soaked / "model.safetensors"))

    def metrics(folder: Path) -> list[dict[str, object]]:
        records = [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]
        return [{key: value for key, value in record.items() if key != "seconds"}
                for record in records]

    if metrics(reference) != metrics(soaked):
        differences.append("the training logs' metrics differ")
    return differences


def _results(folder: Path) -> dict[str, list[Path]]:
    """Each result's ``.npz`` by model name and protocol (a run id is ``NAME__PROTOCOL__TIME-HASH``). One model may
    have two: a run killed after writing its result but before it ended is rerun, and evaluates again (``eval``
    always writes a new run; the leaderboard keeps the newest). Both must then equal the uninterrupted run's."""
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.rglob("runs/*/*__*.npz")):
        found.setdefault(path.stem.rsplit("__", 1)[0], []).append(path)
    return found


def compare_results(reference: Path, soaked: Path) -> list[str]:
    first, second = _results(reference), _results(soaked)
    if sorted(first) != sorted(second) or sum(map(len, second.values())) != len(list(soaked.rglob("runs/*/*.json"))):
        return [f"results {sorted(first)} against {sorted(second)} (or a matrix without its JSON)"]
    return [difference for key, paths in second.items() for path in paths
            for difference in _same_arrays(path.name, _arrays(first[key][0]), _arrays(path))]


def compare_sweep(reference: Path, soaked: Path) -> list[str]:
    differences = compare_results(reference, soaked)
    boards = sorted((reference / "results").glob("leaderboard*.md"))
    if not boards or any((soaked / "results" / board.name).read_bytes() != board.read_bytes() for board in boards):
        differences.append("the leaderboards differ")
    return differences


# ---- the workloads ----------------------------------------------------------------------------------------------

def workloads(folder: Path, quick: bool) -> list[Workload]:
    n, n_train, epochs = (16, 512, 2) if quick else (64, 4096, 4)
    config = folder / "sweep.toml"
    config.write_text(SWEEP.format(n=n, n_train=n_train, epochs=epochs), encoding="utf-8")
    model = folder / "model"
    if not (model / "model.safetensors").exists():
        trained = run_to_end(midbench(["train", "--arch", "test-cnn", "--method", "pgd-at", "--epochs", "2",
                                       "--attack-steps", "2", "--n-train", str(n_train), "--val-size", "0",
                                       "--batch-size", "32", "--device", "cpu", "--quiet", "--out", str(model)]))
        if trained.returncode != 0:
            raise SystemExit(f"training the evaluated model failed:\n{trained.stdout}{trained.stderr}")
    profile = ["--unknown-attacks", "--threat-models", "linf,flow" if quick else "linf,flow,jpeg"]
    return [
        Workload("train", ["train", "--arch", "test-cnn", "--method", "pgd-at", "--epochs", str(epochs),
                           "--attack-steps", "2", "--n-train", str(n_train), "--val-size", "16", "--batch-size",
                           "32", "--device", "cpu", "--seed", "0", "--quiet", "--resume", "--out", "{out}"],
                 compare_training),
        Workload("eval", ["eval", str(model / "model.safetensors"), "--name", "soak", "--attacks",
                          "fgsm-linf,pgd-linf", "--autoattack", *profile, "--n-examples", str(n), "--batch-size",
                          str(n // 2), "--device", "cpu", "--seed", "0", "--quiet", "--results-dir", "{out}"],
                 compare_results),
        Workload("bench", ["bench", "--config", str(config), "--out", "{out}", "--quiet"], compare_sweep),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="kills per workload")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="tiny settings (CI)")
    parser.add_argument("--only", choices=["train", "eval", "bench"], action="append")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    started = time.perf_counter()
    run_to_end([sys.executable, "-c", "import torch, midbench.cli.app"])
    startup_s = time.perf_counter() - started
    print(f"start-up (interpreter and imports): {startup_s:.1f} s; kills are drawn after it", flush=True)
    outcomes = []
    for workload in workloads(args.out, args.quick):
        if args.only and workload.name not in args.only:
            continue
        outcome = soak(workload, args.out / workload.name, args.kills, rng, startup_s)
        outcomes.append(outcome)
        quarters = np.histogram(np.clip(outcome.landed, 0, 1.0999), bins=[0, 0.25, 0.5, 0.75, 1.0, 1.1])[0]
        print(f"{workload.name:6} uninterrupted {outcome.reference_s:6.1f} s | {outcome.kills} kills "
              f"(by share of T: {' / '.join(str(int(q)) for q in quarters)} in 0-¼-½-¾-1-1.1) | "
              f"{outcome.attempts} runs in {outcome.campaigns} campaigns, lost {time_lost(outcome):6.1f} s | "
              f"{'EQUAL' if not outcome.differences and not outcome.failures else 'DIFFERENT'}", flush=True)
        for problem in outcome.failures + outcome.differences:
            print(f"    {problem}", flush=True)
    (args.out / "summary.json").write_text(json.dumps({"seed": args.seed, "kills_per_workload": args.kills,
                                                      "startup_s": startup_s,
                                                      "quick": args.quick,
                                                      "outcomes": [{**asdict(o), "lost_s": time_lost(o)}
                                                                   for o in outcomes]}, indent=2))
    return 0 if all(not o.differences and not o.failures for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
