"""``midbench demo``: the whole path on the embedded ``mnist5k`` data in a few minutes on a laptop CPU.

Trains a standard and a PGD-AT LeNet, evaluates both against their known attacks, the unknown suite and
AutoAttack on the first test images, and writes the leaderboard. Every number is a real attack on real data;
the settings are small so it runs in minutes, which the printed table says (n, ε).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from midbench.config import TrainConfig
from midbench.evaluation.runner import EvalConfig, run_evaluation
from midbench.evaluation.selection import AttackSelection
from midbench.fileio import atomic_write_text, ensure_writable_dir
from midbench.leaderboard import render
from midbench.training import train
from midbench.training.loop import STATE_FILE


@dataclass(frozen=True)
class DemoSettings:
    """The demo's budget; the defaults finish in a few minutes on 2 CPU cores."""

    standard_epochs: int = 3
    pgd_at_epochs: int = 6
    attack_steps: int = 10
    batch_size: int = 64
    n_examples: int = 200
    device: str = "auto"
    seed: int = 0


DEMO_METHODS = ("standard", "pgd-at")


def run_demo(out_dir: str | Path, settings: DemoSettings = DemoSettings(),  # noqa: B008 - frozen dataclass
             say: Callable[[str], None] = print, progress: bool = True) -> str:
    """Train, evaluate and rank; returns the markdown leaderboard (also written to ``out_dir``).

    Rerunning reuses finished training runs (it resumes them) and replaces the older results.
    """
    out = ensure_writable_dir(out_dir)
    results_dir = out / "results"
    base = TrainConfig(dataset="mnist5k", arch="lenet", batch_size=settings.batch_size, device=settings.device,
                       seed=settings.seed)
    configs = {
        "standard": replace(base, method="standard", epochs=settings.standard_epochs),
        "pgd-at": replace(base, method="pgd-at", epochs=settings.pgd_at_epochs, attack_steps=settings.attack_steps),
    }
    for method, config in configs.items():
        run_dir = out / method
        say(f"[demo] training {method} (lenet, mnist5k, {config.epochs} epochs) -> {run_dir}")
        result = train(config, run_dir, resume=(run_dir / STATE_FILE).exists(), progress=progress)
        last = result.log[-1]
        say(f"[demo]   held-out clean {last['val_clean_acc']:.3f}, PGD-{config.val_pgd_steps} "
            f"{last[f'val_pgd{config.val_pgd_steps}_acc']:.3f}")
        say(f"[demo] evaluating {method}: known + unknown attacks + AutoAttack on {settings.n_examples} test images")
        run = run_evaluation(EvalConfig(
            checkpoint=str(result.checkpoint), selection=AttackSelection(known=True, unknown=True, autoattack=True),
            n_examples=settings.n_examples, results_dir=str(results_dir), seed=settings.seed, device=settings.device,
            name=f"{method}-lenet"))
        say(f"[demo]   result: {run.path}")
    board = render(results_dir, "markdown")
    atomic_write_text(out / "leaderboard.md", board)
    atomic_write_text(out / "leaderboard.csv", render(results_dir, "csv"))
    return board
