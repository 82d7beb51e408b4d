"""Helpers for tests of reference-normalised scores: synthetic profiled result files and reference sets."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from midbench.attacks.plans import profile_plan
from midbench.attacks.specs import load_registry
from midbench.data.datasets import get_dataset
from midbench.evaluation.engine import Evaluation
from midbench.evaluation.profile import ThreatModelCurve
from midbench.evaluation.references import SCHEMA
from midbench.evaluation.results import build_result, indices_sha256, make_run_id, write_result

REGISTRY = load_registry()
MNIST_EPS = get_dataset("mnist5k").eps


def default_plans(seen: set[str]) -> dict[str, object]:
    """The profile's plans at the registry's default ladders (no dataset: no calibrated ladder), the corruptions'
    suite included."""
    return {plan.threat_model.id: plan for plan in profile_plan(REGISTRY, MNIST_EPS, seen,
                                                                suite=("unknown-profile", "unknown-profile-ua"))}


def write_profiled_run(results: Path, name: str, accuracies: dict[str, list[float]], seen: set[str], minutes: int,
                       n: int = 10, method: str | None = None, arch: str = "lenet", dataset: str = "mnist5k") -> None:
    """A white-box result whose profile has the given accuracies per threat model (example i survives strength k
    when i < round(n · accuracy)), at the default ladders."""
    plans = default_plans(seen)
    curves = []
    for model_id, accuracy in accuracies.items():
        robust = np.array([[i < round(n * a) for a in accuracy] for i in range(n)], dtype=bool)
        curves.append(ThreatModelCurve(plans[model_id], robust, 1.0, n, n))
    evaluation = Evaluation(np.ones(n, dtype=bool), [], "whitebox", curves)
    created = datetime(2026, 11, 30, tzinfo=timezone.utc) + timedelta(minutes=minutes)
    indices = np.arange(n)
    result = build_result(
        evaluation, run_id=make_run_id(name, "whitebox", created), created=created,
        checkpoint={"path": f"{name}.safetensors", "sha256": name.ljust(64, "0"), "name": name,
                    "method": method or name.rpartition("-")[0], "arch": arch, "dataset": dataset,
                    "train_attacks": []},
        data={"dataset": dataset, "split": "test", "n_examples": n, "indices_sha256": indices_sha256(indices),
              "eps": dict(MNIST_EPS)},
        protocol={"name": "whitebox", "source": None}, seed=0, device="cpu")
    write_result(result, evaluation, results, indices)


def write_reference_set(folder: Path, ata: dict[str, list[float]], datasets: tuple[str, ...] = ("mnist5k",),
                        archs: tuple[str, ...] = ("lenet",), strengths: dict[str, list[float]] | None = None,
                        attacks: dict[str, list[str]] | None = None) -> Path:
    """A reference set whose curves sit at the default ladders with the profile's attacks (unless overridden)."""
    plans = default_plans(set())
    curves = {}
    for model, values in ata.items():
        plan = plans[model]
        curves[model] = {
            "strengths": (strengths or {}).get(model, [rung.strength for rung in plan.rungs]),
            "attacks": (attacks or {}).get(model, [attack.key for attack in plan.rungs[0].attacks]),
            "ata": values, "clean_accuracy": 1.0, "budgets": [], "models": []}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reference.json").write_text(json.dumps({
        "schema": SCHEMA, "name": folder.name, "dataset": datasets[0], "datasets": list(datasets),
        "arch_family": archs[0], "archs": list(archs), "made_by": "test", "n_examples": 10, "targets": [],
        "threat_models": curves}), encoding="utf-8")
    return folder
