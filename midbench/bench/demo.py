"""``midbench demo``: the whole path on the embedded ``mnist5k`` data: about 17 minutes on 2 CPU
cores (docs/performance.md, P10).

Trains a standard LeNet, a PGD-AT LeNet and a MID LeNet (whose source model is the standard one, and whose
teacher autoencoder it trains), evaluates all three against their known attacks, the unknown-attack profile and
AutoAttack on the first test images — white-box, and for MID also under the paper's transfer protocol — and
writes the leaderboard. Every number is a real attack on real data; the settings are small so it runs in
minutes, which the printed table says (n, ε).

With ``workers = 2`` (the default) the steps run in two processes of one torch thread each, an evaluation beside
the next training: the trainings follow one another (MID's source is the standard model) and each evaluation
starts as soon as its model is trained. Every step is seeded, so the numbers do not depend on which process ran
it (docs/performance.md, P10).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from midbench.config import TrainConfig
from midbench.evaluation.eval_config import EvalConfig
from midbench.evaluation.runner import run_evaluation
from midbench.evaluation.selection import AttackSelection
from midbench.fileio import atomic_write_text, ensure_writable_dir
from midbench.paths import MODEL_FILE, TRAIN_STATE_FILE
from midbench.reporting.html import REPORT_FILE, write_report
from midbench.reporting.leaderboard import render
from midbench.runtime.processes import process_pool
from midbench.training import train


@dataclass(frozen=True)
class DemoSettings:
    """The demo's budget; the defaults take about 17 minutes on 2 CPU cores (docs/performance.md, P10)."""

    standard_epochs: int = 3
    pgd_at_epochs: int = 6
    #: PGD-AT's ε warm-up (docs/baselines.md, "ε warm-up"): at 0.3 from the first step a LeNet stays near chance
    #: for the first epochs, which the demo's few epochs cannot afford
    pgd_at_eps_warmup: int = 3
    attack_steps: int = 10
    #: MID: teacher epochs, student epochs and pool steps. The student starts from the teacher's encoder
    #: (``--student-init teacher``) and takes first-order meta-gradients, which is what fits the demo's budget;
    #: the paper's setting (random init, second order) is ``midbench train --method mid``'s default.
    mid_teacher_epochs: int = 3
    mid_epochs: int = 3
    mid_pool_steps: int = 5
    batch_size: int = 64
    #: training images of every run (None = all 3,800 of mnist5k's training split after the held-out slice)
    n_train: int | None = None
    #: held-out images for the per-epoch clean/PGD accuracy of every run
    val_size: int = 200
    n_examples: int = 100
    device: str = "auto"
    seed: int = 0
    #: processes the steps run in (one torch thread each); 1 runs every step here, one after the other
    workers: int = 2

    @classmethod
    def quick(cls, device: str = "auto") -> DemoSettings:
        """``midbench demo --quick``: every stage of the demo (MID's teacher and student included, both
        protocols, AutoAttack, the leaderboard) on a few dozen images, in about 3 minutes on 2 CPU cores.

        The numbers it prints are real attacks on real data, but from models trained for one or two epochs on 512
        images and evaluated on 32: it checks that an installation works end to end, it measures nothing about
        the defenses.
        """
        return cls(standard_epochs=2, pgd_at_epochs=1, pgd_at_eps_warmup=0, attack_steps=2, mid_teacher_epochs=1,
                   mid_epochs=1, mid_pool_steps=2, n_train=512, val_size=32, n_examples=32, device=device)


DEMO_METHODS = ("standard", "pgd-at", "mid")


