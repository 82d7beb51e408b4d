"""``midbench bench``: sweep files, the order of runs, resuming, and reproducibility of the table."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from midbench.bench.leaderboards import write_leaderboards
from midbench.bench.plan import crafted_sources, evaluation_plan
from midbench.bench.sweep import Sweep, load_sweep, run_sweep
from midbench.cli.app import app
from midbench.errors import UsageError
from midbench.evaluation.documents import read_result
from midbench.reporting.leaderboard import render

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "results" / "mnist5k"

TINY = """
[sweep]
name = "tiny"
dataset = "mnist5k"
seed = 0
device = "cpu"
protocols = ["whitebox", "transfer"]
transfer_source = "standard"

[eval]
n_examples = 24
attacks = ["fgsm-linf"]
known_attacks = true

[train]
arch = "lenet"
batch_size = 64
n_train = 200
val_size = 20
val_pgd_steps = 1
attack_steps = 1

[runs.mid]
epochs = 1
teacher_epochs = 1
first_order = true
pool = "fgsm-linf,pgd-linf"

[runs.standard]
epochs = 1

[runs.pgd-at]
arch = "test-cnn"
epochs = 1
"""


def write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("edit", "message"), [
    (("[runs.standard]", "[runs.standard]\nbogus = 1"), "bogus"),
    (("[runs.pgd-at]", "[runs.pgd-at]\nmethod = \"pgd-att\""), "pgd-att"),
    (('transfer_source = "standard"', ""), "transfer_source"),
    (('transfer_source = "standard"', 'transfer_source = "nobody"'), "nobody"),
    (('protocols = ["whitebox", "transfer"]', 'protocols = ["greybox"]'), "greybox"),
    (("[runs.pgd-at]", "[runs.pgd-at]\ndataset = \"cifar10\""), "one dataset"),
    (("[eval]", "[evaluation]"), "evaluation"),
    (("n_examples = 24", "n_examples = 0"), "n_examples"),
    (("[runs.standard]\nepochs = 1", "[runs.standard]\nepochs = 0"), "epochs"),
    (("[runs.standard]\nepochs = 1", '[runs.standard]\nepochs = "1"'), "integer"),
    (("seed = 0", 'seed = "x"'), "integer"),
    (("n_examples = 24", 'n_examples = "ten"'), "integer"),
    (('attacks = ["fgsm-linf"]', 'attacks = "fgsm-linf"'), "list of strings"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\neps = 0.3'), "list"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linff"]'), "fgsm-linff"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\nsuite = "no-such-suite"'), "no-such-suite"),
    (('name = "tiny"', 'name = "../tiny"'), "file name"),
    (("[runs.pgd-at]", '[runs."../pgd-at"]\nmethod = "pgd-at"'), "file name"),
    (("batch_size = 64", 'batch_size = 64.5'), "integer"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf", 3]'), "list of strings"),
    (('protocols = ["whitebox", "transfer"]', 'protocols = [true]'), "list of strings"),
    (('pool = "fgsm-linf,pgd-linf"', 'pool = ["fgsm-linf"]'), "--pool must be a string"),
    (("first_order = true", 'first_order = "yes"'), "--first-order must be true or false"),
    (("[runs.standard]\nepochs = 1", "[runs.standard]\nepochs = 1\nbeta = 6.0"), "method standard has no option"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\nprofile_suites = ["unknown-profile-ua"]'),
     "add unknown_attacks"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\nthreat_models = ["linf"]'), "add unknown_attacks"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\nunknown_attacks = true\nthreat_models = ["linff"]'),
     "linff"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\nunknown_attacks = true\nthreat_models = ["hsv"]\n'
                                    'profile_suites = ["unknown-profile-ua"]'),
     "colour"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\ntarget = "sideways"'), "sideways"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\nunknown_attacks = true\nprofile_suites = ["no-suite"]'),
     "no-suite"),
    (('attacks = ["fgsm-linf"]', 'attacks = ["fgsm-linf"]\nprofile_suites = "unknown-profile-ua"'), "list"),
])
def test_bad_sweep_files_are_refused_before_training(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    old, new = edit
    assert old in TINY
    path = write(tmp_path, TINY.replace(old, new, 1))
    with pytest.raises(UsageError, match=message):
        load_sweep(path)
    result = CliRunner().invoke(app, ["bench", "--config", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "out").exists()


def test_missing_or_broken_file_is_a_usage_error(tmp_path: Path) -> None:
    assert CliRunner().invoke(app, ["bench", "--config", str(tmp_path / "none.toml")]).exit_code == 2
    assert CliRunner().invoke(app, ["bench", "--config", str(write(tmp_path, "[sweep\n"))]).exit_code == 2


def test_runs_named_as_a_source_come_first_and_mid_defaults_to_the_transfer_source(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, TINY))
    assert [run.name for run in sweep.runs] == ["standard", "mid", "pgd-at"]
    assert sweep.run("mid").config.options["source"] == "@standard"
    # the source is not attacked through itself under transfer: that is its white-box row
    assert evaluation_plan(sweep) == [("standard", "whitebox", None), ("mid", "whitebox", None),
                                      ("mid", "transfer", "standard"), ("pgd-at", "whitebox", None),
                                      ("pgd-at", "transfer", "standard")]


def test_cycles_between_runs_are_refused(tmp_path: Path) -> None:
    text = TINY + '\n[runs.teacher-a]\nmethod = "mid"\nsource = "teacher-b"\n' \
                  '\n[runs.teacher-b]\nmethod = "mid"\nsource = "teacher-a"\n'
    with pytest.raises(UsageError, match="cycle"):
        load_sweep(write(tmp_path, text))


def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--config", str(write(tmp_path, TINY)), "--out",
                                      str(tmp_path / "out"), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "evaluate mid transfer (attacks crafted on standard)" in result.output
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    config = write(root, TINY)
    result = CliRunner().invoke(app, ["bench", "--config", str(config), "--out", str(root / "a"), "--quiet"])
    assert result.exit_code == 0, result.output
    return root


@pytest.mark.slow
def test_sweep_writes_every_evaluation_and_the_leaderboard(tiny_sweep: Path) -> None:
    results = sorted((tiny_sweep / "a" / "results" / "runs" / "mnist5k").glob("*.json"))
    documents = [read_result(path) for path in results]
    assert sorted((d.checkpoint.name, d.protocol.name) for d in documents) == sorted(
        [("standard", "whitebox"), ("mid", "whitebox"), ("mid", "transfer"), ("pgd-at", "whitebox"),
         ("pgd-at", "transfer")])
    standard_sha = next(d.checkpoint.sha256 for d in documents if d.checkpoint.name == "standard")
    for document in documents:
        if document.protocol.name == "transfer":  # every transfer row is crafted on the same model
            assert document.protocol.source["sha256"] == standard_sha
    board = (tiny_sweep / "a" / "results" / "leaderboard-tiny.md").read_text(encoding="utf-8")
    assert "### mnist5k — whitebox" in board and "### mnist5k — transfer" in board
    assert str(tiny_sweep / "a") not in board  # no checkpoint path of this machine in a table meant for a paper


@pytest.mark.slow
def test_rerun_skips_finished_work(tiny_sweep: Path) -> None:
    before = sorted(p.name for p in (tiny_sweep / "a" / "results" / "runs" / "mnist5k").iterdir())
    result = CliRunner().invoke(app, ["bench", "--config", str(tiny_sweep / "sweep.toml"), "--out",
                                      str(tiny_sweep / "a"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.count("already evaluated") == 5
    assert sorted(p.name for p in (tiny_sweep / "a" / "results" / "runs" / "mnist5k").iterdir()) == before


@pytest.mark.slow
def test_same_seed_reproduces_the_table_exactly(tiny_sweep: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "--config", str(tiny_sweep / "sweep.toml"), "--out",
                                      str(tiny_sweep / "b"), "--quiet"])
    assert result.exit_code == 0, result.output
    for suffix in ("md", "csv"):
        first = (tiny_sweep / "a" / "results" / f"leaderboard-tiny.{suffix}").read_bytes()
        second = (tiny_sweep / "b" / "results" / f"leaderboard-tiny.{suffix}").read_bytes()
        assert first == second


@pytest.mark.slow
def test_changed_training_settings_do_not_resume_another_sweeps_state(tiny_sweep: Path, tmp_path: Path) -> None:
    changed = write(tmp_path, TINY.replace("n_train = 200", "n_train = 199"))
    result = CliRunner().invoke(app, ["bench", "--config", str(changed), "--out", str(tiny_sweep / "a")])
    assert result.exit_code == 2 and "different sweep" in result.output


@pytest.mark.slow
def test_changed_eval_settings_redo_the_evaluations_but_not_the_training(tiny_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "a"
    run_sweep(load_sweep(tiny_sweep / "sweep.toml"), out)
    models = {path: path.read_bytes() for path in out.glob("*/model.safetensors")}
    changed = write(tmp_path, TINY.replace("n_examples = 24", "n_examples = 23"))
    result = CliRunner().invoke(app, ["bench", "--config", str(changed), "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "already evaluated" not in result.output
    assert all(path.read_bytes() == weights for path, weights in models.items())
    state = json.loads((out / "sweep-state.json").read_text())
    for record in state["evaluations"].values():
        assert read_result(out / "results" / record["result"]).data.n_examples == 23


@pytest.mark.slow
def test_a_retrained_model_replaces_its_stale_result(tiny_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_sweep(load_sweep(tiny_sweep / "sweep.toml"), out)
    state = json.loads((out / "sweep-state.json").read_text())
    stale = state["evaluations"]["pgd-at/whitebox"]["result"]
    state["evaluations"]["pgd-at/whitebox"]["checkpoint_sha256"] = "0" * 64  # as if pgd-at had been retrained
    (out / "sweep-state.json").write_text(json.dumps(state))
    run_sweep(load_sweep(tiny_sweep / "sweep.toml"), out)
    assert not (out / "results" / stale).exists()
    names = [read_result(p).checkpoint.name for p in (out / "results" / "runs" / "mnist5k").glob("*.json")]
    assert names.count("pgd-at") == 2  # white-box (new) and transfer (kept)


@pytest.mark.slow
def test_a_retrained_source_redoes_the_transfer_rows(tiny_sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run_sweep(load_sweep(tiny_sweep / "sweep.toml"), out)
    state = json.loads((out / "sweep-state.json").read_text())
    before = {key: record["result"] for key, record in state["evaluations"].items()}
    for record in state["evaluations"].values():  # as if the standard (source) run had been retrained
        if record["settings"]["source_sha256"] is not None:
            record["settings"]["source_sha256"] = "0" * 64
    (out / "sweep-state.json").write_text(json.dumps(state))
    run_sweep(load_sweep(tiny_sweep / "sweep.toml"), out)
    after = {key: record["result"] for key, record in json.loads((out / "sweep-state.json").read_text())
             ["evaluations"].items()}
    assert {key for key in before if before[key] != after[key]} == {"mid/transfer", "pgd-at/transfer"}


def test_shipped_sweep_covers_the_paper_table() -> None:
    sweep = load_sweep(SHIPPED / "sweep.toml")
    methods = {run.config.method for run in sweep.runs}
    assert {"standard", "pgd-at", "trades", "mart", "fast-at", "msd", "mid"} <= methods
    assert sweep.dataset == "mnist5k" and set(sweep.protocols) == {"whitebox", "transfer"}
    assert sweep.selection.known and sweep.selection.unknown and sweep.selection.autoattack


def _sweep_table(path: Path) -> dict:
    """A sweep file's ``[sweep]`` table, read without checking it (a zoo sweep's check needs the robustbench extra,
    and collecting the tests must not)."""
    from midbench._toml import tomllib

    return tomllib.loads(path.read_text(encoding="utf-8"))


def _committed_tables() -> list[Path]:
    """Every committed sweep file with its table beside it (``leaderboard-<name>.md``)."""
    return [path for path in sorted((REPO / "results").glob("*/sweep.toml"))
            if (path.parent / f"leaderboard-{_sweep_table(path)['sweep']['name']}.md").exists()]


def test_the_shipped_tables_are_committed() -> None:
    assert {path.parent.name for path in _committed_tables()} >= {"mnist5k"}


@pytest.mark.parametrize("path", _committed_tables(), ids=lambda path: path.parent.name)
def test_shipped_table_is_what_its_result_files_give(path: Path) -> None:
    """Each committed leaderboard is recomputed from the committed result files byte for byte, so nobody edited
    a number by hand (the sweep itself writes the table the same way)."""
    _assert_table_recomputed(load_sweep(path), path.parent, path)


def _assert_table_recomputed(sweep: Sweep, folder: Path, path: Path) -> None:
    """``folder``'s committed leaderboard (markdown and CSV) equals what its result files give, written as the
    sweep of file ``path`` writes it."""
    committed = {suffix: (folder / f"leaderboard-{sweep.name}.{suffix}").read_text(encoding="utf-8")
                 for suffix in ("md", "csv")}
    board, _ = write_leaderboards(sweep, folder, path.relative_to(REPO).as_posix(), write=False)
    assert board == committed["md"]
    assert render(folder, "csv", dataset=sweep.dataset) == committed["csv"]


def _committed_replicate_tables() -> list[tuple[Path, int]]:
    """Every committed sweep file with ``seeds`` and a replicate's table in its ``seed-<s>/`` folder (a sweep in
    progress has some replicates' tables before the table across seeds)."""
    from midbench.reporting.seeds import seed_folder

    found = []
    for path in sorted((REPO / "results").glob("*/sweep.toml")):
        table = _sweep_table(path)["sweep"]
        for seed in table.get("seeds", []):
            if (path.parent / seed_folder(seed) / f"leaderboard-{table['name']}.md").exists():
                found.append((path, seed))
    return found


