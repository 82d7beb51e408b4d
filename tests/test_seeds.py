"""Sweeps over several training seeds (``seeds = [..]``): parsing, replicates, and the table across seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from midbench.bench.plan import describe_plan
from midbench.bench.sweep import load_sweep
from midbench.cli.app import app
from midbench.errors import UsageError
from midbench.evaluation import scoring
from midbench.reporting.leaderboard import ranked_frames
from midbench.reporting.seeds import seed_dirs, seed_tables

SEEDED = """
[sweep]
name = "seeded"
dataset = "mnist5k"
seeds = [0, 1]
device = "cpu"
threads = 1
protocols = ["whitebox"]

[eval]
n_examples = 16
unknown_attacks = true
# two threat models keep the profile cheap: l2 is unseen by both runs, so every score column has a value
threat_models = ["linf", "l2"]

[train]
arch = "lenet"
batch_size = 64
n_train = 200
val_size = 20
val_pgd_steps = 1
attack_steps = 1

[runs.standard]
epochs = 1

[runs.pgd-at]
epochs = 1
"""


def write(folder: Path, text: str) -> Path:
    path = folder / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("seeds", "message"), [
    ('["0", "1"]', "seeds"),
    ("[0.5, 1]", "seeds"),
    ("[true]", "seeds"),
    ("3", "seeds"),
    ("[]", "distinct non-negative"),
    ("[1, 1]", "distinct non-negative"),
    ("[-1, 0]", "distinct non-negative"),
    ("[0, 1]\nseed = 0", "both seed and seeds"),
])
def test_bad_seeds_are_usage_errors_and_nothing_is_written(tmp_path: Path, seeds: str, message: str) -> None:
    path = write(tmp_path, SEEDED.replace("seeds = [0, 1]", f"seeds = {seeds}"))
    with pytest.raises(UsageError, match=message):
        load_sweep(path)
    result = CliRunner().invoke(app, ["bench", "--config", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and not (tmp_path / "out").exists()


def test_each_replicate_trains_every_run_with_its_seed(tmp_path: Path) -> None:
    sweep = load_sweep(write(tmp_path, SEEDED))
    assert sweep.seeds == (0, 1)
    for seed in sweep.seeds:
        replicate = sweep.replicate(seed)
        assert replicate.seed == seed and not replicate.seeds
        assert {run.config.seed for run in replicate.runs} == {seed}
    assert sweep.replicate(0).fingerprint != sweep.replicate(1).fingerprint
    plan = describe_plan(sweep)
    assert len(plan) == 2 * len(describe_plan(sweep.replicate(0)))
    assert plan[0].startswith("seed 0: train standard") and any(line.startswith("seed 1: ") for line in plan)


def test_adding_a_seed_keeps_the_finished_replicates(tmp_path: Path) -> None:
    two = load_sweep(write(tmp_path, SEEDED))
    three = load_sweep(write(tmp_path, SEEDED.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")))
    assert [two.replicate(s).fingerprint for s in (0, 1)] == [three.replicate(s).fingerprint for s in (0, 1)]
    # a change of what is trained is a change of every replicate
    longer = load_sweep(write(tmp_path, SEEDED.replace("[runs.pgd-at]\nepochs = 1", "[runs.pgd-at]\nepochs = 2")))
    assert longer.replicate(0).fingerprint != two.replicate(0).fingerprint


def test_one_seed_gives_the_example_bootstrap_exactly() -> None:
    values = np.random.default_rng(3).random(50)
    assert scoring.crossed_interval(values[None, :]) == scoring.bootstrap_interval(values)


def test_the_crossed_interval_covers_the_spread_between_seeds() -> None:
    rng = np.random.default_rng(4)
    examples = rng.random(200)
    # the same examples under three seeds whose levels differ: the interval must reach past the example bootstrap
    # of the mean row, which knows nothing of the seeds
    matrix = np.stack([examples + shift for shift in (-0.1, 0.0, 0.1)])
    low, high = scoring.crossed_interval(matrix)
    mean_low, mean_high = scoring.bootstrap_interval(matrix.mean(axis=0))
    assert low <= matrix.mean() <= high
    assert high - low > mean_high - mean_low
    # seeds that agree exactly give back the example bootstrap's width, up to the resampling's noise
    same = np.stack([examples] * 3)
    same_low, same_high = scoring.crossed_interval(same)
    example_low, example_high = scoring.bootstrap_interval(examples)
    assert same_high - same_low == pytest.approx(example_high - example_low, rel=0.25)


def test_ties_across_seeds_are_paired_by_seed_and_example() -> None:
    rng = np.random.default_rng(5)
    base = rng.random((3, 100))
    noise = rng.normal(0, 0.01, (3, 100))
    assert scoring.ranks_with_ties([base + 0.5, base, base + noise]) == [1, 2, 2]
    # a small offset on every cell is far inside the spread of the examples (unpaired, the means differ by 0.02
    # against a standard error near 0.024) but is the whole of the paired difference: significant only if paired
    assert scoring.ranks_with_ties([base + 0.02 + rng.normal(0, 0.002, (3, 100)), base]) == [1, 2]
    # the same matrices but one model measured on two seeds only: never tied with a three-seed leader
    assert scoring.ranks_with_ties([base, base[:2]]) == [1, 2]


def test_a_seed_set_in_a_run_or_in_train_is_refused_beside_seeds(tmp_path: Path) -> None:
    for edit in (("[runs.standard]\nepochs = 1", "[runs.standard]\nepochs = 1\nseed = 3"),
                 ("[train]\n", "[train]\nseed = 3\n")):
        path = write(tmp_path, SEEDED.replace(*edit))
        with pytest.raises(UsageError, match="remove it there"):
            load_sweep(path)


def test_seed_offset_keeps_two_runs_of_one_recipe_apart_in_every_replicate(tmp_path: Path) -> None:
    """An independent transfer source (``seed_offset``) trains with the replicate's seed plus its offset, so it is
    never the same model as the main source; without ``seeds`` the offset is added to the sweep's seed."""
    text = SEEDED.replace("[runs.pgd-at]", "[runs.standard-b]\nmethod = \"standard\"\nseed_offset = 100\nepochs = 1"
                          "\n\n[runs.pgd-at]")
    sweep = load_sweep(write(tmp_path, text))
    for seed in sweep.seeds:
        replicate = sweep.replicate(seed)
        assert (replicate.run("standard").config.seed, replicate.run("standard-b").config.seed) == (seed, seed + 100)
    single = load_sweep(write(tmp_path, text.replace("seeds = [0, 1]", "seed = 7")))
    assert (single.run("standard").config.seed, single.run("standard-b").config.seed) == (7, 107)
    for bad in ("seed_offset = -1", "seed_offset = 1.5", "seed_offset = true"):
        with pytest.raises(UsageError, match="seed_offset must be"):
            load_sweep(write(tmp_path, text.replace("seed_offset = 100", bad)))


