"""``midbench eval``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import console, guarded
from midbench.cli._options import Device
from midbench.evaluation.documents import ResultDocument
from midbench.evaluation.options import RUN_DEFAULT, RUN_HELP, SELECTION_HELP
from midbench.protocols import Protocol
from midbench.reporting.formats import ConsoleFormat


@guarded
def eval_command(
    checkpoint: Annotated[Path | None, typer.Argument(help=RUN_HELP["checkpoint"], show_default=False)] = None,
    dataset: Annotated[str | None, typer.Option(help="Evaluate on this dataset (same shape and classes): an id of `midbench datasets list`, or folder:PATH (docs/datasets.md); required with --arch and --model.")] = None,
    arch: Annotated[str | None, typer.Option(help=RUN_HELP["arch"])] = RUN_DEFAULT["arch"],
    model: Annotated[str | None, typer.Option("--model", help=RUN_HELP["model"])] = RUN_DEFAULT["model"],
    weights: Annotated[Path | None, typer.Option(help=RUN_HELP["weights"])] = RUN_DEFAULT["weights"],
    normalize: Annotated[str | None, typer.Option(help=RUN_HELP["normalize"])] = RUN_DEFAULT["normalize"],
    output: Annotated[str | None, typer.Option(help=RUN_HELP["output"])] = RUN_DEFAULT["output"],
    zoo_threat_model: Annotated[str, typer.Option(help=RUN_HELP["zoo_threat_model"])] = RUN_DEFAULT["zoo_threat_model"],
    model_dir: Annotated[Path | None, typer.Option(help=RUN_HELP["model_dir"])] = RUN_DEFAULT["model_dir"],
    attacks: Annotated[list[str] | None, typer.Option(help=SELECTION_HELP["attacks"])] = None,
    suite: Annotated[str | None, typer.Option(help=SELECTION_HELP["suite"])] = None,
    known_attacks: Annotated[bool, typer.Option("--known-attacks", help=SELECTION_HELP["known_attacks"])] = False,
    unknown_attacks: Annotated[bool, typer.Option("--unknown-attacks", help=SELECTION_HELP["unknown_attacks"])] = False,
    threat_models: Annotated[list[str] | None, typer.Option("--threat-models", help=SELECTION_HELP["threat_models"])] = None,
    profile_suite: Annotated[list[str] | None, typer.Option("--profile-suite", help=SELECTION_HELP["profile_suites"])] = None,
    autoattack: Annotated[bool, typer.Option("--autoattack", help=SELECTION_HELP["autoattack"])] = False,
    protocol: Annotated[Protocol, typer.Option(help="whitebox, or transfer (attacks crafted on --source).")] = Protocol.WHITEBOX,
    source: Annotated[Path | None, typer.Option(help="Transfer protocol: the checkpoint the attacks are crafted on, or a zoo entry robustbench:NAME (its L∞ list; weights under --model-dir), e.g. robustbench:Standard.")] = None,
    eps: Annotated[list[str] | None, typer.Option(help=SELECTION_HELP["eps"])] = None,
    target: Annotated[str | None, typer.Option(help=SELECTION_HELP["target"])] = None,
    n_examples: Annotated[int | None, typer.Option(help=RUN_HELP["n_examples"])] = RUN_DEFAULT["n_examples"],
    batch_size: Annotated[int, typer.Option(help=RUN_HELP["batch_size"])] = RUN_DEFAULT["batch_size"],
    results_dir: Annotated[Path, typer.Option(help=RUN_HELP["results_dir"])] = Path(RUN_DEFAULT["results_dir"]),
    name: Annotated[str | None, typer.Option(help=RUN_HELP["name"])] = RUN_DEFAULT["name"],
    seed: Annotated[int, typer.Option(help=RUN_HELP["seed"])] = RUN_DEFAULT["seed"],
    device: Device = "auto",
    registry_dir: Annotated[list[Path] | None, typer.Option(help="Extra directory of attack TOML files; repeatable.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help=RUN_HELP["data_dir"])] = RUN_DEFAULT["data_dir"],
    download: Annotated[bool, typer.Option("--download", help=RUN_HELP["download"])] = RUN_DEFAULT["download"],
    check_eps: Annotated[bool, typer.Option("--check-eps", help=RUN_HELP["check_eps"])] = RUN_DEFAULT["check_eps"],
    check_steps: Annotated[bool, typer.Option("--check-steps", help=RUN_HELP["check_steps"])] = RUN_DEFAULT["check_steps"],
    transfer_cache: Annotated[bool, typer.Option("--transfer-cache/--no-transfer-cache", help=RUN_HELP["transfer_cache"])] = RUN_DEFAULT["transfer_cache"],
    transfer_cache_dir: Annotated[Path | None, typer.Option(help=RUN_HELP["transfer_cache_dir"])] = RUN_DEFAULT["transfer_cache_dir"],
    restart: Annotated[bool, typer.Option("--restart", help=RUN_HELP["restart"])] = RUN_DEFAULT["restart"],
    output_format: Annotated[ConsoleFormat, typer.Option("--format", help="table, or json (the result document).")] = ConsoleFormat.TABLE,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress display.")] = False,
    nproc: Annotated[int | None, typer.Option("--nproc", help="Shard the evaluation over K processes on this machine (launches torchrun; one GPU each on CUDA). The per-example results equal a single process's.", rich_help_panel="Scale")] = None,
    master_port: Annotated[int | None, typer.Option(help="With --nproc: the rendezvous port (default: a free one).", rich_help_panel="Scale")] = None,
) -> None:
    """Evaluate a checkpoint (or your own model) against known and unknown attacks and write a result file.

    Without attack options, runs the model's known attacks and the unknown-attack profile. An interrupted evaluation (crash,
    Ctrl-C, kill) resumes from its last finished batch when the same command is run again.

    Sanity checks flag signs of gradient masking (see docs/flags.md); they never change the numbers.

    Example: midbench eval runs/pgdat/model.safetensors --known-attacks --unknown-attacks --autoattack --n-examples 500

    Example: midbench eval --model mypackage.defense:build --weights defense.pt --dataset mnist5k --attacks pgd-linf,square-linf

    Example: midbench eval --model robustbench:Wong2020Fast --dataset cifar10 --model-dir models --autoattack --unknown-attacks

    Example: midbench eval runs/pgdat/model.safetensors --autoattack --nproc 2 (or: torchrun --nproc-per-node 2 -m midbench eval ...)
    """
    if nproc is not None:
        from midbench.cli._launch import launch_torchrun

        raise typer.Exit(launch_torchrun("eval", nproc, master_port, n_examples))
    if master_port is not None:
        from midbench.errors import UsageError

        raise UsageError("--master-port goes with --nproc (under torchrun, give torchrun its --master-port)")
    from midbench.evaluation.eval_config import EvalConfig
    from midbench.evaluation.runner import run_evaluation
    from midbench.evaluation.selection import parse_selection

    selection = parse_selection({"attacks": attacks, "suite": suite, "known_attacks": known_attacks,
                                 "unknown_attacks": unknown_attacks, "threat_models": threat_models,
                                 "profile_suites": profile_suite, "autoattack": autoattack, "eps": eps,
                                 "target": target})
    config = EvalConfig(checkpoint=str(checkpoint) if checkpoint is not None else None, dataset=dataset, arch=arch,
                        selection=selection,
                        protocol=protocol.value, source=str(source) if source else None, n_examples=n_examples,
                        batch_size=batch_size, results_dir=str(results_dir), name=name, seed=seed, device=device,
                        registry_dirs=tuple(str(d) for d in registry_dir or []),
                        data_dir=str(data_dir) if data_dir else None, download=download, model_spec=model,
                        weights=str(weights) if weights is not None else None, zoo_threat_model=zoo_threat_model,
                        normalize=normalize, output=output,
                        model_dir=str(model_dir) if model_dir is not None else None, check_eps=check_eps,
                        check_steps=check_steps, restart=restart, transfer_cache=transfer_cache,
                        transfer_cache_dir=str(transfer_cache_dir) if transfer_cache_dir is not None else None)
    from midbench.runtime.distributed import finish, launched_by_torchrun

    rank = int(os.environ.get("RANK", "0")) if launched_by_torchrun() else 0
    show = console()
    status = None if quiet or rank != 0 or output_format is ConsoleFormat.JSON else show.status("evaluating")
    if status is not None:
        status.start()

    def report(key: str, done: int, total: int) -> None:
        if status is not None:
            status.update(f"{key}: {done}/{total} examples attacked")

    try:
        run = run_evaluation(config, progress=report)
    finally:
        if status is not None:
            status.stop()
        finish()
    if run.result is None:  # a rank other than 0 of a sharded evaluation: rank 0 reports
        return
    if output_format is ConsoleFormat.JSON:
        for note in run.notes:
            print(f"note: {note}", file=sys.stderr)
        print(json.dumps(run.result.to_dict(), indent=2))
        return
    for note in run.notes:
        show.print(f"note: {note}", highlight=False)
    show.print(result_table(run.result))
    if run.result.profile is not None:
        show.print(profile_table(run.result))
    for line in flag_lines(run.result):
        show.print(line, highlight=False, markup=False)
    show.print(f"result: {run.path}", highlight=False)


def result_table(result: ResultDocument) -> object:
    """A rich table of one result document."""
    from rich.table import Table

    table = Table(title=f"{result.checkpoint.name} on {result.data.dataset} "
                        f"(n={result.data.n_examples}, {result.protocol.name})")
    for column in ("attack", "split", "ε", "robust acc %", "95% CI", "seconds"):
        table.add_column(column, justify="left" if column in ("attack", "split") else "right")
    table.add_row("clean", "", "", f"{100 * result.clean_accuracy:.2f}", _ci(result.clean_ci95), "")
    for row in result.attacks:
        table.add_row(row.id, row.split, f"{row.eps:.4g}", f"{100 * row.robust_accuracy:.2f}",
                      _ci(row.ci95), f"{row.seconds:.1f}")
    for key, value in result.summary.items():
        if value is not None:
            table.add_row(key.replace("_", " "), "", "", f"{100 * value:.2f}", "", "")
    return table


def profile_table(result: ResultDocument) -> object:
    """A rich table of the result's unknown-attack profile: one row per threat model, accuracy per strength."""
    from rich.table import Table

    models = (result.profile or {})["threat_models"]
    table = Table(title="unknown-attack profile: robust accuracy % at each strength (× full budget), nested")
    table.add_column("threat model")
    table.add_column("seen")
    strengths = sorted({s for model in models for s in model["strengths"]})
    for strength in strengths:
        table.add_column(f"{strength:g}", justify="right")
    table.add_column("area", justify="right")
    for model in models:
        by_strength = dict(zip(model["strengths"], model["accuracy"], strict=True))
        cells = [f"{100 * by_strength[s]:.1f}" if s in by_strength else "" for s in strengths]
        table.add_row(model["id"], "yes" if model["seen"] else "", *cells, f"{100 * model['area']:.1f}")
    return table


def flag_lines(result: ResultDocument) -> list[str]:
    """The result's sanity flags, one line each, with where to read about them; nothing when there are none."""
    flags = result.flags
    if not flags:
        return []
    return [f"flag {flag['code']}: {flag['message']}" for flag in flags] + [
        "flags mean the numbers above may overestimate robustness; see docs/flags.md for what to do"]


def _ci(bounds: list[float]) -> str:
    return f"{100 * bounds[0]:.1f}–{100 * bounds[1]:.1f}"
