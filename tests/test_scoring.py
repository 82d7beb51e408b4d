"""Scores against fixed references (docs/scoring.md): the formula, independence from the other rows, refusal of
references that do not apply, intervals and ties, the unranked noise floor, the flags that keep a model out of
"best AT", calibrated ladders as registry data, and `midbench calibrate` end to end at tiny size."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_sets import REGISTRY, default_plans, write_profiled_run, write_reference_set
from typer.testing import CliRunner

from midbench.cli.app import app
from midbench.evaluation import scoring
from midbench.evaluation.metrics import catastrophic_overfitting
from midbench.reporting.leaderboard import render, tables

ATA = {"linf": [.9, .8, .6, .5, .4], "l2": [.7, .6, .4, .3, .2], "l1": [.6, .5, .2, .1, .1],
       "flow": [.9, .8, .7, .6, .5]}
#: four models: their curves per threat model (10 examples: accuracies are exact in tenths) and what they saw
MODELS = {
    "pgd-at-a": ({"linf": [.9, .8, .6, .5, .4], "l2": [.5, .4, .2, .1, 0], "l1": [.4, .3, .1, 0, 0],
                  "flow": [.8, .6, .4, .2, .1], "noise": [.9, .9, .9, .9, .9]}, {"linf"}),
    "standard-b": ({"linf": [.5, .3, 0, 0, 0], "l2": [.8, .5, .3, .2, .1], "l1": [.6, .4, .1, .1, 0],
                    "flow": [.5, .3, .1, 0, 0], "noise": [1, 1, 1, 1, 1]}, set()),
    "msd-c": ({"linf": [.8, .8, .6, .4, .2], "l2": [.7, .6, .4, .3, .2], "l1": [.5, .5, .2, .1, .1],
               "flow": [.9, .9, .8, .7, .6], "noise": [.2, .2, .2, .2, .2]}, {"linf", "l2"}),
    "trades-d": ({"linf": [1, 1, 1, .9, .9], "l2": [.6, .5, .4, .3, .2], "l1": [.4, .4, .2, .2, .1],
                  "flow": [.7, .7, .6, .5, .4], "noise": [1, 1, 1, 1, 1]}, {"linf"}),
}


def _write_table(results: Path, names: list[str]) -> None:
    for minutes, name in enumerate(names):
        accuracies, seen = MODELS[name]
        write_profiled_run(results, name, accuracies, seen, minutes)


def _rows(results: Path, reference: Path, common: bool = False) -> dict[str, dict[str, float]]:
    """Each row's scores; with ``common`` also the common-unknown score and UA mean, which are over the threat models
    no model of the table has seen, so they move with the table's set of common threat models, and only then."""
    (table,) = tables(results, references=[reference]).values()
    columns = [c for c in table.columns if c.startswith("score_")] + ["unknown_score", "unknown_score_lo",
                                                                          "unknown_score_hi"]
    if common:
        columns += ["common_unknown_score", "common_unknown_score_lo", "common_unknown_score_hi", "ua_mean"]
    return {row["name"]: {c: row[c] for c in columns} for _, row in table.iterrows()}


def _common(results: Path, reference: Path) -> list[str]:
    (table,) = tables(results, references=[reference]).values()
    return table.attrs["common_unknown"]


# -------------------------------------------------------------------------------------------------- the formula

def test_a_threat_model_score_is_the_sum_of_accuracies_over_the_sum_of_references() -> None:
    robust = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [1, 1, 1]], dtype=bool)  # accuracies .75 .5 .25
    ata = [1.0, 0.5, 0.5]
    assert scoring.threat_model_score(robust, ata) == pytest.approx((.75 + .5 + .25) / 2.0)
    assert scoring.contributions(robust, ata).mean() == pytest.approx((.75 + .5 + .25) / 2.0)
    assert scoring.threat_model_score(robust, [0.0, 0.0, 0.0]) is None  # a reference at 0 everywhere scores nothing