@pytest.mark.parametrize(("path", "seed"), _committed_replicate_tables(),
                         ids=lambda value: value.parent.name if isinstance(value, Path) else f"seed-{value}")
def test_shipped_replicate_table_is_what_its_result_files_give(path: Path, seed: int) -> None:
    """A replicate's committed leaderboard is recomputed from its committed result files byte for byte, as the
    sweep writes it (the replicate is a sweep of its own in ``seed-<s>/``)."""
    from midbench.reporting.seeds import seed_folder

    _assert_table_recomputed(load_sweep(path).replicate(seed), path.parent / seed_folder(seed), path)


# ---- the committed sweep files for torchvision datasets --------------------------------------------------------

COMMITTED_SWEEPS = sorted((REPO / "results").glob("*/sweep.toml"))
#: the committed sweeps that train on a torchvision dataset (a list of zoo models trains nothing)
TORCHVISION_SWEEPS = [path for path in COMMITTED_SWEEPS if _sweep_table(path)["sweep"]["dataset"] != "mnist5k"
                      and _sweep_table(path).get("runs")]


def test_every_committed_sweep_file_has_a_plan() -> None:
    """Each committed sweep file parses and plans (every run's method and options checked, every listed model's
    zoo entry looked up) with `--dry-run`."""
    assert {path.parent.name for path in TORCHVISION_SWEEPS} >= {"mnist-mid-release", "cifar10-mid", "cifar10-resnet18",
                                                             "cifar10-wrn-34-10"}
    assert {path.parent.name for path in COMMITTED_SWEEPS} >= {"mnist5k", "mnist5k-mid-ablation",
                                                              "cifar10-robustbench"}
    for path in COMMITTED_SWEEPS:
        document = _sweep_table(path)
        if document.get("models") and importlib.util.find_spec("robustbench") is None:
            continue  # its zoo entries are checked where the extra is installed (CI installs it)
        result = CliRunner().invoke(app, ["bench", "--config", str(path), "--data-dir", "unused", "--dry-run"])
        assert result.exit_code == 0, (path, result.output)
        # a sweep of several seeds plans each step once per seed, as "seed S: <step>"
        lines = [re.sub(r"^seed \d+: ", "", line) for line in result.output.splitlines()]
        replicates = len(document["sweep"].get("seeds", [0]))
        assert sum(line.startswith("train ") for line in lines) == replicates * len(document.get("runs", {}))
        assert sum(line.startswith("load ") for line in lines) == replicates * len(document.get("models", {}))
        assert any(line.startswith("evaluate ") for line in lines)


