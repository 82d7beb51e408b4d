"""The unknown-attack profile: threat models and ladders as registry data, per-example randomness, the nested
climb (monotone, equal to independent evaluations), seen threat models from provenance, and result files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from reference_sets import write_profiled_run, write_reference_set
from typer.testing import CliRunner

from midbench.attacks import randomness
from midbench.attacks.norms import Norm, random_in_ball
from midbench.attacks.plans import PROFILE_SUITE, at_strength, profile_plan, seen_threat_models, threat_model_of
from midbench.attacks.specs import ResolvedAttack, load_registry
from midbench.cli.app import app
from midbench.data import load_split
from midbench.data.datasets import TensorSplit, get_dataset
from midbench.errors import UsageError
from midbench.evaluation.attacking import AttackRunner, predict
from midbench.evaluation.engine import evaluate
from midbench.evaluation.profile import climb, independent_curves, normalised_area

REGISTRY = load_registry()
MNIST_EPS = get_dataset("mnist5k").eps

# ---------------------------------------------------------------------------------------------- registry data

GOOD_MODEL = '[[threat_model]]\nid = "my-blur"\ndescription = "x"\nladder = [0.25, 0.5, 1.0]\n'
GOOD_ATTACK = ('[[attack]]\nid = "my-noise"\nversion = 1\nfamily = "noise"\nnorm = "Linf"\n'
               'implementation = "midbench.attacks.noise:UniformNoise"\ncitation = "x"\nparams = { samples = 2 }\n')
BAD_REGISTRIES = {
    "ladder-not-increasing": (GOOD_MODEL.replace("[0.25, 0.5, 1.0]", "[0.5, 0.25, 1.0]"), "strictly increasing"),
    "ladder-repeats": (GOOD_MODEL.replace("[0.25, 0.5, 1.0]", "[0.5, 0.5, 1.0]"), "strictly increasing"),
    "ladder-zero": (GOOD_MODEL.replace("[0.25, 0.5, 1.0]", "[0.0, 0.5, 1.0]"), "outside (0, 1]"),
    "ladder-negative": (GOOD_MODEL.replace("[0.25, 0.5, 1.0]", "[-0.5, 1.0]"), "outside (0, 1]"),
    "ladder-above-one": (GOOD_MODEL.replace("[0.25, 0.5, 1.0]", "[0.5, 1.0, 1.5]"), "outside (0, 1]"),
    "ladder-not-ending-at-one": (GOOD_MODEL.replace("[0.25, 0.5, 1.0]", "[0.25, 0.5]"), "must end at 1"),
    "ladder-empty": (GOOD_MODEL.replace("[0.25, 0.5, 1.0]", "[]"), "non-empty list"),
    "ladder-text": (GOOD_MODEL.replace("[0.25, 0.5, 1.0]", '["a", 1.0]'), "must be numbers"),
    "ladder-missing": (GOOD_MODEL.replace("ladder = [0.25, 0.5, 1.0]\n", ""), "non-empty list"),
    "model-unknown-key": (GOOD_MODEL + 'colour = "red"\n', "unknown key"),
    "model-duplicate": (GOOD_MODEL.replace('"my-blur"', '"linf"'), "duplicate threat model id 'linf'"),
    "attack-unknown-threat-model": (GOOD_ATTACK + 'threat_model = "my-blurr"\n', "unknown threat model 'my-blurr'"),
    "attack-unknown-budget": (GOOD_ATTACK + 'budget = ["radius"]\n', "budget parameter 'radius'"),
    "attack-boolean-budget": (GOOD_ATTACK.replace("noise:UniformNoise", "gradient:PGD").replace(
        "samples = 2", "steps = 2, step_size = 0.1, random_start = true") + 'budget = ["random_start"]\n',
        "budget parameter 'random_start'"),
}


@pytest.mark.parametrize(("text", "message"), BAD_REGISTRIES.values(), ids=list(BAD_REGISTRIES))
def test_bad_threat_models_and_budgets_are_refused_naming_file_and_entry(tmp_path: Path, text: str,
                                                                          message: str) -> None:
    (tmp_path / "mine.toml").write_text(text)
    with pytest.raises(UsageError) as error:
        load_registry([tmp_path])
    text_of_error = str(error.value)
    assert "mine.toml" in text_of_error and message in text_of_error and "\n" not in text_of_error


def test_a_bad_ladder_exits_2_with_one_line_from_the_cli(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(BAD_REGISTRIES["ladder-above-one"][0])
    result = CliRunner().invoke(app, ["attacks", "list", "--registry-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "mine.toml [[threat_model]] #1 (my-blur): ladder strength 1.5 is outside (0, 1]" in result.output


def test_a_user_registry_adds_a_threat_model_and_an_entry_of_it(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(GOOD_MODEL + GOOD_ATTACK + 'threat_model = "my-blur"\n')
    registry = load_registry([tmp_path])
    assert registry.threat_models["my-blur"].ladder == (0.25, 0.5, 1.0)
    assert registry.attacks["my-noise"].threat_model == "my-blur" and registry.attacks["my-noise"].budget == ("eps",)


def test_every_shipped_entry_has_a_threat_model_and_profile_ladders_have_five_strengths() -> None:
    assert all(spec.threat_model in REGISTRY.threat_models for spec in REGISTRY.attacks.values())
    profiled = {spec.threat_model for spec in REGISTRY.suite(PROFILE_SUITE)}
    assert {"linf", "l2", "l1", "flow", "rot-trans", "elastic", "jpeg",
                                                          "noise"} <= profiled
    for model_id in profiled:
        assert len(REGISTRY.threat_models[model_id].ladder) >= 5
    assert all(spec.budget for spec in REGISTRY.suite(PROFILE_SUITE))


def test_a_strength_scales_the_budget_and_the_steps_written_relative_to_it() -> None:
    pgd = at_strength(REGISTRY.get("pgd-linf"), MNIST_EPS, 0.5)
    assert pgd.eps == pytest.approx(0.15) and pgd.params["step_size"] == pytest.approx(0.15 / 30)
    assert pgd.params["steps"] == 40
    grid = at_strength(REGISTRY.get("rot-trans"), MNIST_EPS, 0.5)
    assert grid.params["max_angle"] == 15.0 and grid.params["max_shift"] == 1.5
    assert grid.params["angle_steps"] == 31 and grid.params["shift_steps"] == 5
    flow = at_strength(REGISTRY.get("stadv"), MNIST_EPS, 0.2)
    assert flow.params["max_flow"] == pytest.approx(0.2) and flow.params["steps"] == 100
    assert at_strength(REGISTRY.get("pgd-l1"), MNIST_EPS, 1.0).equivalence() == \
        REGISTRY.get("pgd-l1").resolve(MNIST_EPS).equivalence()


# ---------------------------------------------------------------------------------- seen, from provenance

def _trained_with(*ids: str) -> list[ResolvedAttack]:
    return [REGISTRY.get(attack_id).resolve(MNIST_EPS) for attack_id in ids]


@pytest.mark.parametrize(("train_attacks", "seen"), [
    ((), set()),                                                        # standard training
    (("pgd-linf",), {"linf"}),                                          # PGD-AT
    (("pgd-linf", "pgd-l2", "pgd-l1"), {"linf", "l2", "l1"}),           # MSD / AVG / MAX
    (("pgd-linf", "pgd-linf-t", "mim-linf", "mim-linf-t"), {"linf"}),   # MID's Attacker Pool
])
def test_seen_threat_models_come_from_the_training_attacks(train_attacks: tuple[str, ...], seen: set[str]) -> None:
    assert seen_threat_models(_trained_with(*train_attacks), REGISTRY) == seen


def test_a_training_attack_outside_the_registry_is_seen_through_its_norm() -> None:
    custom = ResolvedAttack("my-l2-attack", 0, "l2", Norm.L2, "midbench.attacks.gradient:PGD", 1.0, None, {})
    assert threat_model_of(custom, REGISTRY) == "l2"


def test_the_plan_marks_seen_threat_models_and_resolves_every_strength() -> None:
    plans = profile_plan(REGISTRY, MNIST_EPS, {"linf"})
    by_id = {plan.threat_model.id: plan for plan in plans}
    assert by_id["linf"].seen and not by_id["l2"].seen
    linf = by_id["linf"]
    assert [rung.strength for rung in linf.rungs] == list(REGISTRY.threat_models["linf"].ladder)
    assert [rung.budgets[0]["eps"] for rung in linf.rungs] == pytest.approx([s * 0.3 for s in linf.threat_model.ladder])


# ------------------------------------------------------------------------------------ per-example randomness

def test_default_draws_are_unchanged_from_torchs_global_rng() -> None:
    x = torch.rand(4, 1, 5, 5)
    for norm in Norm:
        torch.manual_seed(3)
        drawn = random_in_ball(x, 0.3, norm)
        torch.manual_seed(3)
        if norm is Norm.LINF:
            expected = (x + torch.empty_like(x).uniform_(-0.3, 0.3)).clamp(0, 1)
        else:
            direction = torch.randn_like(x) if norm is Norm.L2 else \
                torch.empty_like(x).exponential_() * torch.randn_like(x).sign()
            length = direction.flatten(1).norm(p=2 if norm is Norm.L2 else 1, dim=1).view(-1, 1, 1, 1)
            expected = (x + direction / length * torch.rand(4, 1, 1, 1) * 0.3).clamp(0, 1)
        assert torch.allclose(drawn, expected, atol=1e-6)


def test_per_example_draws_do_not_depend_on_the_batch() -> None:
    x = torch.full((3, 1, 4, 4), 0.5)
    with randomness.per_example_generators([11, 22, 33]):
        together = random_in_ball(x, 0.3, Norm.L2)
        targets = randomness.randint_per_example(1, 10, torch.zeros(3, dtype=torch.long))
    with randomness.per_example_generators([33, 11]):
        reordered = random_in_ball(x[:2], 0.3, Norm.L2)
        reordered_targets = randomness.randint_per_example(1, 10, torch.zeros(2, dtype=torch.long))
    assert torch.equal(reordered[0], together[2]) and torch.equal(reordered[1], together[0])
    assert reordered_targets.tolist() == [targets[2].item(), targets[0].item()]
    assert not torch.equal(together[0], together[1])


# ------------------------------------------------------------------------------------------ the nested climb

def _runner(model: torch.nn.Module, data: TensorSplit, batch_size: int) -> tuple[AttackRunner, np.ndarray]:
    images, labels = data.as_float(), data.labels.clone()
    clean = (predict(model, images, 256) == labels).numpy()
    return AttackRunner(model, model, images, labels, device=torch.device("cpu"), protocol="whitebox",
                        batch_size=batch_size, seed=5, progress=None, state=None), clean


#: The shipped profile's implementations with fewer steps, samples and grid points, so that the test can afford
#: the independent evaluations it compares with (the same code paths, cheaper settings).
CHEAP_PROFILE = """
[[attack]]
id = "t-pgd-linf"
version = 1
family = "linf"
norm = "Linf"
implementation = "midbench.attacks.gradient:PGD"
citation = "test"
params = { steps = 4, step_size = "eps/3", random_start = true }