def test_table_scores_are_hand_computable_from_the_reference(tmp_path: Path) -> None:
    _write_table(tmp_path / "results", list(MODELS))
    reference = write_reference_set(tmp_path / "ref", ATA)
    rows = _rows(tmp_path / "results", reference)
    # linf: Σ ATA 3.2; pgd-at-a's curve sums to 3.2 → 100; standard-b's to 0.8 → 25
    assert rows["pgd-at-a"]["score_linf"] == pytest.approx(100.0)
    assert rows["standard-b"]["score_linf"] == pytest.approx(25.0)
    # trades-d is above its reference at L∞: a score over 100 is allowed (it beats the reference)
    assert rows["trades-d"]["score_linf"] == pytest.approx(100 * 4.8 / 3.2)
    # noise is a floor: reported as a curve, never a score, and never in the unknown score
    assert "score_noise" not in rows["pgd-at-a"]
    unseen = ["l2", "l1", "flow"]
    expected = np.mean([rows["pgd-at-a"][f"score_{m}"] for m in unseen])
    assert rows["pgd-at-a"]["unknown_score"] == pytest.approx(expected, abs=0.01)


@pytest.mark.parametrize("removed", list(MODELS))
def test_removing_a_model_leaves_every_other_row_unchanged(tmp_path: Path, removed: str) -> None:
    reference = write_reference_set(tmp_path / "ref", ATA)
    _write_table(tmp_path / "all", list(MODELS))
    _write_table(tmp_path / "fewer", [name for name in MODELS if name != removed])
    same_common = _common(tmp_path / "all", reference) == _common(tmp_path / "fewer", reference)
    everything = _rows(tmp_path / "all", reference, common=same_common)
    fewer = _rows(tmp_path / "fewer", reference, common=same_common)
    assert set(fewer) == set(MODELS) - {removed}
    for name, row in fewer.items():
        # per threat model, unknown score and interval never move; the common-unknown score moves only when the
        # table's common threat models do (removing msd-c, the only model that saw l2, adds l2 to them)
        assert row == pytest.approx(everything[name], nan_ok=True), name
    assert same_common == (removed != "msd-c")


# -------------------------------------------------------------------------------------- references that apply

def test_a_threat_model_no_set_has_is_a_curve_and_leaves_every_score_as_it_was(tmp_path: Path) -> None:
    """Rows that also climbed a threat model without a reference (the corruptions, before their set is calibrated)
    keep every score they have without it, the common-unknown one included, and the table says why it is not
    scored."""
    reference = write_reference_set(tmp_path / "ref", ATA)
    _write_table(tmp_path / "plain", list(MODELS))
    for minutes, name in enumerate(MODELS):
        accuracies, seen = MODELS[name]
        write_profiled_run(tmp_path / "more", name, {**accuracies, "fog": [.9, .7, .5, .3, .1]}, seen, minutes)
    plain, more = (_rows(tmp_path / folder, reference, common=True) for folder in ("plain", "more"))
    assert set(more) == set(plain)
    for name, row in more.items():
        assert row == pytest.approx(plain[name], nan_ok=True), name
    (table,) = tables(tmp_path / "more", references=[reference]).values()
    assert table["curve_fog"].notna().all() and "score_fog" not in table.columns
    assert any(note.startswith("fog: no reference set") for note in table.attrs["score_notes"])
    assert "fog" not in table.attrs["unranked"]  # not a floor: an adversary without a reference yet


def test_whether_a_threat_model_is_scored_is_decided_per_row(tmp_path: Path) -> None:
    """Rows of another architecture family whose set has a curve for fog leave the LeNet rows (whose set has none)
    as they are: removing them changes no LeNet row's unknown score."""
    lenet_set = write_reference_set(tmp_path / "lenet", ATA)
    other_set = write_reference_set(tmp_path / "other", {**ATA, "fog": [.9, .7, .5, .3, .1]}, archs=("test-cnn",))
    for folder in ("mixed", "lenet-only"):
        for minutes, name in enumerate(MODELS):
            accuracies, seen = MODELS[name]
            write_profiled_run(tmp_path / folder, name, {**accuracies, "fog": [.8, .6, .4, .2, 0]}, seen, minutes)
    for minutes, name in enumerate(("pgd-at-a", "msd-c")):
        accuracies, seen = MODELS[name]
        write_profiled_run(tmp_path / "mixed", f"other-{name}", {**accuracies, "fog": [.9, .7, .5, .3, .1]}, seen,
                           10 + minutes, arch="test-cnn", method=name.rpartition("-")[0])

    def unknown(folder: str, references: list[Path]) -> dict[str, float]:
        (table,) = tables(tmp_path / folder, references=references).values()
        return {row["name"]: row["unknown_score"] for _, row in table.iterrows()}

    mixed, alone = unknown("mixed", [lenet_set, other_set]), unknown("lenet-only", [lenet_set])
    assert all(mixed[name] == pytest.approx(alone[name]) for name in alone)
    assert set(mixed) - set(alone) == {"other-pgd-at-a", "other-msd-c"}


