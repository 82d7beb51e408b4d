#!/usr/bin/env python3
"""Are the profile's attacks saturated, and what do they cost against AutoAttack? (docs/scoring.md)

On one checkpoint and the first ``--n`` test images, at the ladders the evaluation would use (calibrated where a
reference set gives them):

1. **Saturation.** The profile is climbed as shipped, then again with every attack's budget of effort doubled
   (``steps``, ``restarts``, ``samples`` × 2; the rotation/translation grid twice as dense) under two different
   seeds (two more random restarts). Per rung, the accuracy of the shipped climb minus the worst case over all
   three is what more effort would still remove: the goal is at most 1 point everywhere.
2. **AutoAttack.** AutoAttack standard at the L∞ ε of the top rung of the ``linf`` ladder against the climb's
   accuracy there (goal: the climb within 1 point of AutoAttack, or below it), and the passes (forward +
   backward, counted exactly) of the whole shipped profile against those of AutoAttack at the dataset's ε on the
   same model (goal ≤ 1.5×).

Run from the repository root, e.g. on the L∞ reference of the shipped set::

    python benchmarks/bench_saturation.py runs/references-mnist5k-lenet/linf/model.safetensors --n 300

``--suite unforeseen-ua --no-autoattack`` checks the optimised corruptions of docs/unforeseen.md the same way.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from midbench.artifacts.loading import load_classifier
from midbench.attacks.plans import PROFILE_SUITE, ProfileRung, ThreatModelPlan, profile_plan, seen_threat_models
from midbench.attacks.specs import ResolvedAttack, load_registry
from midbench.data.datasets import get_dataset, load_split
from midbench.evaluation.attacking import AttackRunner, predict
from midbench.evaluation.profile import climb
from midbench.protocols import AUTOATTACK_ENTRY

#: parameters that measure an attack's effort, doubled for the saturation check
EFFORT = ("steps", "restarts", "samples")


def doubled(attack: ResolvedAttack) -> ResolvedAttack:
    """``attack`` with twice the effort: more steps, restarts and samples; a grid search twice as dense."""
    params = dict(attack.params)
    for name in EFFORT:
        if isinstance(params.get(name), int):
            params[name] = 2 * params[name]
    for name in ("angle_steps", "shift_steps"):
        if isinstance(params.get(name), int):
            params[name] = 2 * params[name] - 1  # keeps every point of the shipped grid
    return replace(attack, params=params, version=0)


def harder(plans: list[ThreatModelPlan]) -> list[ThreatModelPlan]:
    return [replace(plan, rungs=tuple(ProfileRung(rung.strength, tuple(doubled(a) for a in rung.attacks),
                                                  rung.budgets) for rung in plan.rungs)) for plan in plans]


def overridden(plans: list[ThreatModelPlan], settings: list[str]) -> list[ThreatModelPlan]:
    """``plans`` with ``ATTACK.PARAM=VALUE`` overrides (an int, a float, or a comma-separated list of strings):
    to try a stronger configuration of a profile attack before changing its registry entry."""
    changes: dict[str, dict[str, object]] = {}
    for setting in settings:
        target, _, text = setting.partition("=")
        attack_id, _, name = target.rpartition(".")
        value: object = text.split(",") if "," in text else text
        for kind in (int, float):
            try:
                value = kind(text)
                break
            except ValueError:
                continue
        changes.setdefault(attack_id, {})[name] = value

    def changed(attack: ResolvedAttack) -> ResolvedAttack:
        extra = changes.get(attack.id)
        return replace(attack, params={**attack.params, **extra}, version=0) if extra else attack

    return [replace(plan, rungs=tuple(ProfileRung(rung.strength, tuple(changed(a) for a in rung.attacks),
                                                  rung.budgets) for rung in plan.rungs)) for plan in plans]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--n", type=int, default=300, help="test images")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-autoattack", action="store_true", help="skip part 2")
    parser.add_argument("--no-saturation", action="store_true",
                        help="skip the doubled climbs of part 1 (the shipped climb still runs, for part 2)")
    parser.add_argument("--threat-models", default="", help="climb only these (comma-separated ids; part 2 then "
                                                           "needs linf among them)")
    parser.add_argument("--suite", default=PROFILE_SUITE,
                        help="climb this suite's threat models (default the profile's; e.g. unforeseen-ua)")
    parser.add_argument("--set", action="append", default=[], metavar="ATTACK.PARAM=VALUE",
                        help="override a profile attack's parameter before anything runs (e.g. "
                             "jpeg-linf.restarts=4, elastic.losses=ce,margin); repeatable")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    loaded = load_classifier(args.checkpoint)
    model = loaded.model.eval()
    dataset = str(loaded.metadata.dataset)
    eps = get_dataset(dataset).eps
    data = load_split(dataset, "test").subset(torch.arange(args.n))
    images, labels = data.as_float(), data.labels.clone()
    clean = (predict(model, images, 256) == labels).numpy()
    registry = load_registry()
    train_attacks = [ResolvedAttack.from_dict(item) for item in loaded.metadata.train_attacks]
    only = tuple(name.strip() for name in args.threat_models.split(",") if name.strip())
    plans = profile_plan(registry, eps, seen_threat_models(train_attacks, registry), suite=args.suite,
                         dataset=dataset, only=only, channels=int(images.shape[1]))
    plans = overridden(plans, args.set)

    def runner(seed: int) -> AttackRunner:
        return AttackRunner(model, model, images, labels, device=torch.device("cpu"), protocol="whitebox",
                            batch_size=256, seed=seed, progress=None, state=None)

    print(f"{loaded.metadata.name} ({loaded.metadata.method}), n={args.n}, clean {100 * clean.mean():.1f}%, "
          f"threads={args.threads}", flush=True)
    # without the doubled climbs there is nothing to compare: print the shipped curves only
    doubled_header = "" if args.no_saturation else f" {'doubled x2 seeds %':<30} max Δ (points)"
    print(f"{'threat model':<12} {'strengths':<24} {'shipped %':<30}{doubled_header}", flush=True)
    # one threat model at a time, its row printed as soon as it is measured (a climb's randomness is per example
    # and per threat model, so climbing them one by one gives the numbers of climbing them together)
    shipped, worst_gap, profile_passes, shipped_seconds = {}, 0.0, 0, 0.0
    for plan in plans:
        started = time.perf_counter()
        (curve,) = climb(runner(0), [plan], clean)
        shipped_seconds += time.perf_counter() - started
        model_id = plan.threat_model.id
        shipped[model_id] = curve
        union = curve.robust.copy()
        for seed in () if args.no_saturation else (1, 2):
            (other,) = climb(runner(seed), harder([plan]), clean)
            union &= other.robust
        gap = 100 * (curve.robust.mean(axis=0) - union.mean(axis=0))
        worst_gap = max(worst_gap, float(gap.max()))
        profile_passes += curve.forward_passes + curve.backward_passes
        strengths = " ".join(f"{rung.strength:g}" for rung in curve.plan.rungs)
        doubled = "" if args.no_saturation else \
            f" {' '.join(f'{100 * a:.1f}' for a in union.mean(axis=0)):<30} {gap.max():.1f}"
        print(f"{model_id:<12} {strengths:<24} {' '.join(f'{100 * a:.1f}' for a in curve.robust.mean(axis=0)):<30}"
              f"{doubled}", flush=True)
    print(f"shipped profile: {shipped_seconds:.0f} s, {profile_passes:,} passes")
    if not args.no_saturation:
        print(f"saturation: the largest rung change with doubled effort and two more restarts is {worst_gap:.1f} "
              f"points (goal ≤ 1)")
    if args.no_autoattack:
        return 0
    linf = shipped.get("linf")
    autoattack = registry.get(AUTOATTACK_ENTRY)
    if linf is not None:
        top = linf.plan.rungs[-1]
        attack = autoattack.resolve(eps, eps_override=top.attacks[0].eps)
        outcome = runner(0).run(attack, "unknown", clean)
        climb_top, aa_top = 100 * linf.robust[:, -1].mean(), 100 * outcome.robust.mean()
        print(f"linf top rung (ε {top.attacks[0].eps:g}): climb {climb_top:.1f}%, AutoAttack {aa_top:.1f}%, "
              f"climb − AutoAttack {climb_top - aa_top:+.1f} points (goal ≤ +1)")
    full = runner(0).run(autoattack.resolve(eps), "unknown", clean)
    aa_passes = full.forward_passes + full.backward_passes
    print(f"passes: profile {profile_passes:,}, AutoAttack at ε {autoattack.resolve(eps).eps:g} {aa_passes:,}, "
          f"ratio {profile_passes / max(aa_passes, 1):.2f} (goal ≤ 1.5); AutoAttack {100 * full.robust.mean():.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