[[attack]]
id = "t-pgd-linf-t"
version = 1
family = "linf"
norm = "Linf"
implementation = "midbench.attacks.gradient:PGD"
citation = "test"
target = "random"
params = { steps = 3, step_size = "eps/3", random_start = true }

[[attack]]
id = "t-pgd-l2"
version = 1
family = "l2"
norm = "L2"
implementation = "midbench.attacks.gradient:PGD"
citation = "test"
params = { steps = 4, step_size = "eps/3", random_start = true }

[[attack]]
id = "t-pgd-l1"
version = 1
family = "l1"
norm = "L1"
implementation = "midbench.attacks.l1:SparseL1Descent"
citation = "test"
params = { steps = 4, step_size = "eps/3", sparsity = 99, random_start = true }

[[attack]]
id = "t-apgd-l1"
version = 1
family = "l1"
norm = "L1"
implementation = "midbench.attacks.apgd_l1:APGDL1"
citation = "test"
params = { steps = 5, losses = ["ce", "dlr-targeted"], n_targets = 2 }

[[attack]]
id = "t-stadv"
version = 1
family = "spatial"
threat_model = "flow"
budget = ["max_flow"]
implementation = "midbench.attacks.spatial:FlowField"
citation = "test"
params = { steps = 4, lr = 0.05, tau = 0.005, max_flow = 1.0 }