def test_threat_models_split_between_two_sets_are_each_scored_against_their_own(tmp_path: Path) -> None:
    """Two sets of one dataset and family, each with some threat models (as the corruptions have a set of their
    own): every threat model is scored as against one set holding all curves, and the rows name both sets."""
    _write_table(tmp_path / "results", list(MODELS))
    whole = _rows(tmp_path / "results", write_reference_set(tmp_path / "whole", ATA))
    core = write_reference_set(tmp_path / "core", {model: ATA[model] for model in ("linf", "l2")})
    extra = write_reference_set(tmp_path / "extra", {model: ATA[model] for model in ("l1", "flow")})
    (table,) = tables(tmp_path / "results", references=[core, extra]).values()
    split = {row["name"]: row for _, row in table.iterrows()}
    for name, row in whole.items():
        for column in (c for c in row if c.startswith("score_")):
            assert split[name][column] == pytest.approx(row[column], nan_ok=True), (name, column)
        assert split[name]["reference"] == "core + extra"
    assert table.attrs["reference_sets"] == ["core", "extra"]


def test_rows_without_a_matching_reference_have_curves_but_no_scores(tmp_path: Path) -> None:
    _write_table(tmp_path / "results", list(MODELS))
    other = write_reference_set(tmp_path / "other", ATA, archs=("preact-resnet18",))
    own = write_reference_set(tmp_path / "own", ATA)
    # a set for another architecture is refused when it covers no row
    result = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(tmp_path / "results"),
                                      "--references", str(other), "--output", str(tmp_path / "board.md")])
    assert result.exit_code == 2 and "not lenet" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "board.md").exists()
    # with no set for lenet at all (the shipped ones are for other ladders), the table says so
    board = render(tmp_path / "results", references=[own])
    assert "ATA being the fixed reference set own" in board
    (table,) = tables(tmp_path / "results", references=[]).values()
    if table["common_unknown_score"].isna().all():  # no shipped set matches the default ladders
        assert "No reference set matches" in render(tmp_path / "results")
        assert table["ua_mean"].notna().all()  # the plain mean needs no reference


def test_a_reference_for_another_dataset_is_refused_with_exit_2(tmp_path: Path) -> None:
    _write_table(tmp_path / "results", ["pgd-at-a"])
    cifar = write_reference_set(tmp_path / "cifar", ATA, datasets=("cifar10",))
    result = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(tmp_path / "results"),
                                      "--references", str(cifar)])
    assert result.exit_code == 2, result.output
    assert "is for dataset(s) cifar10, not mnist5k" in result.output


@pytest.mark.parametrize("problem", ["ladder", "attack-version"])
def test_a_threat_model_measured_otherwise_than_its_reference_is_not_scored(tmp_path: Path, problem: str) -> None:
    _write_table(tmp_path / "results", ["pgd-at-a", "standard-b"])
    plans = default_plans(set())
    linf_attacks = [attack.key for attack in plans["linf"].rungs[0].attacks]
    overrides = ({"strengths": {"linf": [0.2, 0.3, 0.5, 0.75, 1.0]}} if problem == "ladder"
                 else {"attacks": {"linf": [key.replace("@1", "@2") for key in linf_attacks]}})
    reference = write_reference_set(tmp_path / "ref", ATA, **overrides)
    (table,) = tables(tmp_path / "results", references=[reference]).values()
    assert table["score_linf"].isna().all() and table["score_l2"].notna().all()
    notes = " ".join(table.attrs["score_notes"])
    assert ("ladder" in notes) if problem == "ladder" else ("attacks" in notes)


@pytest.mark.parametrize("content", ["not json", json.dumps({"schema": "other"}),
                                     json.dumps({"schema": "midbench.reference/1", "name": "x"})])
def test_an_unreadable_reference_is_exit_3(tmp_path: Path, content: str) -> None:
    _write_table(tmp_path / "results", ["pgd-at-a"])
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "reference.json").write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(tmp_path / "results"),
                                      "--references", str(tmp_path / "bad")])
    assert result.exit_code == 3, result.output
    assert len(result.output.strip().splitlines()) == 1


# -------------------------------------------------------------------------------------------- intervals, ties

