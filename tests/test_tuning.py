"""``midbench tune`` (midbench/bench/tuning.py): every combination of the grid trained, read back on the validation
slice,
the choice made by the documented rule, resumable, and bad tune files refused before anything trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from midbench.bench.tuning import choose, load_tuning, run_folder
from midbench.cli.app import app

TINY = """
[tune]
name = "tiny"
workers = 1

[train]
method = "pgd-at"
dataset = "mnist5k"
arch = "test-cnn"
epochs = 1
n_train = 128
val_size = 48
attack_steps = 1
device = "cpu"

[grid]
lr = [1e-3, 1e-2]
batch_size = [32, 64]
"""


def _row(select: float, clean: float, flags: tuple[str, ...] = ()) -> dict:
    return {"select": select, "val_clean_acc": clean, "flags": list(flags)}


def test_the_choice_follows_the_documented_rule() -> None:
    rows = [_row(0.50, 0.90), _row(0.70, 0.80), _row(0.90, 0.99, ("training-overfitting",)), _row(0.70, 0.95)]
    # the flagged run is never chosen; of the two at 0.70 the one with the higher clean accuracy wins
    assert choose(rows, None) == 3
    assert choose(rows, 0.96) is None  # only the flagged run is clean enough
    assert choose(rows, 0.85) == 3
    assert choose([_row(0.6, 0.9), _row(0.6, 0.9)], None) == 0  # a full tie goes to the earlier combination
    assert choose([], None) is None


def test_a_run_is_found_again_by_its_settings() -> None:
    assert run_folder({"lr": 0.001, "batch_size": 64}) == run_folder({"lr": 0.001, "batch_size": 64})
    assert run_folder({"lr": 0.001, "batch_size": 64}) != run_folder({"lr": 0.001, "batch_size": 128})
    assert "/" not in run_folder({"pool": "a/b"})


@pytest.mark.slow
def test_tune_trains_the_grid_chooses_and_resumes(tmp_path: Path) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    config = out / "tune.toml"
    config.write_text(TINY, encoding="utf-8")
    arguments = ["tune", "--config", str(config), "--work-dir", str(work)]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    document = json.loads((out / "tuning.json").read_text(encoding="utf-8"))
    settings = [row["settings"] for row in document["runs"]]
    assert settings == [{"lr": 1e-3, "batch_size": 32}, {"lr": 1e-3, "batch_size": 64},
                        {"lr": 1e-2, "batch_size": 32}, {"lr": 1e-2, "batch_size": 64}]
    assert document["select"] == "val_pgd10_acc" and "no test image" in document["split"]
    for row in document["runs"]:
        log = [json.loads(line) for line in (work / row["folder"] / "log.jsonl").read_text().splitlines()]
        assert row["select"] == log[-1]["val_pgd10_acc"] and row["val_clean_acc"] == log[-1]["val_clean_acc"]
        assert 0 <= row["select"] <= row["val_clean_acc"] <= 1  # PGD accuracy counts clean-correct examples only
    chosen = document["chosen"]
    assert chosen == choose(document["runs"], None)
    best = (out / "best.toml").read_text(encoding="utf-8")
    assert f"lr = {settings[chosen]['lr']!r}" in best and f"batch_size = {settings[chosen]['batch_size']}" in best
    assert "★" in (out / "tuning.md").read_text(encoding="utf-8")
    # a rerun trains nothing and writes the same figures; a value added to the grid trains only its runs
    before = (out / "tuning.json").read_text(encoding="utf-8")
    again = CliRunner().invoke(app, arguments)
    assert again.exit_code == 0 and ": training" not in again.output and again.output.count("trained earlier") == 4
    assert (out / "tuning.json").read_text(encoding="utf-8") == before
    config.write_text(TINY.replace("batch_size = [32, 64]", "batch_size = [32, 64, 128]"), encoding="utf-8")
    grown = CliRunner().invoke(app, arguments)
    assert grown.exit_code == 0, grown.output
    assert grown.output.count(": training") == 2 and grown.output.count("trained earlier") == 4


@pytest.mark.parametrize(("edit", "message"), [
    (("lr = [1e-3, 1e-2]", "lr = 1e-3"), "non-empty list"),
    (("lr = [1e-3, 1e-2]", "lr = []"), "non-empty list"),
    (("lr = [1e-3, 1e-2]", "lr = [1e-3, 1e-3]"), "a value twice"),
    (("lr = [1e-3, 1e-2]", "lrr = [1e-3, 1e-2]"), "lrr"),
    (("lr = [1e-3, 1e-2]", "lr = [1e-3, -1.0]"), "lr = -1.0"),
    (("lr = [1e-3, 1e-2]", 'dataset = ["mnist5k"]'), "not how"),
    (('arch = "test-cnn"', 'arch = "test-cnn"\nlr = 1e-3'), "both in [train] and in [grid]"),
    (("workers = 1", "workers = 0"), "positive integer"),
    (("workers = 1", "min_clean = 1.5"), "min_clean"),
    (("workers = 1", "wrkers = 1"), "unknown key"),
    (("[grid]", "[grids]"), "unknown table"),
])
def test_bad_tune_files_are_refused_before_training(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    config = tmp_path / "tune.toml"
    config.write_text(TINY.replace(*edit), encoding="utf-8")
    result = CliRunner().invoke(app, ["tune", "--config", str(config), "--work-dir", str(tmp_path / "work")])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "work").exists() and not (tmp_path / "tuning.json").exists()


def test_a_select_key_that_is_not_logged_names_the_keys_there_are(tmp_path: Path) -> None:
    from midbench.bench.tuning import read_run
    from midbench.errors import UsageError

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "log.jsonl").write_text(json.dumps({"epoch": 1, "seconds": 1.0, "val_clean_acc": 0.9,
                                                  "val_pgd10_acc": 0.5}) + "\n", encoding="utf-8")
    with pytest.raises(UsageError, match="val_pgd10_acc"):
        read_run(folder, {"lr": 0.1}, "val_pgd40_acc")
    assert load_tuning  # the loader is the CLI's (tested above through the command)


COMMITTED_TUNE_FILES = sorted((Path(__file__).resolve().parents[1] / "results" / "tuning").glob("*/tune.toml"))


@pytest.mark.parametrize("path", COMMITTED_TUNE_FILES, ids=lambda path: path.parent.name)
def test_committed_tune_files_parse_and_every_run_is_a_valid_recipe(path: Path) -> None:
    """The shipped tunings of the baselines: each file loads, every grid run's config validates and builds its
    method (so a rerun of the documented command cannot fail on a typo after hours of training)."""
    from midbench.data import get_dataset
    from midbench.defenses import build_task

    tuning = load_tuning(path)
    assert tuning.runs and tuning.min_clean is not None
    for _, config in tuning.runs:
        build_task(config.validate(), get_dataset(config.dataset))


def test_every_baseline_has_a_committed_tuning() -> None:
    from midbench.evaluation.expected import EXPECTED_RANGES

    tuned = {path.parent.name.removeprefix("mnist5k-") for path in COMMITTED_TUNE_FILES}
    assert {"pgd-at", "trades", "mart", "fast-at", "msd"} <= tuned <= {m for d, m in EXPECTED_RANGES if d == "mnist5k"}


@pytest.mark.parametrize("path", [path.parent / "tuning.json" for path in COMMITTED_TUNE_FILES
                                  if (path.parent / "tuning.json").exists()], ids=lambda path: path.parent.name)
def test_committed_tuning_tables_are_what_their_json_gives(path: Path) -> None:
    """A shipped tuning.md (and best.toml's choice) is recomputed from tuning.json: nobody edited a figure."""
    from midbench.bench.tuning import tuning_table

    document = json.loads(path.read_text(encoding="utf-8"))
    assert tuning_table(document) == (path.parent / "tuning.md").read_text(encoding="utf-8")
    assert (document.get("chosen") is None) == (not (path.parent / "best.toml").exists())