[[attack]]
id = "t-rot-trans"
version = 1
family = "spatial"
threat_model = "rot-trans"
budget = ["max_angle", "max_shift"]
implementation = "midbench.attacks.spatial:RotationTranslation"
citation = "test"
params = { max_angle = 30.0, max_shift = 3.0, angle_steps = 3, shift_steps = 3 }

[[attack]]
id = "t-elastic"
version = 1
family = "spatial"
threat_model = "elastic"
budget = ["max_flow"]
implementation = "midbench.attacks.elastic:ElasticAttack"
citation = "test"
params = { max_flow = 2.0, sigma = 2.0, steps = 3, relative_step = 0.25, random_start = true }

[[attack]]
id = "t-jpeg"
version = 1
family = "frequency"
threat_model = "jpeg"
budget = ["quant_steps"]
implementation = "midbench.attacks.jpeg:JpegAttack"
citation = "test"
params = { quant_steps = 1.0, steps = 3, relative_step = 0.25, random_start = true }

[[attack]]
id = "t-noise-l1"
version = 1
family = "noise"
norm = "L1"
implementation = "midbench.attacks.noise:UniformNoise"
citation = "test"
params = { samples = 3 }

[[attack]]
id = "t-noise-gaussian"
version = 1
family = "noise"
norm = "L2"
implementation = "midbench.attacks.noise:GaussianNoise"
citation = "test"
params = { sigma = "eps", samples = 3 }

