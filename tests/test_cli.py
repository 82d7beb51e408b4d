"""The command-line contract: help without torch, one-line errors with docs/reliability.md's exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from midbench.cli.app import app

RUNNER = CliRunner()


def test_help_does_not_import_torch() -> None:
    """`midbench --help` must stay fast (goal P7): it may not import torch, torchvision or pandas."""
    code = ("import sys; from midbench.cli.app import app\n"
            "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'torchvision', 'pandas', 'pyautoattack') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in done.stdout, done.stdout


@pytest.mark.parametrize("command", [["--help"], ["train", "--help"], ["eval", "--help"], ["leaderboard", "--help"],
                                     ["demo", "--help"], ["attacks", "list", "--help"], ["attacks", "show", "--help"],
                                     ["datasets", "list", "--help"], ["models", "list", "--help"],
                                     ["plot", "--help"], ["report", "--help"], ["calibrate", "--help"],
                                     ["tune", "--help"]])
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    result = RUNNER.invoke(app, command)
    assert result.exit_code == 0
    if command != ["--help"]:
        assert "Example" in result.output


USAGE_ERRORS = [
    (["train", "--dataset", "mnist6k"], "Did you mean 'mnist5k'"),
    (["train", "--arch", "lenett"], "Did you mean 'lenet'"),
    (["train", "--method", "pgd-att"], "Did you mean 'pgd-at'"),
    (["train", "--method", "pgd-at", "--eps", "8"], "8/255"),
    (["train", "--eps", "-0.1"], "non-negative"),
    (["train", "--eps", "abc"], "fraction like 8/255"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--attack-steps", "-1", "--method", "pgd-at"], "--attack-steps"),
    (["train", "--dataset", "cifar10"], "--data-dir"),
    (["attacks", "show", "pgd-linff"], "Did you mean 'pgd-linf'"),
    (["attacks", "list", "--suite", "smok"], "Did you mean 'smoke'"),
    (["attacks", "list", "--family", "l3"], "unknown family"),
    (["train", "--device", "cuda:abc"], "cuda"),
    (["train", "--eps", "8/0"], "divides by zero"),
    (["demo", "--quick", "--n-examples", "0"], "--n-examples"),
    # errors of the option parser itself are one line too (closed sets are enums that Typer checks)
    (["train", "--optimizer", "rmsprop"], "'rmsprop' is not one of 'adam', 'sgd'"),
    (["train", "--schedule", "triangle"], "--schedule"),
    (["train", "--method", "mid", "--attack-source", "online"], "'online' is not one of"),
    (["train", "--epochs", "ten"], "--epochs"),
    (["train", "--bogus-option"], "No such option: --bogus-option"),
    (["leaderboard", "--format", "xlsx"], "'xlsx' is not one of 'markdown', 'csv'"),
    (["compare", "a.json", "--format", "latex"], "--format"),
    (["attacks", "list", "--format", "yaml"], "--format"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    if args[0] == "train":
        args = [*args, "--out", str(tmp_path / "run"), "--quiet"]
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.safetensors").exists()


EVAL_USAGE_ERRORS = [
    (["--attacks", "pgd-lnf"], "Did you mean 'pgd-linf'"),
    (["--suite", "nope"], "unknown suite"),
    (["--eps", "8"], "8/255"),
    (["--eps", "L3=1"], "unknown norm"),
    (["--batch-size", "0"], "--batch-size"),
    (["--protocol", "blackbox"], "'blackbox' is not one of 'whitebox', 'transfer'"),
    (["--protocol", "transfer"], "--source"),
    (["--dataset", "cifar-10"], "Did you mean 'cifar10'"),
    (["--attacks", "pgd-linf-t", "--eps", "0.1", "--registry-dir", "/nonexistent-registry"], "does not exist"),
]


@pytest.mark.parametrize(("args", "message"), EVAL_USAGE_ERRORS, ids=[" ".join(a) for a, _ in EVAL_USAGE_ERRORS])
def test_eval_usage_errors_exit_2(args: list[str], message: str, standard_checkpoint: Path, tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["eval", str(standard_checkpoint), *args, "--results-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "runs").exists()


def test_unwritable_results_dir_fails_before_compute(standard_checkpoint: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = RUNNER.invoke(app, ["eval", str(standard_checkpoint), "--results-dir", str(blocker / "results")])
    assert result.exit_code == 2
    assert "cannot create directory" in result.output


def test_n_examples_larger_than_split_is_clamped_with_a_note(standard_checkpoint: Path, tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["eval", str(standard_checkpoint), "--attacks", "fgsm-linf", "--n-examples", "5000",
                                 "--results-dir", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "using all 1000" in result.output


def test_attacks_list_json_and_show(tmp_path: Path) -> None:
    listed = RUNNER.invoke(app, ["attacks", "list", "--format", "json", "--family", "linf"])
    assert listed.exit_code == 0
    entries = json.loads(listed.output)
    assert {"fgsm-linf", "pgd-linf", "mim-linf"} <= {e["id"] for e in entries}
    assert {e["family"] for e in entries} == {"linf"}
    shown = RUNNER.invoke(app, ["attacks", "show", "pgd-linf"])
    assert shown.exit_code == 0 and "Madry" in shown.output


def test_leaderboard_without_results_exits_2(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["leaderboard", "--results-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "midbench eval" in result.output


@pytest.mark.parametrize(("command", "shown"), [(["bench", "--help"], "[runs.NAME]"), (["train", "--help"], "[train]")])
def test_help_shows_toml_table_names(command: list[str], shown: str) -> None:
    """Rich reads ``[name]`` in help text as markup and drops it unless escaped; the table names must show."""
    result = CliRunner().invoke(app, command, env={"COLUMNS": "200"})
    assert result.exit_code == 0 and shown in result.output


@pytest.mark.parametrize(("signal_error", "code"), [("KeyboardInterrupt", 130), ("Terminated", 143)])
def test_a_signal_inside_a_library_cleanup_is_still_the_interrupt(signal_error: str, code: int) -> None:
    """SIGINT landing while numpy writes a state file's zip surfaces as zipfile's ValueError with the interrupt as
    its context: the command must still exit 130 (143 for SIGTERM), not report an internal error."""
    import typer

    from midbench.cli import _common

    def interrupted_inside_cleanup() -> None:
        try:
            raise KeyboardInterrupt if signal_error == "KeyboardInterrupt" else _common.Terminated()
        finally:
            raise ValueError("Can't close the ZIP file while there is an open writing handle on it")

    with pytest.raises(typer.Exit) as raised:
        _common.guarded(interrupted_inside_cleanup)()
    assert raised.value.exit_code == code


def test_every_attack_selection_option_is_an_eval_flag_and_a_sweep_key() -> None:
    """The attack-selection options are declared once (midbench.evaluation.options): `midbench eval` takes each
    under its flag with the declared help text, and a sweep's [eval] table under its key."""
    import dataclasses

    import typer.main

    from midbench.bench.sweep_file import EvalSection
    from midbench.evaluation.options import SELECTION_OPTIONS

    command = typer.main.get_command(app).commands["eval"]
    flags = {flag: param for param in command.params for flag in param.opts}
    sweep_keys = {field.name for field in dataclasses.fields(EvalSection)}
    for option in SELECTION_OPTIONS:
        assert option.cli_flag in flags, option.key
        assert flags[option.cli_flag].help == option.help, option.key
        assert option.key in sweep_keys, option.key


