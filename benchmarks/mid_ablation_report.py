#!/usr/bin/env python3
"""The paired reading of a MID ablation sweep (``results/mnist5k-mid-ablation``): every variant against full MID
on the *same* test images, per protocol and transfer source.

For each result file of the sweep it takes, from the per-example matrix (``.npz``) beside it: clean accuracy;
the worst case per example over the known attacks (MID's Attacker Pool); the worst case over the paper's unknown
attacks that were run (every unknown registry attack but AutoAttack); AutoAttack; and the mean normalised area
of the unknown-attack profile's unseen threat models. Each variant's worst cases are compared with full MID's
(the run named ``--reference``) example by example: Δ is the difference in accuracy, and *p* the exact two-sided
McNemar test on the discordant examples (an example one model keeps and the other loses), which is what decides
whether a difference on one shared test set is more than chance. Run from the repository root::

    python benchmarks/mid_ablation_report.py results/mnist5k-mid-ablation --reference mid

and it prints markdown tables (one per protocol and source) for the folder's README. A sweep over training seeds
(``results/mnist5k-mid-ablation-seeds``, one ``seed-K`` folder per seed) is read with ``--seeds``: per protocol and
measure, each variant's gap to full MID of the same seed (Δ and McNemar p, seed by seed, then the mean and spread),
next to the gap between full MID of seed 0 and of each other seed on the same images — the size a difference
between two training runs of one recipe has anyway. ``--runs runs/sweep-NAME`` adds the relative size of MID's
inner step, ‖θ′ − θ‖ / ‖θ‖, per run and seed (the training logs' ``inner_step_relative``). With ``--rungs
mid-no-lc,standard`` it also prints, per protocol, every rung of the profile (threat model and strength) where
full MID and one of those runs differ at p < 0.05, with how many rungs were tested and whether the difference
survives Bonferroni's correction over them: the paired test behind the README's claims about the unseen threat
models and MID's white-box cost.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Row:
    """What one evaluation measured, per example where a paired test needs it."""

    run: str
    clean: np.ndarray
    pool_worst: np.ndarray | None
    unknown_worst: np.ndarray | None
    autoattack: np.ndarray | None
    profile_area: float | None
    #: per threat model of the profile: (strengths, N × strengths nested survival, seen)
    curves: dict[str, tuple[list[float], np.ndarray, bool]]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="the sweep's results folder (its result files are below it)")
    parser.add_argument("--reference", default="mid", help="the run every other is compared with")
    parser.add_argument("--seeds", action="store_true", help="RESULTS holds one seed-K folder per training seed")
    parser.add_argument("--runs", type=Path, default=None, help="with --seeds: the sweep's runs folder, for the "
                        "inner step's size per run and seed")
    parser.add_argument("--rungs", default="", help="comma-separated runs whose profile rungs are compared with "
                        "the reference one by one (paired McNemar tests)")
    return parser.parse_args(argv)


def mcnemar_p(reference: np.ndarray, other: np.ndarray) -> float:
    """Exact two-sided McNemar p-value: a binomial test with p = 1/2 on the discordant pairs."""
    b = int((reference & ~other).sum())
    c = int((other & ~reference).sum())
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def load_row(json_path: Path) -> tuple[str, str, Row]:
    """(protocol label, run name, measurements) of one result file."""
    document = json.loads(json_path.read_text(encoding="utf-8"))
    matrix = np.load(json_path.with_suffix(".npz"))
    robust, ids, splits = matrix["robust"].astype(bool), [str(a) for a in matrix["attacks"]], \
        [str(s) for s in matrix["splits"]]
    is_autoattack = [attack.startswith("autoattack") for attack in ids]
    known = [i for i, split in enumerate(splits) if split == "known"]
    unknown = [i for i, split in enumerate(splits) if split == "unknown" and not is_autoattack[i]]
    autoattack = [i for i, flag in enumerate(is_autoattack) if flag]
    protocol = document["protocol"]
    label = protocol["name"] if protocol["name"] == "whitebox" else f"transfer from {protocol['source']['name']}"
    profile = (document.get("profile") or {}).get("threat_models", [])
    areas = [tm["area"] for tm in profile if not tm["seen"] and tm.get("area") is not None]
    row = Row(run=document["checkpoint"]["name"], clean=matrix["clean"].astype(bool),
              pool_worst=robust[:, known].all(axis=1) if known else None,
              unknown_worst=robust[:, unknown].all(axis=1) if unknown else None,
              autoattack=robust[:, autoattack].all(axis=1) if autoattack else None,
              profile_area=sum(areas) / len(areas) if areas else None,
              curves={str(tm["id"]): ([float(x) for x in tm["strengths"]],
                                      matrix[f"profile_{tm['id']}"].astype(bool), bool(tm["seen"]))
                      for tm in profile})
    return label, row.run, row


def _pct(values: np.ndarray | None) -> str:
    return "—" if values is None else f"{100 * values.mean():.1f}"


def _paired(reference: np.ndarray | None, other: np.ndarray | None, same: bool) -> str:
    if reference is None or other is None or same:
        return ""
    delta = 100 * (other.mean() - reference.mean())
    return f" ({delta:+.1f}, p {mcnemar_p(reference, other):.2g})"


def load_tables(results: Path) -> dict[str, dict[str, Row]]:
    """Every result below ``results`` by protocol label and run name."""
    tables: dict[str, dict[str, Row]] = {}
    for json_path in sorted(results.rglob("*.json")):
        if not json_path.with_suffix(".npz").exists():
            continue
        label, run, row = load_row(json_path)
        tables.setdefault(label, {})[run] = row  # the newest file of a run wins (names sort by time)
    return tables


def render_rungs(results: Path, reference: str, others: list[str]) -> str:
    """Per protocol: the profile rungs where ``reference`` and each of ``others`` differ at p < 0.05."""
    lines = []
    for label, rows in sorted(load_tables(results).items(), key=lambda item: (item[0] != "whitebox", item[0])):
        base = rows.get(reference)
        if base is None:
            continue
        found, tested = [], 0
        for other in others:
            if other not in rows:
                continue
            for model, (strengths, survival, seen) in base.curves.items():
                if model not in rows[other].curves:
                    continue
                for k, strength in enumerate(strengths):
                    tested += 1
                    mine, theirs = survival[:, k], rows[other].curves[model][1][:, k]
                    p = mcnemar_p(mine, theirs)
                    if p < 0.05:
                        found.append((other, model, seen, strength, mine, theirs, p))
        lines += [f"### {label}: rungs where {reference} differs (p < 0.05 of {tested} tested)", "",
                  f"| run | threat model | strength | {reference} | run | p | Bonferroni ({tested}) |",
                  "|---|---|---:|---:|---:|---:|---|"]
        for other, model, seen, strength, mine, theirs, p in found:
            lines.append(f"| {other} | {model}{' (seen)' if seen else ''} | {strength:g} | {_pct(mine)} | "
                         f"{_pct(theirs)} | {p:.2g} | {'yes' if p * tested < 0.05 else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def render(results: Path, reference: str) -> str:
    tables = load_tables(results)
    lines = []
    for label in sorted(tables, key=lambda name: (name != "whitebox", name)):
        rows = tables[label]
        base = rows.get(reference)
        n = len(next(iter(rows.values())).clean)
        lines += [f"### {label} (n = {n})", "",
                  "| run | clean | pool worst (Δ, p) | paper unknown worst (Δ, p) | AutoAttack "
                  "| profile area, unseen |",
                  "|---|---|---|---|---|---|"]
        for run in sorted(rows, key=lambda name: (name != reference, name)):
            row, same = rows[run], run == reference
            lines.append(
                f"| {run} | {_pct(row.clean)} | {_pct(row.pool_worst)}"
                f"{_paired(base.pool_worst if base else None, row.pool_worst, same)} | {_pct(row.unknown_worst)}"
                f"{_paired(base.unknown_worst if base else None, row.unknown_worst, same)} | "
                f"{_pct(row.autoattack)} | "
                f"{'—' if row.profile_area is None else f'{100 * row.profile_area:.1f}'} |")
        lines.append("")
    return "\n".join(lines)


#: the measures the seeded tables compare: (heading, the Row field with the per-example values)
MEASURES = (("pool worst", "pool_worst"), ("paper unknown worst", "unknown_worst"), ("AutoAttack", "autoattack"))


def seed_folders(results: Path) -> dict[int, Path]:
    """The ``seed-K`` folders of a seeded sweep's results, by seed."""
    return {int(path.name[5:]): path for path in sorted(results.glob("seed-*"))
            if path.is_dir() and path.name[5:].isdigit()}