[[suite]]
name = "test-profile"
attacks = ["t-pgd-linf", "t-pgd-linf-t", "t-pgd-l2", "t-pgd-l1", "t-apgd-l1", "t-stadv", "t-rot-trans", "t-elastic",
           "t-jpeg", "t-noise-l1", "t-noise-gaussian"]
"""


def assert_nested_climb_equals_independent_runs(model: torch.nn.Module, data: TensorSplit,
                                               plans: list) -> tuple[list, np.ndarray]:
    """Climb ``plans`` nested in batches of 7 and evaluate every rung independently in batches of 32: every
    example's robustness at rung k must be the same (per-example generators), the climb may not cost more, and
    the curve may not rise nor start above clean accuracy. Returns the nested curves and clean correctness."""
    nested_runner, clean = _runner(model, data, batch_size=7)
    curves = climb(nested_runner, plans, clean)
    independent_runner, _ = _runner(model, data, batch_size=32)
    independent = independent_curves(independent_runner, plans, clean)
    for plan, curve, reference in zip(plans, curves, independent, strict=True):
        for k, rung in enumerate(plan.rungs):
            assert np.array_equal(curve.robust[:, k], reference.robust[:, k]), (plan.threat_model.id, rung.strength)
        assert curve.forward_passes + curve.backward_passes <= reference.forward_passes + reference.backward_passes
        accuracy = curve.robust.mean(axis=0)
        assert np.all(np.diff(accuracy) <= 0) and accuracy[0] <= clean.mean()
    return curves, clean


@pytest.mark.slow
def test_nested_climb_equals_the_worst_case_over_independent_evaluations(standard_model: torch.nn.Module,
                                                                        mnist5k_test: TensorSplit,
                                                                        tmp_path: Path) -> None:
    """Every example of the nested curve at strength k equals the AND, over every attack at every strength up
    to k, of independent evaluations of all clean-correct examples — run with other batch sizes, so each example
    meets other batch neighbours in the two runs. Exact equality: per-example generators make the random starts,
    targets and noise batch-independent, and the attacks' losses are summed per example."""
    (tmp_path / "profile.toml").write_text(CHEAP_PROFILE)
    registry = load_registry([tmp_path])
    data = mnist5k_test.subset(torch.arange(40))
    plans = profile_plan(registry, MNIST_EPS, set(), suite="test-profile")
    assert {plan.threat_model.id for plan in plans} == {"linf", "l2", "l1", "flow", "rot-trans", "elastic", "jpeg",
                                                          "noise"}
    curves, _ = assert_nested_climb_equals_independent_runs(standard_model, data, plans)
    for plan, curve in zip(plans, curves, strict=True):
        accuracy = curve.robust.mean(axis=0)
        # the ladder matters: the undefended model loses accuracy from the smallest strength to the full one
        if plan.threat_model.id != "noise":
            assert accuracy[0] > accuracy[-1], plan.threat_model.id