def test_bootstrap_intervals_bracket_the_score_and_repeat_exactly(tmp_path: Path) -> None:
    values = np.array([0.0, 0.5, 1.0, 1.0, 0.25, 0.75, 0.0, 1.0])
    low, high = scoring.bootstrap_interval(values)
    assert low <= values.mean() <= high and (low, high) == scoring.bootstrap_interval(values)
    assert scoring.bootstrap_interval(np.ones(20)) == (1.0, 1.0)  # no spread, no width
    _write_table(tmp_path / "results", list(MODELS))
    rows = _rows(tmp_path / "results", write_reference_set(tmp_path / "ref", ATA))
    for row in rows.values():
        assert row["unknown_score_lo"] <= row["unknown_score"] <= row["unknown_score_hi"]


def test_identical_models_tie_and_far_apart_ones_do_not() -> None:
    rng = np.random.default_rng(1)
    strong = rng.random(200) * 0.2 + 0.8
    weak = rng.random(200) * 0.2
    same = strong.copy()
    assert scoring.ranks_with_ties([strong, same, weak]) == [1, 1, 3]
    assert scoring.ranks_with_ties([strong, None, weak]) == [1, 2, 3]
    # rows on other examples are never tied, even with equal values
    assert scoring.ranks_with_ties([strong, same], ["a", "b"]) == [1, 2]


def test_tables_rank_with_ties(tmp_path: Path) -> None:
    """Two rows with the same curves on the same examples share a rank."""
    results = tmp_path / "results"
    accuracies, seen = MODELS["standard-b"]
    write_profiled_run(results, "standard-b", accuracies, seen, 0)
    write_profiled_run(results, "standard-c", accuracies, seen, 1, method="standard")
    write_profiled_run(results, "trades-d", *MODELS["trades-d"], 2)
    (table,) = tables(results, references=[write_reference_set(tmp_path / "ref", ATA)]).values()
    ranks = dict(zip(table["name"], table["rank"], strict=True))
    assert ranks["standard-b"] == ranks["standard-c"]


# ----------------------------------------------------------------------------------------------------- flags

def test_catastrophic_overfitting_needs_a_large_whitebox_gap() -> None:
    assert catastrophic_overfitting(0.75, 0.013, "whitebox") is not None  # the shipped fast-AT: 75.3% vs 1.3%
    assert catastrophic_overfitting(0.58, 0.48, "whitebox") is None  # PGD-AT: a 10-point gap is ordinary
    assert catastrophic_overfitting(0.75, 0.013, "transfer") is None  # crafted on the source: says nothing
    assert catastrophic_overfitting(None, 0.013, "whitebox") is None


def test_a_flagged_baseline_is_not_best_at(tmp_path: Path) -> None:
    from midbench.reporting.leaderboard import PROTECTING_FLAGS, is_flagged

    assert is_flagged("zero-gradients,catastrophic-overfitting") and not is_flagged("zero-gradients")
    results = tmp_path / "results"
    _write_table(results, list(MODELS))
    reference = write_reference_set(tmp_path / "ref", ATA)
    (before,) = tables(results, references=[reference]).values()
    # flag the best adversarially trained row (Δ = 0) by editing its result's flags
    top = max((row for _, row in before.iterrows() if row["name"] != "standard-b"),
              key=lambda row: row["delta_common_unknown_vs_at"])["name"]
    (path,) = [p for p in (results / "runs" / "mnist5k").glob("*.json") if p.name.startswith(top)]
    document = json.loads(path.read_text(encoding="utf-8"))
    document["flags"] = [{"code": PROTECTING_FLAGS[0], "message": "planted"}]
    path.write_text(json.dumps(document), encoding="utf-8")
    (after,) = tables(results, references=[reference]).values()
    assert after.attrs["excluded_from_best_at"] == [top]
    delta = dict(zip(after["name"], after["delta_common_unknown_vs_at"], strict=True))
    assert delta[top] != 0.0 or np.isnan(delta[top])
    assert "Excluded from best AT" in render(results, references=[reference])


# ----------------------------------------------------------------------------------------- ladders as data

GOOD_LADDER = '[[ladder]]\nthreat_model = "linf"\ndatasets = ["mnist5k"]\nstrengths = [0.2, 0.4, 0.8]\n'


