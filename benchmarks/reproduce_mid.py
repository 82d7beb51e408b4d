#!/usr/bin/env python3
"""Reproduce MID on the embedded ``mnist5k`` data and write the table of ``docs/reproduce-mid.md``.

Two MID models (Zhang et al., "Meta Invariance Defense Towards Generalizable Robustness to Unknown Adversarial
Attacks", TPAMI 2024, arXiv:2404.03340) side by side:

1. the authors' released MNIST model, imported with ``midbench import mid-official`` from ``--release``;
2. a MID trained by midbench with the documented full settings (:data:`FULL_SETTINGS`; ``--quick`` shrinks
   them to a smoke test that only checks the script runs).

Each is evaluated under the white-box protocol (attacks differentiate through the MID classifier) and the
paper's transfer protocol (attacks crafted on the model's own source model), with its known attacks (the
Attacker Pool), the ``default-unknown`` suite and AutoAttack, on the first ``--n`` test images, worst case per
example. Clean accuracy of source model, teacher and MID is measured on all 1,000 test images. Run from the
repository root::

    python benchmarks/reproduce_mid.py --out runs/reproduce-mid --n 300

The released models were trained on MNIST's training set, from which the ``mnist5k`` images probably come;
their numbers on it are inflated (see ``../shared/mid-official/README.md``). The midbench-trained model never
sees the test split.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from midbench.config import TrainConfig
from midbench.data import load_split
from midbench.evaluation.runner import EvalConfig, load_classifier, run_evaluation
from midbench.evaluation.selection import AttackSelection
from midbench.fileio import atomic_write_text
from midbench.mid_official import import_mid_official
from midbench.training import train

#: the documented full settings of a midbench-trained MID on mnist5k (see docs/reproduce-mid.md)
FULL_SETTINGS = TrainConfig(method="mid", dataset="mnist5k", arch="lenet", epochs=10, batch_size=64, lr=1e-3,
                            source_epochs=10, teacher_epochs=10, attack_steps=10, refresh_every=5)
QUICK_SETTINGS = replace(FULL_SETTINGS, epochs=1, source_epochs=1, teacher_epochs=1, attack_steps=1,
                         n_train=256, first_order=True)
RELEASE_FILES = {"source": "MNIST_LeNet5.pkl", "teacher": "LeNet5_MNIST_AE.pkl",
                 "student": "encoder_adv_addclean_MNIST_cls_simi_cyc217.pkl"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/reproduce-mid"))
    parser.add_argument("--release", type=Path, default=root.parent / "shared" / "mid-official",
                        help="folder with the three released .pkl files")
    parser.add_argument("--n", type=int, default=500, help="test images attacked (clean accuracy uses all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny settings: checks the script, not MID")
    parser.add_argument("--markdown", type=Path, help="also write the table to this file")
    return parser.parse_args(argv)


def clean_accuracy(checkpoint: Path) -> float:
    """Accuracy on all mnist5k test images."""
    model = load_classifier(checkpoint).model.eval()
    split = load_split("mnist5k", "test")
    with torch.no_grad():
        predictions = torch.cat([model(x).argmax(1) for x in split.as_float().split(500)])
    return float((predictions == split.labels).float().mean())


def evaluate(checkpoint: Path, name: str, protocol: str, args: argparse.Namespace) -> dict:
    run = run_evaluation(EvalConfig(checkpoint=str(checkpoint), dataset="mnist5k", protocol=protocol,
                                    selection=AttackSelection(known=True, suite="default-unknown", autoattack=True),
                                    n_examples=args.n, results_dir=str(args.out / "results"), name=name,
                                    device=args.device))
    return run.result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    imported = import_mid_official(*(args.release / RELEASE_FILES[role] for role in ("source", "teacher", "student")),
                                   args.out / "released")
    settings = replace(QUICK_SETTINGS if args.quick else FULL_SETTINGS, device=args.device)
    trained_dir = args.out / "midbench"
    train(settings, trained_dir, resume=(trained_dir / "state.pt").exists(), progress=sys.stderr.isatty())
    models = {
        "released MID": {"mid": imported["mid"], "source": imported["source"], "teacher": imported["teacher"]},
        "midbench MID": {"mid": trained_dir / "model.safetensors",
                         "source": trained_dir / "source" / "model.safetensors",
                         "teacher": trained_dir / "teacher" / "model.safetensors"},
    }
    rows = []
    for label, files in models.items():
        clean = {role: clean_accuracy(path) for role, path in files.items()}
        for protocol in ("transfer", "whitebox"):
            result = evaluate(files["mid"], label.replace(" ", "-"), protocol, args)
            summary = result["summary"]
            rows.append({"model": label, "protocol": protocol, "n": result["data"]["n_examples"],
                         "clean_1000": clean["mid"], "source_clean_1000": clean["source"],
                         "teacher_clean_1000": clean["teacher"], "clean_n": result["clean_accuracy"],
                         "known_worst": summary["known_worst"], "unknown_worst": summary["unknown_worst"],
                         "unknown_mean": summary["unknown_mean"], "autoattack": summary["autoattack"]})
    table = render(rows, settings, args, time.perf_counter() - started)
    print(table)
    atomic_write_text(args.out / "reproduce-mid.json", json.dumps(rows, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, table)
    return 0


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def render(rows: list[dict], settings: TrainConfig, args: argparse.Namespace, seconds: float) -> str:
    lines = ["| model | protocol | clean (1,000) | clean (n) | known pool, worst | unknown suite, worst | "
             "unknown suite, mean | AutoAttack L∞ | source clean | teacher clean |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['model']} | {row['protocol']} | {_pct(row['clean_1000'])} | {_pct(row['clean_n'])} | "
                     f"{_pct(row['known_worst'])} | {_pct(row['unknown_worst'])} | {_pct(row['unknown_mean'])} | "
                     f"{_pct(row['autoattack'])} | {_pct(row['source_clean_1000'])} | "
                     f"{_pct(row['teacher_clean_1000'])} |")
    options = {k: v for k, v in settings.to_dict().items() if v != getattr(TrainConfig(), k)}
    lines += ["", f"Accuracies in %, n = {rows[0]['n']} test images attacked, worst case per example, ε = 0.3 (L∞ "
              f"attacks). midbench MID settings: {json.dumps(options)}. Total time {seconds / 60:.1f} min"
              f"{' (--quick: not a reproduction)' if args.quick else ''}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