def test_every_run_option_is_an_eval_flag_an_eval_config_field_and_a_sweep_key() -> None:
    """The other options of an evaluation are declared once too (RUN_OPTIONS): `midbench eval` takes each with the
    declared help and default, EvalConfig has the field with the same default, and the sweep file's table named
    by the option takes it under its key."""
    import dataclasses

    import typer.main

    from midbench.bench.sweep_file import EvalSection, ModelSection
    from midbench.evaluation.eval_config import EvalConfig
    from midbench.evaluation.options import RUN_OPTIONS

    command = typer.main.get_command(app).commands["eval"]
    params = {name: param for param in command.params for name in (*param.opts, param.name)}
    defaults = {field.name: field.default for field in dataclasses.fields(EvalConfig)}
    tables = {"eval": {field.name for field in dataclasses.fields(EvalSection)},
              "models": {field.name for field in dataclasses.fields(ModelSection)}}
    for option in RUN_OPTIONS:
        param = params[option.cli_flag]
        assert param.help == option.help, option.key
        # the command line takes paths as Path; the config keeps their text
        assert (None if param.default is None else type(option.default)(param.default)) == option.default, option.key
        assert defaults[option.config_field] == option.default, option.key
        if option.table is not None:
            assert option.key in tables[option.table], option.key
    assert set(tables["models"]) == {option.key for option in RUN_OPTIONS if option.table == "models"}


def _list_commands() -> list[list[str]]:
    """Every ``list`` command of the CLI (the commands whose output is most often piped), from the app itself."""
    import typer.main

    root = typer.main.get_command(app)
    return [[name, "list"] for name, group in root.commands.items() if "list" in getattr(group, "commands", {})]


@pytest.mark.skipif(sys.platform == "win32", reason="no SIGPIPE semantics")
@pytest.mark.parametrize("args", [*_list_commands(), ["attacks", "list", "--format", "json"]], ids=" ".join)
def test_output_to_a_closed_pipe_stops_quietly_with_141(args: list[str]) -> None:
    """`midbench attacks list | head` must not report an internal error: the reader went away, so the command
    stops with 128 + SIGPIPE and says nothing, whether it prints through rich or print()."""
    process = subprocess.Popen([sys.executable, "-m", "midbench", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the first write
    stderr = process.stderr.read()
    assert process.wait(timeout=120) == 141
    assert stderr == b""