def _frame(rows: list[dict[str, object]]) -> pd.DataFrame:
    """A ranked table as :func:`midbench.reporting.leaderboard.ranked_frames` gives it, with the columns seeds reads."""
    base = {"method": "pgd-at", "arch": "lenet", "protocol": "whitebox", "n": 4, "reference": "set",
            "indices_sha256": "abc", "eps_linf": 0.3, "at_baseline": True, "flags": "", "known_worst": 50.0,
            "unknown_worst": 10.0, "autoattack": 40.0, "_survivors": None}
    return pd.DataFrame([{**base, **row} for row in rows])


def test_flags_count_per_seed_and_a_model_of_some_seeds_is_shown_with_them(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import midbench.reporting.seeds as seeds_module

    values = np.linspace(0.2, 0.8, 4)
    frames = {
        0: _frame([{"name": "a", "clean": 90.0, "common_unknown_score": 60.0, "_common_values": values,
                    "flags": "catastrophic-overfitting"},
                   {"name": "b", "clean": 80.0, "common_unknown_score": 50.0, "_common_values": values - 0.1},
                   {"name": "only-0", "clean": 70.0, "common_unknown_score": 40.0, "_common_values": values}]),
        1: _frame([{"name": "a", "clean": 92.0, "common_unknown_score": 62.0, "_common_values": values + 0.02},
                   {"name": "b", "clean": 82.0, "common_unknown_score": 52.0, "_common_values": values - 0.08}]),
    }
    monkeypatch.setattr(seeds_module, "ranked_frames",
                        lambda folder, dataset=None, references=(): {("mnist5k", "whitebox"): frames[int(str(folder))]})
    table = seed_tables({0: Path("0"), 1: Path("1")})[("mnist5k", "whitebox")].set_index("name")
    assert table.loc["a", "flags"] == "catastrophic-overfitting (1 of 2 seeds)"
    assert table.loc["a", "clean"] == 91.0 and table.loc["a", "clean_sd"] == pytest.approx(np.std([90, 92], ddof=1),
                                                                                              abs=0.01)
    assert table.loc["only-0", "seeds"] == 1 and table.loc["a", "seeds"] == 2
    # flagged in one seed: never the best AT, so the Δ column is measured from b
    assert table.loc["b", "delta_common_unknown_vs_at"] == 0.0
    frames[1] = pd.concat([frames[1], frames[1].iloc[[0]]], ignore_index=True)  # a model twice in one replicate
    with pytest.raises(UsageError, match="two rows"):
        seed_tables({0: Path("0"), 1: Path("1")})


def test_the_listed_seeds_alone_make_the_table(tmp_path: Path) -> None:
    for seed in (0, 1, 2):
        (tmp_path / f"seed-{seed}" / "runs").mkdir(parents=True)
    assert list(seed_dirs(tmp_path)) == [0, 1, 2]
    (tmp_path / "seeds.json").write_text('{"seeds": [0, 2]}', encoding="utf-8")
    assert list(seed_dirs(tmp_path)) == [0, 2]


@pytest.fixture(scope="module")
def seeded_sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seeded")
    result = CliRunner().invoke(app, ["bench", "--config", str(write(root, SEEDED)), "--out", str(root / "out"),
                                      "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "out" / "results"


@pytest.mark.slow
def test_the_table_across_seeds_is_the_mean_of_the_replicates_tables(seeded_sweep: Path) -> None:
    dirs = seed_dirs(seeded_sweep)
    assert list(dirs) == [0, 1]
    per_seed = {seed: ranked_frames(folder)[("mnist5k", "whitebox")].set_index("name") for seed, folder in dirs.items()}
    # two seeds train two different models per run
    assert per_seed[0].loc["standard", "clean"] != per_seed[1].loc["standard", "clean"] or \
        per_seed[0].loc["pgd-at", "clean"] != per_seed[1].loc["pgd-at", "clean"]
    table = seed_tables(dirs)[("mnist5k", "whitebox")].set_index("name")
    for name in ("standard", "pgd-at"):
        row = table.loc[name]
        assert row["seeds"] == 2
        for column in ("clean", "common_unknown_score", "ua_mean"):
            values = [float(per_seed[seed].loc[name, column]) for seed in dirs]
            assert row[column] == pytest.approx(np.mean(values), abs=0.01)
            assert row[f"{column}_sd"] == pytest.approx(np.std(values, ddof=1), abs=0.01)
            assert row[f"{column}_lo"] <= row[column] <= row[f"{column}_hi"]
    board = (seeded_sweep / "leaderboard-seeded.md").read_text(encoding="utf-8")
    assert "seeds 0, 1" in board and "— 2 seeds" in board and " ± " in board
    for seed in dirs:  # every replicate keeps its own tables
        assert (seeded_sweep / f"seed-{seed}" / "leaderboard-seeded.md").is_file()


@pytest.mark.slow
def test_the_leaderboard_command_reads_a_folder_of_replicates(seeded_sweep: Path) -> None:
    result = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(seeded_sweep), "--format", "csv"])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0].split(",")
    assert {"seeds", "common_unknown_score_sd", "common_unknown_score_lo", "clean_sd"} <= set(header)
    refused = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(seeded_sweep), "--columns", "pgd-linf"])
    assert refused.exit_code == 2 and "across seeds" in refused.output