@pytest.mark.parametrize(("folder", "arch"), [("cifar10-resnet18", "preact-resnet18"),
                                             ("cifar10-wrn-34-10", "wrn-34-10")])
def test_the_cost_estimates_quote_the_measured_flops_of_a_pass(folder: str, arch: str) -> None:
    """The GPU-hour estimate in a CIFAR-10 sweep's header rests on the FLOPs of one forward and backward pass of
    its architecture; they are measured here (torch.utils.flop_counter), so the header cannot drift from the
    model."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from midbench.models import build_model

    model = build_model(arch, 10, (3, 32, 32), (0.5,) * 3, (0.25,) * 3)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    with FlopCounterMode(display=False) as forward:
        logits = model(x)
    with FlopCounterMode(display=False) as backward:
        logits.sum().backward()
    header = (REPO / "results" / folder / "sweep.toml").read_text(encoding="utf-8")
    text = " ".join(line.lstrip("# ") for line in header.splitlines() if line.startswith("#"))
    digits = 2 if forward.get_total_flops() < 1e10 else 1
    assert f"{forward.get_total_flops() / 1e9:.{digits}f} GFLOP forward" in text
    assert f"{backward.get_total_flops() / 1e9:.{digits}f} GFLOP backward" in text


#: a tiny architecture of the same family as each committed one (MID's has a decoder too)
TINY_TWINS = {"wrn-34-10": "test-wrn", "preact-resnet18": "test-resnet", "resnet18": "test-resnet-ae"}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*differs from the published release")
@pytest.mark.parametrize("path", TORCHVISION_SWEEPS, ids=lambda path: path.parent.name)
def test_committed_sweep_runs_train_on_files_in_torchvision_format(path: Path, tmp_path: Path) -> None:
    """Every run of the sweep, with its committed settings (optimiser, schedule, architecture, MID's stage
    settings, pool target, clean meta-test) shrunk to one step on four images, trains on dataset files the test
    writes in torchvision's layout, reached through the sweep's data directory."""
    from dataclasses import replace

    from test_data_torchvision import write_cifar10, write_mnist

    from midbench.bench.cells import resolved_config
    from midbench.training import train

    sweep = load_sweep(path, device="cpu", data_dir=str(tmp_path / "data"))
    {"mnist": write_mnist, "cifar10": write_cifar10}[sweep.dataset](tmp_path / "data")
    out = tmp_path / "runs"
    for index, run in enumerate(sweep.runs):
        resolved = resolved_config(run, out)
        stages = {"source_epochs": 1, "teacher_epochs": 1, "source_batch_size": None, "teacher_batch_size": None}
        # the first run trains the committed architecture; the others its tiny twin of the same family (a
        # WideResNet-34-10 step and its 0.5 GB of checkpoints per run cost a minute for no more coverage)
        arch = resolved.arch if index == 0 else TINY_TWINS.get(resolved.arch, resolved.arch)
        tiny = replace(resolved, arch=arch, epochs=1, n_train=4, val_size=2, batch_size=4, val_pgd_steps=1,
                       attack_steps=1 if run.config.attack_steps or run.config.method == "mid" else None,
                       attack_step_size=None,
                       options={**resolved.options, **(stages if run.config.method == "mid" else {})})
        log = train(tiny, out / run.name, progress=False).log
        assert len(log) == 1 and math.isfinite(log[0]["loss"]), run.name
        assert tiny.data_dir == str(tmp_path / "data")


# ---- a second, independent transfer source ---------------------------------------------------------------------

def test_extra_transfer_sources_are_planned_and_checked(tmp_path: Path) -> None:
    text = TINY.replace('transfer_source = "standard"', 'transfer_source = "standard"\n'
                        'extra_transfer_sources = ["standard-b"]') + '\n[runs.standard-b]\nmethod = "standard"\n'
    plan = evaluation_plan(load_sweep(write(tmp_path, text)))
    transfer = [(run, source) for run, protocol, source in plan if protocol == "transfer"]
    assert sorted(transfer) == [("mid", "standard"), ("mid", "standard-b"), ("pgd-at", "standard"),
                                ("pgd-at", "standard-b"), ("standard", "standard-b"), ("standard-b", "standard")]
    for bad in ('["nobody"]', '["standard"]'):
        with pytest.raises(UsageError, match="extra_transfer_sources"):
            load_sweep(write(tmp_path, text.replace('["standard-b"]', bad)))


@pytest.mark.slow
def test_each_transfer_source_gets_its_own_table(tmp_path: Path) -> None:
    """A sweep with an independently trained second source: every transfer row is crafted on the source it
    names, and the leaderboard keeps one table per source (the extra one named after its run)."""
    text = """