def render_seeds(results: Path, reference: str) -> str:
    """Per protocol and measure: each run's gap to ``reference`` of the same seed, seed by seed (Δ points, McNemar
    p on the shared images), its mean and standard deviation over seeds, and the reference's own seed-to-seed gap
    (seed k against seed 0) as the yardstick."""
    per_seed = {seed: load_tables(folder) for seed, folder in seed_folders(results).items()}
    if not per_seed:
        raise SystemExit(f"no seed-K folders under {results}")
    seeds = sorted(per_seed)
    labels = sorted({label for tables in per_seed.values() for label in tables},
                    key=lambda name: (name != "whitebox", name))
    lines = []
    for label in labels:
        runs = sorted({run for tables in per_seed.values() for run in tables.get(label, {})},
                      key=lambda name: (name != reference, name))
        for heading, field in MEASURES:
            lines += [f"### {label}: {heading}, gap to {reference} of the same seed", "",
                      "| run | " + " | ".join(f"seed {seed}: Δ (p)" for seed in seeds) + " | mean Δ ± sd |",
                      "|---|" + "---|" * (len(seeds) + 1)]
            for run in runs:
                cells, deltas = [], []
                for seed in seeds:
                    rows = per_seed[seed].get(label, {})
                    base, row = rows.get(reference), rows.get(run)
                    mine = getattr(row, field) if row is not None else None
                    theirs = getattr(base, field) if base is not None else None
                    if mine is None:
                        cells.append("—")
                    elif run == reference or theirs is None:
                        cells.append(_pct(mine))
                    else:
                        delta = 100 * (mine.mean() - theirs.mean())
                        deltas.append(delta)
                        cells.append(f"{_pct(mine)} ({delta:+.1f}, p {mcnemar_p(theirs, mine):.2g})")
                spread = (f"{np.mean(deltas):+.1f} ± {np.std(deltas, ddof=1):.1f}" if len(deltas) > 1 else
                          f"{deltas[0]:+.1f}" if deltas else "")
                lines.append(f"| {run} | " + " | ".join(cells) + f" | {spread} |")
            gaps = []
            first = per_seed[seeds[0]].get(label, {}).get(reference)
            for seed in seeds[1:]:
                other = per_seed[seed].get(label, {}).get(reference)
                if first is not None and other is not None and getattr(first, field) is not None \
                        and getattr(other, field) is not None:
                    a, b = getattr(first, field), getattr(other, field)
                    gaps.append(f"seed {seed} − seed {seeds[0]}: {100 * (b.mean() - a.mean()):+.1f} "
                                f"(p {mcnemar_p(a, b):.2g})")
            if gaps:
                lines += ["", f"{reference} against itself, another training seed on the same images: "
                          + "; ".join(gaps) + "."]
            lines.append("")
    return "\n".join(lines)


