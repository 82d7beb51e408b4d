"""``midbench train``."""

from __future__ import annotations

import enum
import functools
import inspect
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from midbench.cli._common import console, guarded
from midbench.cli._options import DeviceOverride
from midbench.config import Optimizer, Schedule

#: where :class:`MethodOptionsCommand` leaves the method options given on the command line
METHOD_OPTIONS_KEY = "midbench.method_options"


class MethodOptionsCommand(TyperCommand):
    """``midbench train``, whose options include every built-in method's own options (``--beta``, ``--pool``,
    …), read from the methods' ``Options`` dataclasses (midbench.defenses.options) rather than listed here.

    They are added when the command is parsed or its help shown — not when the app is built — so that
    importing the methods (and torch) costs nothing to the other commands."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        return [*params[:-1], *method_option_params(), params[-1]]  # the help option stays last

    def invoke(self, ctx: Any) -> Any:
        names = {param.name for param in method_option_params()}
        given = {name: ctx.params.pop(name) for name in list(ctx.params) if name in names}
        ctx.meta[METHOD_OPTIONS_KEY] = {name: value.value if isinstance(value, enum.Enum) else value
                                        for name, value in given.items() if value is not None}
        return super().invoke(ctx)


@functools.cache
def method_option_params() -> tuple[Any, ...]:
    """One command-line option per option name of the built-in methods (``--first-order`` for a flag, a choice
    for a closed set), in a help panel named after the methods that declare it."""
    from midbench.defenses.base import METHODS
    from midbench.defenses.options import CHOICES, HELP, option_fields, option_types

    owners: dict[str, list[str]] = {}
    first: dict[str, Any] = {}
    for method in METHODS.names():
        task_class = METHODS.get(method)
        for field in option_fields(getattr(task_class, "Options", None)):
            if method not in owners.setdefault(field.name, []):
                owners[field.name].append(method)
            first.setdefault(field.name, (field, option_types(task_class.Options)[field.name]))
    parameters = []
    for name, (field, kinds) in first.items():
        choices = field.metadata.get(CHOICES)
        kind: Any = enum.Enum(name, {choice: choice for choice in choices}, type=str) if choices else kinds[0]
        flag = "--" + name.replace("_", "-")
        # a flag that is off by default is only switched on (``--first-order``; ``--no-meta`` stays readable)
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool and field.default else [flag]
        panel = "Options of " + ", ".join(owners[name])
        info = typer.Option(*decls, help=field.metadata.get(HELP), rich_help_panel=panel, show_default=False)
        parameters.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                            annotation=Annotated[kind | None, info]))

    def options_only(**values: Any) -> None:
        """Holds the generated options."""

    options_only.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    options_only.__annotations__ = {parameter.name: parameter.annotation for parameter in parameters}
    holder = typer.Typer()
    holder.command()(options_only)
    return tuple(typer.main.get_command(holder).params)


@guarded
def train_command(
    method: Annotated[str | None, typer.Option(help="Training method: a built-in id (`midbench methods list`: standard, pgd-at, trades, mid, ...) or your own module:Class (a DefenseTask subclass; README, 'Your own defense').")] = None,
    registry_dir: Annotated[list[Path] | None, typer.Option(help="Extra directory of attack TOML files (repeatable): training attacks, threat models and MID's pool may come from it.")] = None,
    method_option: Annotated[list[str] | None, typer.Option("--method-option", metavar="NAME=VALUE", help="An option of the method's own Options (repeatable), e.g. --method-option sigma=0.3.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset id of `midbench datasets list` (default mnist5k, embedded), or folder:PATH with train/ and test/ (docs/datasets.md).")] = None,
    arch: Annotated[str | None, typer.Option(help="Architecture id (default lenet).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default 5).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size (default 128).")] = None,
    lr: Annotated[float | None, typer.Option(help="Learning rate (default 1e-3).")] = None,
    optimizer: Annotated[Optimizer | None, typer.Option(help="adam (default) or sgd.")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="Weight decay (default 0).")] = None,
    adam_betas: Annotated[str | None, typer.Option(help="Adam's β1,β2 (default 0.9,0.999).")] = None,
    schedule: Annotated[Schedule | None, typer.Option(help="constant (default), piecewise, cosine or cyclic (up to --lr at the middle, down to 0; fast-at).")] = None,
    train_attack: Annotated[str | None, typer.Option(help="Registry id of the training attack (default pgd-linf).")] = None,
    eps: Annotated[str | None, typer.Option(help="ε of the training attack, e.g. 0.3 or 8/255 (default: the dataset's).")] = None,
    attack_steps: Annotated[int | None, typer.Option(help="Override the training attack's steps (step size 2.5ε/steps).")] = None,
    attack_step_size: Annotated[float | None, typer.Option(help="Override the training attack's step size.")] = None,
    eps_warmup: Annotated[int | None, typer.Option(help="ε warm-up: epoch e of the first N trains at e/N of the training attacks' budget (default 0: full from the start).")] = None,
    val_size: Annotated[int | None, typer.Option(help="Held-out training examples for per-epoch metrics (default 200).")] = None,
    n_train: Annotated[int | None, typer.Option(help="Train on the first N examples only.")] = None,
    out: Annotated[Path | None, typer.Option(help="Output directory (default runs/<method>-<arch>-<dataset>).")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML file with a \\[train] table; options given here win.")] = None,
    device: DeviceOverride = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (default 0).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last finished epoch.")] = False,
    bf16: Annotated[bool, typer.Option("--bf16", help="bf16 autocast for training (CUDA only).")] = False,
    channels_last: Annotated[bool, typer.Option("--channels-last", help="NHWC memory layout for the model and its batches (faster convolutions on tensor-core GPUs, mostly with --bf16); the same model up to float rounding.")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Root of torchvision datasets.")] = None,
    download: Annotated[bool, typer.Option("--download", help="Download a torchvision dataset into --data-dir.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    nproc: Annotated[int | None, typer.Option("--nproc", help="Train data-parallel over K processes on this machine (launches torchrun; one GPU each on CUDA). --batch-size stays the global batch.", rich_help_panel="Scale")] = None,
    master_port: Annotated[int | None, typer.Option(help="With --nproc: the rendezvous port (default: a free one).", rich_help_panel="Scale")] = None,
    ctx: typer.Context = None,  # type: ignore[assignment] - given by Typer
) -> None:
    """Train a model with one method and write checkpoints each epoch.

    Example: midbench train --method pgd-at --dataset mnist5k --epochs 5 --attack-steps 10 --out runs/pgdat

    MID trains its source model and teacher first (in OUT/source, OUT/teacher; reused on rerun) unless given:
    midbench train --method mid --epochs 8 --batch-size 64 --attack-steps 10 --first-order --out runs/mid

    Baselines: midbench train --method trades --beta 6 --attack-steps 10 --out runs/trades;
    midbench train --method fast-at --optimizer sgd --schedule cyclic --lr 0.2 --out runs/fastat

    Data-parallel: midbench train --method pgd-at --nproc 2 --out runs/pgdat (or: torchrun --nproc-per-node 2 -m
    midbench train ...)
    """
    if nproc is not None:
        from midbench.cli._launch import launch_torchrun

        raise typer.Exit(launch_torchrun("train", nproc, master_port))
    if master_port is not None:
        from midbench.errors import UsageError

        raise UsageError("--master-port goes with --nproc (under torchrun, give torchrun its --master-port)")
    from midbench.config import TrainConfig, load_config_file, merge_config
    from midbench.runtime.distributed import finish
    from midbench.training import train

    file_values = load_config_file(config, "train") if config else {}
    cli_values = {"method": method, "method_options": method_option,
                  "registry_dirs": ",".join(str(d) for d in registry_dir) if registry_dir else None,
                  "dataset": dataset, "arch": arch, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                  "optimizer": optimizer.value if optimizer else None, "weight_decay": weight_decay, "adam_betas": adam_betas,
                  "schedule": schedule.value if schedule else None, "train_attack": train_attack, "eps": eps, "attack_steps": attack_steps,
                  "attack_step_size": attack_step_size, "eps_warmup": eps_warmup, "val_size": val_size, "n_train": n_train,
                  "device": device, "seed": seed, "bf16": bf16 or None, "channels_last": channels_last or None,
                  "data_dir": str(data_dir) if data_dir else None, "download": download or None,
                  "options": ctx.meta.get(METHOD_OPTIONS_KEY, {})}
    resolved = merge_config(TrainConfig(), file_values, cli_values).validate()
    out_dir = out or resolved.default_out()
    try:
        result = train(resolved, out_dir, resume=resume, progress=not quiet)
    finally:
        finish()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 reports
        return
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