[sweep]
name = "two-sources"
dataset = "mnist5k"
device = "cpu"
protocols = ["whitebox", "transfer"]
transfer_source = "standard"
extra_transfer_sources = ["standard-b"]

[eval]
n_examples = 16
attacks = ["fgsm-linf"]

[train]
arch = "test-cnn"
batch_size = 64
n_train = 128
val_size = 16
val_pgd_steps = 1
attack_steps = 1

[runs.standard]
epochs = 1

[runs.standard-b]
method = "standard"
epochs = 2

[runs.pgd-at]
epochs = 1
"""
    result = CliRunner().invoke(app, ["bench", "--config", str(write(tmp_path, text)), "--out",
                                      str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 0, result.output
    documents = [read_result(path) for path in (tmp_path / "out" / "results").rglob("*.json")]
    sources = {(d.checkpoint.name, d.protocol.source_name): d.protocol.source["sha256"]
               for d in documents if d.protocol.name == "transfer"}
    assert set(sources) == {("pgd-at", "standard-test-cnn-mnist5k"), ("pgd-at", "standard-b"),
                            ("standard-b", "standard-test-cnn-mnist5k"), ("standard", "standard-b")}
    assert sources[("pgd-at", "standard-b")] != sources[("pgd-at", "standard-test-cnn-mnist5k")]
    board = (tmp_path / "out" / "results" / "leaderboard-two-sources.md").read_text(encoding="utf-8")
    assert "— transfer (standard-b)" in board and "— transfer (standard-test-cnn-mnist5k)" in board


@pytest.mark.slow
def test_parallel_workers_give_the_serial_result_files_and_tables(tmp_path: Path) -> None:
    """``--workers 2``: the same steps in two processes, each started once its inputs exist (MID after its
    source), with one thread each as in the serial run; the matrices and the leaderboard are the serial run's."""
    pinned = TINY.replace('device = "cpu"', 'device = "cpu"\nthreads = 1')
    config = write(tmp_path, pinned)
    serial = CliRunner().invoke(app, ["bench", "--config", str(config), "--out", str(tmp_path / "serial"), "--quiet"])
    assert serial.exit_code == 0, serial.output
    parallel = CliRunner().invoke(app, ["bench", "--config", str(config), "--out", str(tmp_path / "parallel"),
                                        "--quiet", "--workers", "2"])
    assert parallel.exit_code == 0, parallel.output
    board = "leaderboard-tiny.md"
    serial_board = (tmp_path / "serial" / "results" / board).read_text(encoding="utf-8")
    assert (tmp_path / "parallel" / "results" / board).read_text(encoding="utf-8") == serial_board

    def matrices(folder: Path) -> dict[str, np.ndarray]:
        found = {}
        for path in (folder / "results" / "runs" / "mnist5k").glob("*.json"):
            document = read_result(path)
            with np.load(path.with_suffix(".npz")) as saved:
                found[f"{document.checkpoint.name}/{document.protocol.label}"] = saved["robust"]
        return found

    serial_matrices, parallel_matrices = matrices(tmp_path / "serial"), matrices(tmp_path / "parallel")
    assert sorted(parallel_matrices) == sorted(serial_matrices) and len(serial_matrices) == 5
    for key, matrix in serial_matrices.items():
        np.testing.assert_array_equal(parallel_matrices[key], matrix, err_msg=key)
    # the steps ran in separate processes, so the state file records every one of them
    state = json.loads((tmp_path / "parallel" / "sweep-state.json").read_text())
    assert sorted(state["training"]) == ["mid", "pgd-at", "standard"] and len(state["evaluations"]) == 5
    # two models go through the source: its attacks are crafted once, by a step of their own, before either
    # evaluation starts, so both read the sweep's FGSM on all 24 examples from the cache
    assert list(state["crafted"]) == ["standard"]
    for path in (tmp_path / "parallel" / "results" / "runs" / "mnist5k").glob("*__transfer__*.json"):
        assert json.loads(path.read_text())["protocol"]["transfer_cache"]["reused"] >= 24, path.name