def render_inner_steps(runs: Path) -> str:
    """The mean relative inner step ‖θ′ − θ‖ / ‖θ‖ over each MID run's epochs, per seed (training logs)."""
    found: dict[str, dict[int, float]] = {}
    for seed, folder in seed_folders(runs).items():
        for log in sorted(folder.glob("*/log.jsonl")):
            values = [record["inner_step_relative"] for record in map(json.loads, log.read_text().splitlines())
                      if record.get("inner_step_relative") is not None]
            if values:
                found.setdefault(log.parent.name, {})[seed] = float(np.mean(values))
    seeds = sorted({seed for by_seed in found.values() for seed in by_seed})
    lines = ["### The inner step's size, mean over epochs of ‖θ′ − θ‖ / ‖θ‖", "",
             "| run | " + " | ".join(f"seed {seed}" for seed in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for run in sorted(found):
        lines.append(f"| {run} | " + " | ".join(f"{found[run][seed]:.2e}" if seed in found[run] else "—"
                                               for seed in seeds) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.seeds:
        print(render_seeds(args.results, args.reference))
        if args.runs is not None:
            print(render_inner_steps(args.runs))
        return 0
    print(render(args.results, args.reference))
    others = [name.strip() for name in args.rungs.split(",") if name.strip()]
    if others:
        print(render_rungs(args.results, args.reference, others))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