@pytest.mark.parametrize(("content", "message"), [
    (GOOD_LADDER.replace("[0.2, 0.4, 0.8]", "[0.4, 0.2, 0.8]"), "strictly increasing"),
    (GOOD_LADDER.replace('"linf"', '"linff"'), "threat model"),
    (GOOD_LADDER.replace('["mnist5k"]', '"mnist5k"'), "datasets must be"),
    (GOOD_LADDER.replace("[0.2, 0.4, 0.8]", "[0.2, 1.5]"), "outside (0, 1]"),
    (GOOD_LADDER + "colour = 1\n", "unknown key"),
])
def test_bad_ladders_are_refused_with_one_line(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "ladders.toml").write_text(content, encoding="utf-8")
    result = CliRunner().invoke(app, ["attacks", "list", "--registry-dir", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_a_calibrated_ladder_replaces_the_default_on_its_datasets(tmp_path: Path) -> None:
    from midbench.attacks.plans import profile_plan
    from midbench.attacks.specs import load_registry
    from midbench.data.datasets import get_dataset

    (tmp_path / "ladders.toml").write_text(GOOD_LADDER.replace('["mnist5k"]', '["fashion-mnist"]'),
                                           encoding="utf-8")
    registry = load_registry([tmp_path])
    eps = get_dataset("mnist5k").eps
    (on,) = profile_plan(registry, eps, set(), dataset="fashion-mnist", only=("linf",))
    (off,) = profile_plan(registry, eps, set(), dataset="cifar10", only=("linf",))
    assert [rung.strength for rung in on.rungs] == [0.2, 0.4, 0.8]
    assert [rung.strength for rung in off.rungs] == list(REGISTRY.threat_models["linf"].ladder)
    assert on.rungs[-1].attacks[0].eps == pytest.approx(0.8 * eps["Linf"])


# ---------------------------------------------------------------------------------------------- calibrate

TINY = """
[calibrate]
name = "tiny-lenet"
dataset = "mnist5k"
grid = [0.1, 0.3, 0.6, 1.0]
targets = [0.9, 0.5]
n_examples = 24
seed = 0
device = "cpu"
batch_size = 64

[train]
method = "pgd-at"
arch = "test-cnn"
epochs = 1
batch_size = 64
n_train = 256
val_size = 48

[references.linf]
train_attack = "pgd-linf"
attack_steps = 2

[references.rot-trans]
train_attack = "rot-trans-coarse"
"""


@pytest.mark.parametrize(("edit", "message"), [
    (("seed = 0", 'seed = "zero"'), "seed must be an integer"),
    (("targets = [0.9, 0.5]", "targets = [0.5, 0.9]"), "strictly decreasing"),
    (("grid = [0.1, 0.3, 0.6, 1.0]", "grid = [0.3, 0.1, 1.0]"), "strictly increasing"),
    (("[references.rot-trans]", "[references.rot-transs]"), "not a threat model"),
    (('train_attack = "rot-trans-coarse"', 'train_attack = "pgd-l2"'), "belong to l2, not rot-trans"),
    (("n_examples = 24", "n_examples = 0"), "at least 1"),
    (("[train]", "[trains]"), "unknown table"),
])
def test_bad_calibration_files_are_refused_before_training(tmp_path: Path, edit: tuple[str, str],
                                                           message: str) -> None:
    config = tmp_path / "calibrate.toml"
    config.write_text(TINY.replace(*edit), encoding="utf-8")
    result = CliRunner().invoke(app, ["calibrate", "--config", str(config), "--work-dir", str(tmp_path / "work"),
                                      "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def test_choose_ladder_takes_the_first_strength_at_each_target() -> None:
    from midbench.bench.calibration import choose_ladder

    grid = (0.1, 0.2, 0.4, 0.8, 1.0)
    assert choose_ladder(grid, [0.95, 0.85, 0.6, 0.3, 0.2], 1.0, (0.9, 0.7, 0.5, 0.3)) == (0.2, 0.4, 0.8)
    # a target the grid never reaches ends the ladder at its top
    assert choose_ladder(grid, [0.99, 0.98, 0.97, 0.96, 0.95], 1.0, (0.9, 0.5)) == (1.0,)
    assert choose_ladder(grid, [0.8, 0.7, 0.6, 0.6, 0.6], 1.0, (0.9, 0.5)) == (0.1, 1.0)


@pytest.mark.slow
def test_calibrate_with_another_suite_measures_its_threat_models(tmp_path: Path) -> None:
    """A set calibrated with a suite other than the default profile's (the corruptions' set): the grid climb and
    the measurement both climb that suite's attack, and the reference curve names it."""
    from midbench.evaluation.references import load_reference_set

    config = tmp_path / "calibrate.toml"
    tiny = TINY.split("[references.linf]")[0].replace('device = "cpu"', 'device = "cpu"\nsuite = "unknown-profile-ua"')
    config.write_text(tiny + '[references.fog]\ntrain_attack = "fog"\nattack_steps = 2\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["calibrate", "--config", str(config), "--work-dir", str(tmp_path / "work"),
                                      "--out", str(tmp_path / "ref"), "--quiet"])
    assert result.exit_code == 0, result.output
    (curve,) = load_reference_set(tmp_path / "ref").curves.values()
    assert curve.threat_model == "fog" and [key.partition("@")[0] for key in curve.attacks] == ["fog-apgd"]



@pytest.mark.slow
def test_calibrate_runs_end_to_end_resumes_and_its_table_recomputes(tmp_path: Path) -> None:
    """The shipped command's path at tiny size: references trained, ladders calibrated on the validation slice,
    references measured; a rerun changes nothing; reference.json recomputes from its result files; evaluations
    with the set's ladders are scored against it."""
    from midbench.bench.calibration import load_calibration, reference_document
    from midbench.evaluation.references import load_reference_set

    out, work = tmp_path / "ref", tmp_path / "work"
    out.mkdir()
    config = out / "calibrate.toml"  # as shipped: the calibration file in its set's folder (the default --out)
    config.write_text(TINY, encoding="utf-8")
    arguments = ["calibrate", "--config", str(config), "--work-dir", str(work), "--quiet"]
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, result.output
    reference = load_reference_set(out)
    assert set(reference.curves) == {"linf", "rot-trans"}
    calibration = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
    for model, curve in reference.curves.items():
        assert set(curve.strengths) <= {0.1, 0.3, 0.6, 1.0} and list(curve.strengths) == sorted(curve.strengths)
        assert all(b <= a for a, b in zip(curve.ata, curve.ata[1:], strict=False))  # nested: never rises
        assert calibration["threat_models"][model]["n_examples"] == 48  # the validation slice, not the test split
    before = {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()}
    again = CliRunner().invoke(app, arguments)
    assert again.exit_code == 0, again.output
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    assert not (out / "grids").exists()  # calibration.json gathered the per-reference grid curves
    # a run stopped before the set's files were written resumes from each reference's own grid curve and result
    for name in before:
        if name != "calibrate.toml":
            (out / name).unlink()
    (out / "grids").mkdir()
    for model, entry in calibration["threat_models"].items():
        grid = {key: value for key, value in entry.items() if key != "ladder"}
        (out / "grids" / f"{model}.json").write_text(json.dumps(grid), encoding="utf-8")
    resumed = CliRunner().invoke(app, arguments[:-1])
    assert resumed.exit_code == 0, resumed.output
    assert "climbing" not in resumed.output and "training:" not in resumed.output, resumed.output
    assert "grid curve climbed earlier (grids/linf.json)" in resumed.output
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    # on another machine (the set's folder committed, the checkpoints not) nothing is trained or measured again
    elsewhere = CliRunner().invoke(app, [*arguments[:-1], "--work-dir", str(tmp_path / "fresh")])
    assert elsewhere.exit_code == 0, elsewhere.output
    assert "training:" not in elsewhere.output and "its checkpoint is not needed" in elsewhere.output
    assert {path.name: path.read_bytes() for path in out.iterdir() if path.is_file()} == before
    # byte for byte from the committed result files and calibration.json
    measured = {model: out / entry["models"][0]["result"]
                for model, entry in reference.document["threat_models"].items()}
    ladders = {model: curve.strengths for model, curve in reference.curves.items()}
    seconds = {model: entry["train_seconds_per_epoch"] for model, entry in calibration["threat_models"].items()}
    assert all(value is not None and value > 0 for value in seconds.values())
    recomputed = reference_document(load_calibration(config), ladders, measured, out, reference.made_by, seconds)
    assert json.dumps(recomputed, indent=2) + "\n" == (out / "reference.json").read_text(encoding="utf-8")
    # an evaluation at the set's ladders is scored against it
    results = tmp_path / "results"
    evaluated = CliRunner().invoke(app, ["eval", str(work / "linf" / "model.safetensors"), "--unknown-attacks",
                                         "--threat-models", "linf,rot-trans", "--n-examples", "24",
                                         "--registry-dir", str(out), "--results-dir", str(results), "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    (table,) = tables(results, references=[out]).values()
    assert table["score_rot-trans"].notna().all() and table["reference"].tolist() == ["tiny-lenet"]
    shutil.rmtree(results)


@pytest.mark.slow
def test_calibrate_side_by_side_gives_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """workers = 2 trains, climbs and measures the references in two processes of one thread each: the ladders,
    grid curves and reference curves are those of one process on one thread, to the last bit. The file says
    workers = 1; ``--workers 2`` overrides it."""
    from midbench.bench import calibration as calibration_module
    from midbench.evaluation.references import load_reference_set

    pools: list[int] = []  # the workers each calibration asked the process pool for
    side_by_side = calibration_module.run_side_by_side
    monkeypatch.setattr(calibration_module, "run_side_by_side",
                        lambda workers, *rest: pools.append(workers) or side_by_side(workers, *rest))
    outputs = {}
    for workers in (1, 2):
        out = tmp_path / f"ref{workers}"
        out.mkdir()
        config = out / "calibrate.toml"
        config.write_text(TINY.replace("batch_size = 64\n\n[train]", "batch_size = 64\nthreads = 1\nworkers = 1"
                                       "\n\n[train]"), encoding="utf-8")
        result = CliRunner().invoke(app, ["calibrate", "--config", str(config), "--work-dir",
                                          str(tmp_path / f"work{workers}"), "--quiet", "--workers", str(workers)])
        assert result.exit_code == 0, result.output
        calibration = json.loads((out / "calibration.json").read_text(encoding="utf-8"))
        reference = load_reference_set(out)
        # a checkpoint's hash covers its metadata (folder, times) and ladders.toml names the command, so the runs
        # are compared by what they measured (the grid curves with the ladders chosen, the reference curves)
        # (and the seconds each grid and training epoch took)
        grid_curves = {model: {key: value for key, value in entry.items()
                               if key not in ("checkpoint_sha256", "seconds", "train_seconds_per_epoch")}
                       for model, entry in calibration["threat_models"].items()}
        assert list(grid_curves) == list(reference.curves) == ["linf", "rot-trans"]  # the file's order
        ata = {model: (curve.strengths, curve.ata) for model, curve in reference.curves.items()}
        outputs[workers] = (grid_curves, ata)
    assert pools == [1, 2]
    assert outputs[1] == outputs[2]


def test_training_overfitting_needs_a_large_gap_in_the_last_epoch() -> None:
    from midbench.evaluation.sanity import training_flags

    assert training_flags({"val_pgd10_acc": 0.10, "val_train_attack_acc": 0.59})[0]["code"] == "training-overfitting"
    assert training_flags({"val_pgd10_acc": 0.45, "val_train_attack_acc": 0.55}) == []
    assert training_flags({"val_pgd10_acc": 0.10}) == [] and training_flags(None) == []


@pytest.mark.slow
def test_fast_at_at_a_catastrophic_step_size_is_flagged(tmp_path: Path) -> None:
    """FGSM with a random start and α = 2ε (Wong et al. 2020 show α ≥ 2ε overfits catastrophically), early stop
    disabled: within a few epochs held-out PGD accuracy collapses while the FGSM accuracy climbs. The checkpoint
    records both, and the evaluation flags it twice: from training, and from AutoAttack against its known attack."""
    out = tmp_path / "fast"
    trained = CliRunner().invoke(app, ["train", "--method", "fast-at", "--dataset", "mnist5k", "--epochs", "3",
                                       "--batch-size", "64", "--fast-at-step", "0.6", "--overfit-drop", "1.0",
                                       "--device", "cpu", "--out", str(out), "--quiet"])
    assert trained.exit_code == 0, trained.output
    last = json.loads((out / "log.jsonl").read_text(encoding="utf-8").splitlines()[-1])
    assert last["val_train_attack_acc"] - last["val_pgd10_acc"] >= 0.3, last
    evaluated = CliRunner().invoke(app, ["eval", str(out / "model.safetensors"), "--known-attacks", "--autoattack",
                                         "--n-examples", "20", "--results-dir", str(tmp_path / "results"),
                                         "--quiet", "--format", "json"])
    assert evaluated.exit_code == 0, evaluated.output
    codes = {flag["code"] for flag in json.loads(evaluated.stdout)["flags"]}
    assert {"training-overfitting", "catastrophic-overfitting"} <= codes
    (table,) = tables(tmp_path / "results").values()
    assert "catastrophic-overfitting" in table["flags"].iloc[0]


class _Masked(torch.nn.Module):
    """A planted masking defense around an undefended model: its input gradient is exactly zero (every gradient
    step goes nowhere), and a perturbed input (over 40% of pixels above 0.02, where clean MNIST has about 20%)
    is misclassified when a fixed pseudo-random hash of it exceeds 0.7, i.e. by about one random draw in three.
    Clean inputs keep the inner model's predictions. A gradient attack is thus no better than its random starts,
    and ten random draws beat it."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.weights = torch.rand(784, generator=torch.Generator().manual_seed(0)) * 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.detach().flatten(1)
        logits = self.inner(x.detach())
        perturbed = (flat > 0.02).float().mean(dim=1) > 0.4
        fooled = perturbed & (torch.frac(flat @ self.weights) > 0.7)
        demoted = logits - 100.0 * torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1])
        return torch.where(fooled[:, None], demoted, logits) + 0.0 * x.flatten(1).sum(dim=1, keepdim=True)


def test_random_noise_beating_the_gradient_attacks_is_flagged(standard_model: torch.nn.Module,
                                                              mnist5k_test: object) -> None:
    """The same undefended model, honest and behind a planted masking defense (:class:`_Masked`): APGD on the
    second is left with its random starts, the 10 random draws of noise-uniform-linf in the same L∞ ball break
    more, and the flag says so; on the honest model APGD leaves nothing for noise to break."""
    from midbench.attacks.plans import profile_plan
    from midbench.data.datasets import get_dataset
    from midbench.evaluation.engine import evaluate
    from midbench.evaluation.sanity import gradient_free_flags

    eps = get_dataset("mnist5k").eps
    data = mnist5k_test.subset(torch.arange(100))
    plans = profile_plan(REGISTRY, eps, set(), only=("linf",), ladders={"linf": (1.0,)})
    device = torch.device("cpu")
    for model, flagged in ((standard_model, False), (_Masked(standard_model).eval(), True)):
        evaluation = evaluate(model, data, [], device=device, profile=plans)
        flags, measured = gradient_free_flags(model, data, evaluation, REGISTRY, eps, device, 0, 256)
        assert [flag["code"] for flag in flags] == (["gradient-free-beats-gradient"] if flagged else []), measured
        assert measured and measured[0]["eps"] == pytest.approx(eps["Linf"])


def test_a_reference_for_a_threat_model_the_registry_lacks_is_refused(tmp_path: Path) -> None:
    _write_table(tmp_path / "results", ["pgd-at-a"])
    reference = write_reference_set(tmp_path / "ref", ATA)
    document = json.loads((reference / "reference.json").read_text(encoding="utf-8"))
    document["threat_models"]["no-such-blur"] = document["threat_models"]["linf"]
    (reference / "reference.json").write_text(json.dumps(document), encoding="utf-8")
    result = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(tmp_path / "results"), "--references",
                                      str(reference), "--output", str(tmp_path / "board.md")])
    assert result.exit_code == 2, result.output
    assert "'no-such-blur'" in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "board.md").exists()


def test_gradient_free_profile_attacks_query_the_evaluated_model_under_transfer(standard_model: torch.nn.Module,
                                                                              mnist5k_test: object) -> None:
    """Under transfer, the grid search (rotation/translation) and random noise need no gradient, so they attack
    the evaluated model itself: their curves equal the white-box ones, whatever the source; the result says which
    attacks did."""
    from midbench.attacks.plans import profile_plan
    from midbench.data.datasets import get_dataset
    from midbench.evaluation.engine import evaluate
    from midbench.evaluation.profile import curve_summary
    from midbench.models.factory import build_model

    spec = get_dataset("mnist5k")
    data = mnist5k_test.subset(torch.arange(40))
    torch.manual_seed(0)
    source = build_model("test-cnn", 10, spec.input_shape, spec.mean, spec.std).eval()  # untrained: a poor source
    plans = profile_plan(REGISTRY, spec.eps, set(), only=("rot-trans", "noise"))
    device = torch.device("cpu")
    whitebox = evaluate(standard_model, data, [], device=device, profile=plans)
    transfer = evaluate(standard_model, data, [], device=device, protocol="transfer", source_model=source,
                        profile=plans)
    for white, moved in zip(whitebox.curves, transfer.curves, strict=True):
        assert np.array_equal(white.robust, moved.robust), white.plan.threat_model.id
        queried = curve_summary(moved, transfer.clean_correct)["queried_evaluated_model"]
        assert queried == [attack.key for attack in moved.plan.rungs[0].attacks]
        assert "queried_evaluated_model" not in curve_summary(white, whitebox.clean_correct)