def test_bad_worker_settings_are_usage_errors(tmp_path: Path) -> None:
    config = write(tmp_path, TINY)
    for extra, message in ((["--workers", "0"], "--workers must be at least 1"),
                           (["--workers", "2", "--devices", "cpu"], "1 device(s) for 2 worker(s)")):
        result = CliRunner().invoke(app, ["bench", "--config", str(config), "--out", str(tmp_path / "o"), *extra])
        assert result.exit_code == 2 and message in result.output, result.output


# ---- evaluate-only models ([models.NAME]): checkpoints and factories next to the trained runs --------------------

#: TINY's [sweep] table under another name, a standard run and two models
LISTED = TINY.split("[eval]")[0].replace('name = "tiny"', 'name = "listed"') + """[eval]
n_examples = 16
attacks = ["fgsm-linf"]

[train]
arch = "test-cnn"
batch_size = 64
n_train = 64
val_size = 16
val_pgd_steps = 1

[runs.standard]
epochs = 1

[models.factory]
model = "user_models:honest_cnn"

[models.saved]
checkpoint = "plain.pt"
arch = "lenet"
"""


def _plain_state_dict(path: Path, seed: int) -> None:
    """A plain state dict of midbench's LeNet, as a user would save it (``torch.save(model.state_dict())``)."""
    import torch

    from midbench.models import build_model

    torch.manual_seed(seed)
    torch.save(build_model("lenet", 10, (1, 28, 28)).state_dict(), path)