def test_normalised_area_is_the_mean_accuracy_over_the_strength_range() -> None:
    assert normalised_area([0.5, 1.0], [1.0, 1.0], 1.0) == 1.0
    assert normalised_area([0.5, 1.0], [0.0, 0.0], 1.0) == pytest.approx(0.25)  # the triangle from (0, 1)
    assert normalised_area([1.0], [0.5], 0.5) == 0.5


@pytest.mark.slow
def test_unknown_attacks_write_curves_to_the_result_and_its_matrix(pgd_at_checkpoint: Path, tmp_path: Path) -> None:
    """``--unknown-attacks`` climbs every threat model of the shipped profile; the PGD-AT checkpoint has L∞ seen;
    the unknown summary is the worst case over the unseen threat models at full strength."""
    result = CliRunner().invoke(app, ["eval", str(pgd_at_checkpoint), "--unknown-attacks", "--n-examples", "24",
                                      "--results-dir", str(tmp_path), "--quiet", "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (json_path,) = (tmp_path / "runs" / "mnist5k").glob("*.json")
    matrices = np.load(json_path.with_suffix(".npz"))
    models = {model["id"]: model for model in document["profile"]["threat_models"]}
    assert models["linf"]["seen"] and not any(models[m]["seen"] for m in models if m != "linf")
    for model_id, model in models.items():
        matrix = matrices[f"profile_{model_id}"]
        assert matrix.shape == (24, len(model["strengths"]))
        assert model["accuracy"] == pytest.approx(matrix.mean(axis=0).tolist())
        assert all(b <= a for a, b in zip([model["clean_accuracy"], *model["accuracy"]], model["accuracy"],
                                          strict=False))
        assert model["full_strength_accuracy"] == model["accuracy"][-1]
        assert 0.0 <= model["area"] <= model["clean_accuracy"]
    assert set(models) == {spec.threat_model for spec in load_registry().suite("unknown-profile")}
    assert document["attacks"] == []  # the profile's attacks are curves, not rows
    unseen = np.stack([matrices[f"profile_{m}"][:, -1] for m in models if not models[m]["seen"]], axis=1)
    assert document["summary"]["unknown_worst"] == pytest.approx(unseen.all(axis=1).mean())
    assert document["summary"]["unknown_mean"] == pytest.approx(unseen.mean(axis=0).mean())
    # a few attacked test images per threat model, clean first, one row per rung: the report draws them
    from midbench.evaluation.examples import PROFILE_EXAMPLES
    from midbench.reporting.html import build_report

    for model_id, model in models.items():
        images = matrices[f"examples_{model_id}"]
        assert images.dtype == np.uint8 and images.shape == (1 + len(model["strengths"]), PROFILE_EXAMPLES, 28, 28, 1)
        assert np.array_equal(images[0, ..., 0], load_split("mnist5k", "test").images[:PROFILE_EXAMPLES, 0].numpy())
    page, _ = build_report(tmp_path)
    assert all(f'data-threat-model="{model_id}"' in page for model_id in models)
    # every stored picture is in the page as an image of its own: a row per rung and the clean row
    assert page.count('<img src="data:image/png;base64,') == \
        sum((1 + len(model["strengths"])) * PROFILE_EXAMPLES for model in models.values())


# ------------------------------------------------------------------------ leaderboard: reference-normalised scores

#: three models' curves at the five strengths (10 examples, so every accuracy is exact in tenths), the threat
#: models each was trained against, and the hand-computed scores in % (see the comments)
TABLE = {
    "pgd-at-a": ({"linf": [.9, .8, .6, .5, .4], "l2": [.5, .4, .2, .1, 0], "l1": [.4, .3, .1, 0, 0]}, {"linf"}),
    "standard-b": ({"linf": [.5, .3, 0, 0, 0], "l2": [.8, .5, .3, .2, .1], "l1": [.6, .4, .1, .1, 0]}, set()),
    "msd-c": ({"linf": [.8, .8, .6, .4, .2], "l2": [.7, .6, .4, .3, .2], "l1": [.5, .5, .2, .1, .1]},
              {"linf", "l2"}),
}
#: the fixed reference set (ATA per threat model at the same five strengths), whatever models the table holds
ATA = {"linf": [.9, .8, .6, .5, .4], "l2": [.7, .6, .4, .3, .2], "l1": [.6, .5, .2, .1, .1]}
# linf: Σ ATA 3.2 → a 3.2/3.2 = 100, b 0.8/3.2 = 25, c 2.8/3.2 = 87.5; l2: Σ 2.2 → a 1.2/2.2, b 1.9/2.2, c 1;
# l1: Σ 1.5 → a 0.8/1.5, b 1.2/1.5, c 1.4/1.5. Unknown: a's unseen l2 and l1 → (54.55 + 53.33)/2; b's all three
# → (25 + 86.36 + 80)/3; c's l1 alone. Common unknown: l1.
EXPECTED = {"pgd-at-a": {"linf": 100.0, "l2": 54.55, "l1": 53.33, "unknown": 53.94, "common": 53.33, "seen": 33.33},
            "standard-b": {"linf": 25.0, "l2": 86.36, "l1": 80.0, "unknown": 63.79, "common": 80.0, "seen": 0.0},
            "msd-c": {"linf": 87.5, "l2": 100.0, "l1": 93.33, "unknown": 93.33, "common": 93.33, "seen": 66.67}}


def _profiled_table(tmp_path: Path) -> Path:
    """The three models of TABLE under tmp_path/results and the reference set ATA under tmp_path/reference."""
    for minutes, (name, (accuracies, seen)) in enumerate(TABLE.items()):
        write_profiled_run(tmp_path / "results", name, accuracies, seen, minutes)
    return write_reference_set(tmp_path / "reference", ATA)


def test_leaderboard_normalises_each_threat_model_by_its_reference_and_ranks_by_common_unknown(tmp_path: Path) -> None:
    from midbench.reporting.leaderboard import render, tables

    reference = _profiled_table(tmp_path)
    results = tmp_path / "results"
    (table,) = tables(results, references=[reference]).values()
    assert list(table["name"]) == ["msd-c", "standard-b", "pgd-at-a"]  # by common-unknown score
    for _, row in table.iterrows():
        expected = EXPECTED[row["name"]]
        for model_id in ("linf", "l2", "l1"):
            assert row[f"score_{model_id}"] == pytest.approx(expected[model_id], abs=0.01), (row["name"], model_id)
        assert row["unknown_score"] == pytest.approx(expected["unknown"], abs=0.01)
        assert row["common_unknown_score"] == pytest.approx(expected["common"], abs=0.01)
        assert row["pct_seen"] == pytest.approx(expected["seen"], abs=0.01)
    assert table.attrs["common_unknown"] == ["l1"]
    markdown = render(results, "markdown", references=[reference])
    assert "ATA being the fixed reference set reference" in markdown
    csv = render(results, "csv", references=[reference])
    assert "0.1:90 0.25:80 0.5:60 0.75:50 1:40" in csv  # pgd-at-a's full L∞ curve
    assert "curve" not in markdown
    # the unknown summary comes from the unseen threat models at full strength: msd-c has only l1 unseen (its
    # full-strength accuracy .1, the first example); pgd-at-a's unseen l2 and l1 both end at 0
    unknown_worst = dict(zip(table["name"], table["unknown_worst"], strict=True))
    assert unknown_worst == {"msd-c": pytest.approx(10.0), "standard-b": 0.0, "pgd-at-a": 0.0}


def test_ci_puts_a_wilson_interval_on_every_curve_point(tmp_path: Path) -> None:
    from midbench.evaluation.metrics import wilson_interval
    from midbench.reporting.leaderboard import number_text, render

    _profiled_table(tmp_path)
    low, high = wilson_interval(9, 10)  # pgd-at-a keeps 9 of 10 examples at L∞ strength 0.1
    expected = f"0.1:90[{number_text(round(100 * low, 2))},{number_text(round(100 * high, 2))}]"
    assert expected in render(tmp_path / "results", "csv", ci=True)
    assert expected not in render(tmp_path / "results", "csv")


def test_profiled_tables_measure_delta_on_the_common_unknown_score(tmp_path: Path) -> None:
    """pgd-at-a and msd-c are the adversarial-training baselines (by method name); the best of their
    common-unknown scores is msd-c's 93.33, so Δ = score − 93.33 (hand-computed from EXPECTED)."""
    from midbench.reporting.leaderboard import tables

    reference = _profiled_table(tmp_path)
    (table,) = tables(tmp_path / "results", references=[reference]).values()
    assert "delta_unknown_worst_vs_at" not in table.columns
    delta = dict(zip(table["name"], table["delta_common_unknown_vs_at"], strict=True))
    assert delta == {"msd-c": pytest.approx(0.0, abs=0.01), "standard-b": pytest.approx(80.0 - 93.33, abs=0.02),
                     "pgd-at-a": pytest.approx(53.33 - 93.33, abs=0.02)}


# ------------------------------------------------------------------------------------- strength of the climb


@pytest.fixture(scope="module")
def robust_at_eps_01(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    """A test-cnn adversarially trained (PGD-AT, 5 steps) at ε = 0.1 on 2,000 images for 2 epochs (seconds on a
    CPU): robust enough at ε ≤ 0.1 that a weaker attack would show (a model at 0% everywhere could not)."""
    from midbench.artifacts.loading import load_classifier
    from midbench.config import TrainConfig
    from midbench.training import train

    config = TrainConfig.of(method="pgd-at", arch="test-cnn", epochs=2, batch_size=64, val_size=50, lr=3e-3,
                            device="cpu", attack_steps=5, n_train=2000, eps=0.1)
    checkpoint = train(config, tmp_path_factory.mktemp("pgd-at-0.1"), progress=False).checkpoint
    return load_classifier(checkpoint).model.eval()


@pytest.mark.slow
def test_the_linf_climb_at_its_top_rung_is_within_one_point_of_autoattack(robust_at_eps_01: torch.nn.Module,
                                                                           mnist5k_test: TensorSplit) -> None:
    """The profile's L∞ attacks, climbed nested over a ladder whose top rung is the fixture's training ε (0.1 =
    strength 1/3 of mnist5k's 0.3, where it is robust; at 0.3 every attack leaves 0%), leave at most one point more
    robust accuracy than AutoAttack (standard: APGD-CE, APGD-T, FAB-T, Square) at that ε, on 100 test images."""
    data = mnist5k_test.subset(torch.arange(100))
    images, labels = data.as_float(), data.labels.clone()
    model = robust_at_eps_01
    clean = (predict(model, images, 100) == labels).numpy()
    runner = AttackRunner(model, model, images, labels, device=torch.device("cpu"), protocol="whitebox",
                          batch_size=100, seed=0, progress=None, state=None)
    plans = profile_plan(REGISTRY, MNIST_EPS, set(), only=("linf",), ladders={"linf": (1 / 3,)})
    (curve,) = climb(runner, plans, clean)
    top = plans[0].rungs[-1].attacks[0].eps
    assert top == pytest.approx(0.1)
    autoattack = evaluate(model, data, [(REGISTRY.get("autoattack-linf").resolve({"Linf": top}), "unknown")],
                          device=torch.device("cpu"), seed=0)
    climbed, reference = 100 * curve.robust[:, -1].mean(), 100 * autoattack.matrix[:, 0].mean()
    assert reference >= 20, f"the fixture is not robust at ε 0.1 ({reference:.0f}%): the comparison says nothing"
    assert climbed <= reference + 1, f"climb {climbed:.0f}% vs AutoAttack {reference:.0f}%"


def test_illustrations_cap_the_effort_and_keep_an_image_once_it_fools(standard_model: torch.nn.Module,
                                                                      small_batch: tuple[torch.Tensor,
                                                                                         torch.Tensor]) -> None:
    """The report's pictures: the clean row first, then one row per rung; an image the model gets wrong at a
    rung is shown unchanged at every stronger one (the climb's semantics), and the attack's effort is capped."""
    from midbench.evaluation.examples import ILLUSTRATION_EFFORT, illustrative, profile_examples

    (plan,) = profile_plan(REGISTRY, MNIST_EPS, set(), dataset="mnist5k", channels=1, only=("linf",))
    capped = illustrative(plan.rungs[0].attacks[0])
    assert capped.params["steps"] <= ILLUSTRATION_EFFORT["steps"] and capped.params["restarts"] == 1
    assert len(capped.params["losses"]) == 1
    x, y = small_batch[0][:6], small_batch[1][:6]
    images = profile_examples(standard_model, x, y, [plan], seed=0)["linf"]
    assert images.shape == (1 + len(plan.rungs), 6, 28, 28, 1) and images.dtype == np.uint8
    assert np.array_equal(images[0], (x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8))
    with torch.no_grad():
        wrong = np.stack([(standard_model(torch.from_numpy(row).permute(0, 3, 1, 2).float() / 255).argmax(1)
                           != y).numpy() for row in images[1:]])
    assert wrong[-1].any(), "the full L-infinity budget breaks some of an undefended model's images"
    for k in range(len(plan.rungs) - 1):
        for i in np.flatnonzero(wrong[k]):
            assert np.array_equal(images[k + 2, i], images[k + 1, i])


def test_threat_models_without_an_eps_on_the_dataset_are_left_out_and_recorded(tmp_path: Path) -> None:
    """ImageNet defines no L1 ε: the profile leaves the L1 threat model out (the result says why) instead of
    refusing the whole profile, and refuses it by name when ``--threat-models`` asks for it; ``--eps L1=…`` brings
    it back. On data whose ε covers every norm nothing is left out."""
    import midbench

    registry = load_registry()
    eps = get_dataset("imagenet").eps
    assert "L1" not in eps  # the premise: RobustBench's ImageNet has no L1 threat model
    climbed = {plan.threat_model.id for plan in profile_plan(registry, eps, set())}
    assert "l1" not in climbed and {"linf", "l2"} <= climbed
    with pytest.raises(UsageError, match=r"l1 \(L1\).*--eps"):
        profile_plan(registry, eps, set(), only=("l1",))
    assert "l1" in {plan.threat_model.id for plan in profile_plan(registry, {**eps, "L1": 60.0}, set())}
    assert "l1" in {plan.threat_model.id for plan in profile_plan(registry, get_dataset("mnist5k").eps, set())}

    # through the API: the result records what was left out, and why
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AvgPool2d(28), torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 1000))
    images = torch.randint(0, 256, (2, 3, 224, 224), dtype=torch.uint8)
    with torch.no_grad():
        labels = net(images / 255).argmax(1)
    suite = "t-no-l1"
    (tmp_path / "suite.toml").write_text(f'[[suite]]\nname = "{suite}"\ndescription = "L-inf and L1, one step each"\n'
                                         'attacks = ["fgsm-linf", "pgd-l1-fast"]\n', encoding="utf-8")
    result = midbench.evaluate(net, (images, labels), dataset="imagenet", attacks=["fgsm-linf"],
                               unknown_attacks=True, profile_suites=[suite], registry_dirs=[tmp_path],
                               device="cpu")
    profile = result.document.profile
    assert profile is not None
    skipped = profile["skipped"]
    assert [item["id"] for item in skipped] == ["l1"] and "L1 ε" in skipped[0]["reason"]
    assert [curve["id"] for curve in profile["threat_models"]] == ["linf"]
