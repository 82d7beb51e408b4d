"""``midbench train``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import console, guarded
from midbench.cli._options import DeviceOverride


@guarded
def train_command(
    method: Annotated[str | None, typer.Option(help="Training method: standard, pgd-at, trades, mart, fast-at, msd, avg, max, mid, mid-teacher (see `midbench methods list`), or your own module:Class (a DefenseTask subclass; README, 'Your own defense').")] = None,
    registry_dir: Annotated[list[Path] | None, typer.Option(help="Extra directory of attack TOML files (repeatable): training attacks, threat models and MID's pool may come from it.")] = None,
    method_option: Annotated[list[str] | None, typer.Option("--method-option", metavar="NAME=VALUE", help="An option of the method's own Options (repeatable), e.g. --method-option sigma=0.3.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset id (default mnist5k, embedded).")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture id (default lenet).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 5).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 128).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-3).")] = None,
    optimizer: Annotated[str | None, typer.Option(help="adam (default) or sgd.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay (default 0).")] = None,
    adam_betas: Annotated[str | None, typer.Option(help="Adam's β1,β2 (default 0.9,0.999).")] = None,
    schedule: Annotated[str | None, typer.Option(help="constant (default), piecewise, cosine or cyclic (up to --lr at the middle, down to 0; fast-at).")] = None,
    train_attack: Annotated[str | None, typer.Option(help="Registry id of the training attack (default pgd-linf).")] = None,
    eps: Annotated[str | None, typer.Option(help="ε of the training attack, e.g. 0.3 or 8/255 (default: the dataset's).")] = None,
    attack_steps: Annotated[int | None, typer.Option(help="Override the training attack's steps (step size 2.5ε/steps).")] = None,
    attack_step_size: Annotated[float | None, typer.Option(help="Override the training attack's step size.")] = None,
    val_size: Annotated[int | None, typer.Option(help="Held-out training examples for per-epoch metrics (default 200).")] = None,
    n_train: Annotated[int | None, typer.Option(help="Train on the first N examples only.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default runs/<method>-<arch>-<dataset>).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with a \\[train] table; options given here win.")] = None,
    device: DeviceOverride = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last finished epoch.")] = False,
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast for training (CUDA only).")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Root of torchvision datasets.")] = None,
    download: Annotated[bool, typer.Option("--download", help="Download a torchvision dataset into --data-dir.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    pool: Annotated[str | None, typer.Option(help="MID: Attacker Pool, a suite or comma-separated attack ids (default mid-mnist-known, at the dataset's ε).", rich_help_panel="MID")] = None,
    attack_source: Annotated[str | None, typer.Option(help="MID: model the pool attacks: source (paper, default), teacher, or student (online, adaptive).", rich_help_panel="MID")] = None,
    refresh_every: Annotated[int | None, typer.Option(help="MID: recraft the cached pool examples every N epochs (default 1).", rich_help_panel="MID")] = None,
    first_order: Annotated[bool, typer.Option("--first-order", help="MID: first-order meta-gradient (faster; default second-order).", rich_help_panel="MID")] = False,
    no_meta: Annotated[bool, typer.Option("--no-meta", help="MID ablation: plain multi-attack distillation, no meta-learning.", rich_help_panel="MID")] = False,
    lc_weight: Annotated[float | None, typer.Option(help="MID: label-consistency weight (default 1.0; 0 switches it off).", rich_help_panel="MID")] = None,
    ac_weight: Annotated[float | None, typer.Option(help="MID: adversarial-consistency weight (default 1.5).", rich_help_panel="MID")] = None,
    cc_weight: Annotated[float | None, typer.Option(help="MID: cyclic-consistency weight (default 0.8).", rich_help_panel="MID")] = None,
    inner_lr: Annotated[float | None, typer.Option(help="MID: inner-step size α (default 1e-4).", rich_help_panel="MID")] = None,
    source: Annotated[Path | None, typer.Option(help="MID: reuse this source-model checkpoint (default: train one in OUT/source).", rich_help_panel="MID")] = None,
    teacher: Annotated[Path | None, typer.Option(help="MID: reuse this teacher checkpoint (default: train one in OUT/teacher).", rich_help_panel="MID")] = None,
    source_epochs: Annotated[int | None, typer.Option(help="MID: epochs of the source model (default 10).", rich_help_panel="MID")] = None,
    teacher_epochs: Annotated[int | None, typer.Option(help="MID: epochs of the teacher autoencoder (default 10).", rich_help_panel="MID")] = None,
    source_lr: Annotated[float | None, typer.Option(help="MID: learning rate of the source stage (default --lr; release 1e-3).", rich_help_panel="MID")] = None,
    teacher_lr: Annotated[float | None, typer.Option(help="MID: learning rate of the teacher stage (default --lr; release 1e-4).", rich_help_panel="MID")] = None,
    source_batch_size: Annotated[int | None, typer.Option(help="MID: batch size of the source stage (default --batch-size).", rich_help_panel="MID")] = None,
    teacher_batch_size: Annotated[int | None, typer.Option(help="MID: batch size of the teacher stage (default --batch-size).", rich_help_panel="MID")] = None,
    source_adam_betas: Annotated[str | None, typer.Option(help="MID: Adam β1,β2 of the source stage (default --adam-betas).", rich_help_panel="MID")] = None,
    teacher_adam_betas: Annotated[str | None, typer.Option(help="MID: Adam β1,β2 of the teacher stage (default --adam-betas; release 0.9,0.99).", rich_help_panel="MID")] = None,
    student_init: Annotated[str | None, typer.Option(help="MID: student encoder init, random (paper, default) or teacher.", rich_help_panel="MID")] = None,
    meta_test_clean: Annotated[bool, typer.Option("--meta-test-clean", help="MID: the clean task may be drawn as the held-out meta-test task (as in the release).", rich_help_panel="MID")] = False,
    batch_tasks: Annotated[bool, typer.Option("--batch-tasks", help="MID: one forward per module for all meta-train tasks (same losses; for GPUs, slower on a CPU; ignored with BatchNorm).", rich_help_panel="MID")] = False,
    pool_target: Annotated[str | None, typer.Option(help="MID: target policy of the pool's targeted attacks, e.g. fixed:0 (the release's; default: the registry's, random).", rich_help_panel="MID")] = None,
    rec_weight: Annotated[float | None, typer.Option(help="MID teacher: reconstruction-loss weight λ_rec (default 1).", rich_help_panel="MID")] = None,
    beta: Annotated[float | None, typer.Option(help="TRADES/MART: weight β of the KL robustness term (default 6).", rich_help_panel="Baselines")] = None,
    threat_models: Annotated[str | None, typer.Option(help="msd/avg/max: comma-separated attack ids of the union, each at the dataset's ε (default pgd-linf,pgd-l2,pgd-l1).", rich_help_panel="Baselines")] = None,
    fast_at_step: Annotated[float | None, typer.Option(help="fast-at: FGSM step size α (default 1.25ε).", rich_help_panel="Baselines")] = None,
    overfit_drop: Annotated[float | None, typer.Option(help="fast-at: stop when held-out PGD accuracy falls this much below its best, keeping the best epoch (default 0.2).", rich_help_panel="Baselines")] = None,
) -> None:
    """Train a model with one method and write checkpoints each epoch.

    Example: midbench train --method pgd-at --dataset mnist5k --epochs 5 --attack-steps 10 --out runs/pgdat

    MID trains its source model and teacher first (in OUT/source, OUT/teacher; reused on rerun) unless given:
    midbench train --method mid --epochs 8 --batch-size 64 --attack-steps 10 --first-order --out runs/mid

    Baselines: midbench train --method trades --beta 6 --attack-steps 10 --out runs/trades;
    midbench train --method fast-at --optimizer sgd --schedule cyclic --lr 0.2 --out runs/fastat
    """
    from midbench.config import TrainConfig, load_config_file, merge_config
    from midbench.training import train

    file_values = load_config_file(config, "train") if config else {}
    cli_values = {"method": method, "method_options": ",".join(method_option) if method_option else None,
                  "registry_dirs": ",".join(str(d) for d in registry_dir) if registry_dir else None, "dataset": dataset, "arch": arch, "epochs": epochs, "batch_size": batch_size,
                  "lr": lr, "optimizer": optimizer, "weight_decay": weight_decay, "adam_betas": adam_betas, "schedule": schedule,
                  "train_attack": train_attack, "eps": eps, "attack_steps": attack_steps,
                  "attack_step_size": attack_step_size, "val_size": val_size, "n_train": n_train,
                  "device": device, "seed": seed, "bf16": bf16 or None,
                  "data_dir": str(data_dir) if data_dir else None, "download": download or None,
                  "pool": pool, "attack_source": attack_source, "refresh_every": refresh_every,
                  "first_order": first_order or None, "no_meta": no_meta or None, "lc_weight": lc_weight,
                  "ac_weight": ac_weight, "cc_weight": cc_weight, "inner_lr": inner_lr,
                  "source": str(source) if source else None, "teacher": str(teacher) if teacher else None,
                  "source_epochs": source_epochs, "teacher_epochs": teacher_epochs, "student_init": student_init,
                  "source_lr": source_lr, "teacher_lr": teacher_lr, "source_batch_size": source_batch_size,
                  "teacher_batch_size": teacher_batch_size, "source_adam_betas": source_adam_betas,
                  "teacher_adam_betas": teacher_adam_betas, "meta_test_clean": meta_test_clean or None,
                  "batch_tasks": batch_tasks or None, "pool_target": pool_target,
                  "rec_weight": rec_weight, "beta": beta, "threat_models": threat_models,
                  "fast_at_step": fast_at_step, "overfit_drop": overfit_drop}
    resolved = merge_config(TrainConfig(), file_values, cli_values).validate()
    out_dir = out or Path("runs") / f"{resolved.method}-{resolved.arch}-{resolved.dataset}"
    result = train(resolved, out_dir, resume=resume, progress=not quiet)
    show = console()
    for record in result.log:
        metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()
                            if k != "stopped_early")
        show.print(metrics, highlight=False)
    stopped = result.log[-1].get("stopped_early") if result.log else None
    if stopped:
        kept = f"epoch {stopped['best_epoch']}" if stopped.get("best_epoch") is not None else "the last epoch"
        show.print(f"stopped early after epoch {stopped['epoch']}: {stopped['reason']}; kept the model of {kept}",
                   highlight=False)
    show.print(f"model: {result.checkpoint}", highlight=False)
