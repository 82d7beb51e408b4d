"""``midbench``: the root Typer application. Sub-commands import torch only when they run."""

from __future__ import annotations

from typing import Annotated

import typer

from midbench._version import __version__
from midbench.cli import (
    attacks,
    bench,
    calibrate,
    compare,
    datasets,
    demo,
    eval_,
    export,
    import_,
    leaderboard,
    methods,
    models,
    plot,
    regenerate,
    report,
    train,
    tune,
)
from midbench.cli._common import DEBUG, OneLineErrors, install_signal_handlers

app = typer.Typer(
    name="midbench", no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False, cls=OneLineErrors,
    help="Train and evaluate adversarial defenses against known and unknown attacks (MID, adversarial "
         "training, AutoAttack).\n\nExample: midbench demo",
)


def _version(value: bool) -> None:
    if value:
        print(f"midbench {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Train and evaluate adversarial defenses against known and unknown attacks."""
    DEBUG["enabled"] = debug


app.command("train", no_args_is_help=False, cls=train.MethodOptionsCommand)(train.train_command)
app.command("eval")(eval_.eval_command)
app.command("leaderboard")(leaderboard.leaderboard_command)
app.command("plot")(plot.plot_command)
app.command("report")(report.report_command)
app.command("compare")(compare.compare_command)
app.command("demo")(demo.demo_command)
app.command("bench")(bench.bench_command)
app.command("calibrate")(calibrate.calibrate_command)
app.command("tune")(tune.tune_command)
app.command("regenerate")(regenerate.regenerate_command)
app.add_typer(attacks.attacks_app, name="attacks")
app.add_typer(import_.import_app, name="import")
app.add_typer(export.export_app, name="export")
app.add_typer(datasets.datasets_app, name="datasets")
app.add_typer(models.models_app, name="models")
app.add_typer(methods.methods_app, name="methods")


def main() -> None:
    """Console-script entry point."""
    install_signal_handlers()
    app()