@pytest.mark.parametrize(("edit", "message"), [
    (('checkpoint = "plain.pt"', 'checkpoint = "plain.pt"\nmodel = "user_models:honest_cnn"'), "exactly one of"),
    (('checkpoint = "plain.pt"\narch = "lenet"', ""), "exactly one of"),
    (('model = "user_models:honest_cnn"', 'model = "user_models:honest_cnn"\nzoo_threat_model = "L2"'),
     "zoo_threat_model and model_dir go with"),
    (('model = "user_models:honest_cnn"', 'model = "user_models.honest_cnn"'), "module:factory"),
    (('model = "user_models:honest_cnn"', 'model = "user_models:honest_cnn"\nbogus = 1'), "bogus"),
    (('model = "user_models:honest_cnn"', 'model = 3'), "string"),
    (('checkpoint = "plain.pt"', 'checkpoint = "missing.pt"'), "missing.pt not found"),
    (('checkpoint = "plain.pt"', 'checkpoint = "plain.pt"\nweights = "w.pt"'), "weights goes with"),
    (("[models.factory]", "[models.standard]"), "name both a run and a model"),
    (("[models.factory]", '[models."../factory"]'), "file name"),
    (('transfer_source = "standard"', 'transfer_source = "factory"'), "not a run of the sweep, a checkpoint model"),
])
def test_bad_model_tables_are_refused_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          edit: tuple[str, str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    _plain_state_dict(tmp_path / "plain.pt", 0)
    old, new = edit
    assert old in LISTED
    path = write(tmp_path, LISTED.replace(old, new, 1))
    with pytest.raises(UsageError, match=message):
        load_sweep(path)
    result = CliRunner().invoke(app, ["bench", "--config", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "out").exists()


def test_a_sweep_of_models_alone_needs_no_runs_and_a_checkpoint_model_may_be_the_source(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _plain_state_dict(tmp_path / "plain.pt", 0)
    text = LISTED.replace('transfer_source = "standard"', 'transfer_source = "saved"')
    text = text.replace("[runs.standard]\nepochs = 1\n", "")
    sweep = load_sweep(write(tmp_path, text))
    assert sweep.runs == () and [model.name for model in sweep.models] == ["factory", "saved"]
    assert evaluation_plan(sweep) == [("factory", "whitebox", None), ("factory", "transfer", "saved"),
                                      ("saved", "whitebox", None)]
    with pytest.raises(UsageError, match="nothing to evaluate"):
        load_sweep(write(tmp_path, text.split("[models.factory]")[0], "empty.toml"))


@pytest.mark.slow
def test_models_are_evaluated_beside_the_runs_and_resume_model_by_model(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The listed models are evaluated under every protocol with the runs and named in the leaderboard's header.
    A rerun skips them; a model added to the file is evaluated alone (the training state still belongs to the
    sweep); a changed checkpoint file redoes its own rows only."""
    monkeypatch.chdir(tmp_path)
    _plain_state_dict(tmp_path / "plain.pt", 0)
    config = write(tmp_path, LISTED)

    def bench() -> list[str]:
        result = CliRunner().invoke(app, ["bench", "--config", str(config), "--out", "out", "--quiet"])
        assert result.exit_code == 0, result.output
        return [line.split()[2] for line in result.output.splitlines() if line.startswith("[bench] evaluating")]

    assert bench() == ["standard/whitebox", "factory/whitebox", "factory/transfer", "saved/whitebox",
                       "saved/transfer"]
    documents = {(d.checkpoint.name, d.protocol.name): d for d in
                 (read_result(path) for path in Path("out/results/runs/mnist5k").glob("*.json"))}
    assert documents[("factory", "transfer")].protocol.source["sha256"] == \
        documents[("standard", "whitebox")].checkpoint.sha256
    assert documents[("factory", "whitebox")].checkpoint.extra["model_spec"] == "user_models:honest_cnn"
    board = Path("out/results/leaderboard-listed.md").read_text(encoding="utf-8")
    assert "| factory | user_models:honest_cnn |" in board and "| saved | checkpoint plain.pt (lenet) |" in board

    assert bench() == []
    config.write_text(LISTED + '\n[models.quantised]\nmodel = "user_models:quantised_cnn"\n', encoding="utf-8")
    assert bench() == ["quantised/whitebox", "quantised/transfer"]
    _plain_state_dict(tmp_path / "plain.pt", 1)
    assert bench() == ["saved/whitebox", "saved/transfer"]
    # the stale rows of the old file were replaced, not kept beside the new ones
    assert len(list(Path("out/results/runs/mnist5k").glob("saved__*.json"))) == 2
    # an edited factory module is another model
    monkeypatch.syspath_prepend(str(tmp_path))
    mine = tmp_path / "my_factory.py"
    mine.write_text("from user_models import honest_cnn as build\n", encoding="utf-8")
    config.write_text(config.read_text(encoding="utf-8") + '\n[models.mine]\nmodel = "my_factory:build"\n',
                      encoding="utf-8")
    assert bench() == ["mine/whitebox", "mine/transfer"]
    mine.write_text("from user_models import honest_cnn as build  # edited\n", encoding="utf-8")
    assert bench() == ["mine/whitebox", "mine/transfer"]


@pytest.mark.slow
def test_parallel_workers_evaluate_listed_models_as_the_serial_run_does(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``--workers 2`` the listed models are ready at once (nothing to train) and give the serial table."""
    monkeypatch.chdir(tmp_path)
    _plain_state_dict(tmp_path / "plain.pt", 0)
    text = LISTED.replace('device = "cpu"', 'device = "cpu"\nthreads = 1')
    config = write(tmp_path, text)
    for out, extra in (("serial", []), ("parallel", ["--workers", "2"])):
        result = CliRunner().invoke(app, ["bench", "--config", str(config), "--out", out, "--quiet", *extra])
        assert result.exit_code == 0, result.output
    serial, parallel = (Path(out, "results", "leaderboard-listed.md").read_text(encoding="utf-8")
                        for out in ("serial", "parallel"))
    assert parallel == serial
    assert len(json.loads(Path("parallel/sweep-state.json").read_text())["evaluations"]) == 5


def test_the_sweep_files_in_the_help_examples_exist() -> None:
    """Every ``--config FILE`` of `midbench bench --help`'s examples is a committed sweep file."""
    import re

    from midbench.cli.bench import bench_command

    named = re.findall(r"--config (\S+)", bench_command.__doc__ or "")
    assert named and all((REPO / path).is_file() for path in named), named


def test_the_committed_demo_table_is_what_its_result_files_give() -> None:
    """``results/demo-mnist5k`` is ``midbench demo``'s table (scored against the shipped reference set), kept so
    that ``results/README.md`` can work a scored row from committed files; recomputed byte for byte."""
    folder = REPO / "results" / "demo-mnist5k"
    assert render(folder, "markdown") == (folder / "leaderboard.md").read_text(encoding="utf-8")
    assert render(folder, "csv") == (folder / "leaderboard.csv").read_text(encoding="utf-8")


# ---- several processes per step ([sweep] nproc) -------------------------------------------------------------------

NPROC = TINY.replace('device = "cpu"', 'device = "cpu"\nthreads = 1\nnproc = 2')


@pytest.mark.parametrize(("edit", "message"), [
    (("nproc = 2", "nproc = 0"), "nproc must be at least 1"),
    (("n_examples = 24", "n_examples = 1"), "more processes than the 1 examples"),
])
def test_bad_nproc_is_refused(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        load_sweep(write(tmp_path, NPROC.replace(*edit)))


def test_nproc_is_part_of_the_fingerprint_and_refuses_workers(tmp_path: Path) -> None:
    two = load_sweep(write(tmp_path, NPROC))
    assert two.nproc == 2 and load_sweep(write(tmp_path, TINY)).nproc == 1
    # a sharded evaluation crafts without the transfer cache, so no crafting step would serve it
    assert crafted_sources(two) == [] and crafted_sources(load_sweep(write(tmp_path, TINY))) == ["standard"]
    assert two.fingerprint != load_sweep(write(tmp_path, NPROC.replace("nproc = 2", "nproc = 3"))).fingerprint
    result = CliRunner().invoke(app, ["bench", "--config", str(write(tmp_path, NPROC)), "--out", str(tmp_path / "o"),
                                      "--workers", "2"])
    assert result.exit_code == 2 and "steps cannot run side by side" in result.output, result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_a_step_under_torchrun_keeps_the_exit_code_of_its_processes_error(tmp_path: Path) -> None:
    """A global batch of one leaves the second of two processes without examples: the training step, run under
    torchrun, stops with the processes' one-line usage error and exit 2 (not a failed step)."""
    text = NPROC.replace("batch_size = 64", "batch_size = 1").replace("[runs.mid]\nepochs = 1\nteacher_epochs = 1\n"
                                                                      "first_order = true\npool = \"fgsm-linf,"
                                                                      "pgd-linf\"\n", "")
    assert "[runs.mid]" not in text
    result = CliRunner().invoke(app, ["bench", "--config", str(write(tmp_path, text)), "--out", str(tmp_path / "o"),
                                      "--quiet"])
    assert result.exit_code == 2, result.output
    assert "over 2 processes leaves some without examples" in result.output