def demo_configs(out: Path, settings: DemoSettings) -> dict[str, TrainConfig]:
    """The demo's training runs, in order (MID's source model is the standard run, so it comes first)."""
    base = TrainConfig(dataset="mnist5k", arch="lenet", batch_size=settings.batch_size, device=settings.device,
                       seed=settings.seed, n_train=settings.n_train, val_size=settings.val_size)
    return {
        "standard": replace(base, method="standard", epochs=settings.standard_epochs),
        "pgd-at": replace(base, method="pgd-at", epochs=settings.pgd_at_epochs, attack_steps=settings.attack_steps,
                          eps_warmup=settings.pgd_at_eps_warmup),
        # the source model of MID's Attacker Pool is the demo's standard model
        "mid": replace(base, method="mid", epochs=settings.mid_epochs, attack_steps=settings.mid_pool_steps,
                       options={"source": str(out / "standard" / MODEL_FILE),
                                "teacher_epochs": settings.mid_teacher_epochs, "student_init": "teacher",
                                "first_order": True, "refresh_every": settings.mid_epochs}),
    }


def _train_step(config: TrainConfig, run_dir: Path, progress: bool, threads: int | None) -> tuple[Path, dict[str, Any]]:
    """Train (or resume) one demo run; its checkpoint and last log record."""
    _pin_threads(threads)
    result = train(config, run_dir, resume=(run_dir / TRAIN_STATE_FILE).exists(), progress=progress)
    return result.checkpoint, result.log[-1]


def _evaluate_step(config: EvalConfig, threads: int | None) -> tuple[Path | None, bool]:
    """Evaluate one demo model (a finished evaluation with the same settings is reused); its result file and
    whether it was reused."""
    _pin_threads(threads)
    run = run_evaluation(config)
    return run.path, run.evaluation is None


def _pin_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def run_demo(out_dir: str | Path, settings: DemoSettings = DemoSettings(),  # noqa: B008 - frozen dataclass
             say: Callable[[str], None] = print, progress: bool = True) -> str:
    """Train, evaluate and rank; returns the markdown leaderboard (also written to ``out_dir``).

    Rerunning continues: finished training runs and finished evaluations with the same settings (checkpoint,
    data, attacks, seed, versions) are reused, an interrupted one resumes. Delete ``out_dir`` to start over.
    """
    out = ensure_writable_dir(out_dir)
    results_dir = out / "results"
    configs = demo_configs(out, settings)
    parallel = settings.workers > 1
    threads = 1 if parallel else None
    evaluations: list[tuple[str, Future[tuple[Path | None, bool]]]] = []
    with process_pool(settings.workers) as steps:
        for method, config in configs.items():
            run_dir = out / method
            say(f"[demo] training {method} (lenet, mnist5k, {config.epochs} epochs) -> {run_dir}")
            # progress bars only from this process: two processes would draw over each other
            checkpoint, last = steps.submit(_train_step, config, run_dir, progress and not parallel, threads).result()
            say(f"[demo]   {method}: held-out clean {last['val_clean_acc']:.3f}, PGD-{config.val_pgd_steps} "
                f"{last[f'val_pgd{config.val_pgd_steps}_acc']:.3f}")
            # MID is evaluated under both protocols: the paper's transfer numbers next to the white-box ones
            for protocol in ("whitebox", "transfer") if method == "mid" else ("whitebox",):
                say(f"[demo] evaluating {method} ({protocol}): known + unknown attacks + AutoAttack on "
                    f"{settings.n_examples} test images")
                evaluation = EvalConfig(
                    checkpoint=str(checkpoint), selection=AttackSelection(known=True, unknown=True, autoattack=True),
                    protocol=protocol, n_examples=settings.n_examples, results_dir=str(results_dir),
                    seed=settings.seed, device=settings.device, name=f"{method}-lenet", reuse_finished=True)
                evaluations.append((f"{method} ({protocol})", steps.submit(_evaluate_step, evaluation, threads)))
        for label, future in evaluations:
            path, reused = future.result()
            say(f"[demo]   {label} {'evaluated earlier' if reused else 'result'}: {path}")
    board = render(results_dir, "markdown")
    atomic_write_text(out / "leaderboard.md", board)
    atomic_write_text(out / "leaderboard.csv", render(results_dir, "csv"))
    write_report(results_dir, out / REPORT_FILE, title="midbench demo")
    return board
