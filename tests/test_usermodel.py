"""``midbench eval --model module:factory [--weights FILE]``: errors with the right exit codes, the provenance a
result records, fidelity to the checkpoint path, and the acceptance test of the sanity flags — a gradient-masked
model is flagged and still broken by Square/AutoAttack, its honest twin is not flagged."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner, Result

from midbench.cli.app import app
from midbench.config import TrainConfig
from midbench.reporting.leaderboard import render
from midbench.training import train

RUNNER = CliRunner()
HERE = Path(__file__).parent
#: the robust checkpoint's training and evaluation ε (a tiny CNN learns real robustness at 0.1 in seconds)
EPS = "0.1"


@pytest.fixture(autouse=True)
def user_models(monkeypatch: pytest.MonkeyPatch) -> object:
    """``tests/`` on sys.path, so ``--model user_models:...`` imports ``tests/user_models.py``."""
    monkeypatch.syspath_prepend(str(HERE))
    import user_models

    return user_models


@pytest.fixture
def honest_weights(tmp_path: Path, user_models: object) -> Path:
    """A state dict (random weights) that fits every factory of tests/user_models.py."""
    torch.manual_seed(0)
    path = tmp_path / "honest.pt"
    torch.save(user_models.honest_cnn().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def robust_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test-cnn adversarially trained with PGD-L∞ at ε = 0.1 (10 steps, 3 epochs on 4,000 images): ≈ 85% clean
    and honestly robust. (The shared ``pgd_at_checkpoint`` fixture is trained too briefly to be accurate.)"""
    config = TrainConfig.of(method="pgd-at", arch="test-cnn", epochs=3, batch_size=64, val_size=50, lr=3e-3,
                         eps=float(EPS), attack_steps=10, n_train=4000, device="cpu")
    return train(config, tmp_path_factory.mktemp("robust"), progress=False).checkpoint


def run_eval(results: Path, *args: str) -> Result:
    return RUNNER.invoke(app, ["eval", *args, "--device", "cpu", "--quiet", "--results-dir", str(results)])


def eval_json(results: Path, *args: str) -> dict:
    outcome = run_eval(results, *args, "--format", "json")
    assert outcome.exit_code == 0, outcome.output
    return json.loads(outcome.stdout)


# ------------------------------------------------------------------------------------------------ errors

USAGE_ERRORS = [
    (["--model", "no_colon", "--dataset", "mnist5k"], "module:factory"),
    (["--model", "user_models:honest_cnn"], "--model needs --dataset"),
    (["--model", "surely_missing_module_xyz:build", "--dataset", "mnist5k"],
     "cannot import module 'surely_missing_module_xyz'"),
    (["--model", "user_models:nope", "--dataset", "mnist5k"], "has no attribute 'nope'"),
    (["--model", "user_models:not_a_module", "--dataset", "mnist5k"], "not a torch.nn.Module"),
    (["--model", "user_models:failing_factory", "--dataset", "mnist5k"], "cannot build this model"),
    (["--model", "user_models:honest_cnn", "--dataset", "mnist5k", "--arch", "test-cnn"], "--arch"),
    (["model.safetensors", "--model", "user_models:honest_cnn", "--dataset", "mnist5k"], "not both"),
    (["model.safetensors", "--weights", "weights.pt"], "--weights goes with --model"),
    ([], "name the model to evaluate"),
]


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(a) or "nothing" for a, _ in USAGE_ERRORS])
def test_usage_errors_exit_2_in_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    outcome = run_eval(tmp_path / "results", *args, "--attacks", "fgsm-linf")
    assert outcome.exit_code == 2, outcome.output
    assert message in outcome.output and len(outcome.output.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "runs").exists()


def _bad_weights(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.pt"
    if kind == "html":
        path.write_text("<!DOCTYPE html><html>404</html>")
    elif kind == "other keys":
        torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    elif kind == "pickle with objects":
        torch.save({"net.conv.weight": Fraction(1, 2)}, path)
    return path  # "missing": never written


ARTIFACT_ERRORS = [("missing", "user_models:honest_cnn", "weights file not found"),
                   ("html", "user_models:honest_cnn", "not a checkpoint"),
                   ("other keys", "user_models:honest_cnn", "do not fit --model"),
                   ("pickle with objects", "user_models:honest_cnn", "refused to load"),
                   (None, "user_models:three_class_cnn", "expected logits of shape (2, 10)")]


@pytest.mark.parametrize(("weights", "spec", "message"), ARTIFACT_ERRORS,
                         ids=[f"{w or 'no weights'} {s.split(':')[1]}" for w, s, _ in ARTIFACT_ERRORS])
def test_bad_weights_or_incompatible_model_exit_3(weights: str | None, spec: str, message: str,
                                                   tmp_path: Path) -> None:
    extra = ["--weights", str(_bad_weights(tmp_path, weights))] if weights else []
    outcome = run_eval(tmp_path / "results", "--model", spec, "--dataset", "mnist5k", "--attacks", "fgsm-linf", *extra)
    assert outcome.exit_code == 3, outcome.output
    assert message in outcome.output and len(outcome.output.strip().splitlines()) == 1
    assert not (tmp_path / "results" / "runs").exists()


# ------------------------------------------------------------------------------------------------ provenance

@pytest.mark.parametrize("spec", ["user_models:honest_cnn", "user_models:no_argument_factory",
                                  "user_models:HonestCNN", "user_models:INSTANCE"])
def test_any_factory_form_evaluates_and_records_its_provenance(spec: str, honest_weights: Path,
                                                               tmp_path: Path) -> None:
    document = eval_json(tmp_path, "--model", spec, "--weights", str(honest_weights), "--dataset", "mnist5k",
                         "--attacks", "fgsm-linf", "--n-examples", "8")
    checkpoint = document["checkpoint"]
    assert checkpoint["model_spec"] == spec and checkpoint["name"] == spec
    assert checkpoint["method"] == "unknown" and checkpoint["train_attacks"] == []
    assert checkpoint["arch"] == "HonestCNN" and checkpoint["dataset"] == "mnist5k"
    assert checkpoint["path"] == str(honest_weights)
    assert checkpoint["weights_sha256"] == hashlib.sha256(honest_weights.read_bytes()).hexdigest()
    assert document["flags"] == [] and document["sanity"]["probes"]["zero_gradient_fraction"] == 0.0


def test_same_weights_under_another_model_is_another_model(honest_weights: Path, tmp_path: Path) -> None:
    """The identity covers the code named by the spec, so a masked twin never shares a leaderboard row."""
    args = ["--weights", str(honest_weights), "--dataset", "mnist5k", "--attacks", "fgsm-linf", "--n-examples", "4"]
    honest = eval_json(tmp_path, "--model", "user_models:honest_cnn", *args)["checkpoint"]
    masked = eval_json(tmp_path, "--model", "user_models:quantised_cnn", *args)["checkpoint"]
    assert honest["weights_sha256"] == masked["weights_sha256"]
    assert honest["sha256"] != masked["sha256"]


def test_without_weights_the_factory_weights_are_used(tmp_path: Path) -> None:
    document = eval_json(tmp_path, "--model", "user_models:honest_cnn", "--dataset", "mnist5k", "--attacks",
                         "fgsm-linf", "--n-examples", "4")
    assert document["checkpoint"]["path"] is None and document["checkpoint"]["weights_sha256"] is None


def test_a_factory_builds_the_same_model_on_its_first_load_as_on_later_ones(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A module that draws from torch's RNG when it is imported (here a module-level tensor) must not make the
    first build of a process differ from the next: a sweep evaluates the same factory more than once."""
    from midbench.artifacts.loading import load_model

    (tmp_path / "rng_drawing_models.py").write_text(
        "import torch\n"
        "from user_models import honest_cnn\n"
        "NOISE = torch.rand(3)\n"
        "def build(num_classes=10, input_shape=(1, 28, 28)):\n"
        "    return honest_cnn(num_classes, input_shape)\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    first, second = (load_model(None, dataset="mnist5k", model_spec="rng_drawing_models:build") for _ in range(2))
    assert first.sha256 == second.sha256


def test_table_output_lists_the_flags(honest_weights: Path, tmp_path: Path) -> None:
    outcome = run_eval(tmp_path, "--model", "user_models:quantised_cnn", "--weights", str(honest_weights),
                       "--dataset", "mnist5k", "--attacks", "fgsm-linf", "--n-examples", "8")
    assert outcome.exit_code == 0, outcome.output
    assert "flag zero-gradients: " in outcome.output and "docs/flags.md" in outcome.output


def test_sanity_sweeps_change_no_number(honest_weights: Path, tmp_path: Path) -> None:
    args = ["--model", "user_models:honest_cnn", "--weights", str(honest_weights), "--dataset", "mnist5k",
            "--attacks", "fgsm-linf,pgd-linf", "--n-examples", "16"]
    plain = eval_json(tmp_path, *args)
    checked = eval_json(tmp_path, *args, "--check-eps", "--check-steps")
    assert [row["robust_accuracy"] for row in plain["attacks"]] == \
        [row["robust_accuracy"] for row in checked["attacks"]]
    assert plain["clean_accuracy"] == checked["clean_accuracy"] and plain["summary"] == checked["summary"]
    assert "eps_sweep" not in plain.get("sanity", {})
    assert [point["steps"] for point in checked["sanity"]["steps_sweep"]["points"]] == [10, 40, 160]
    assert len(checked["sanity"]["eps_sweep"]["points"]) == 3


@pytest.mark.slow  # trains the module's robust checkpoint (about 10 s) when run alone
def test_model_matches_the_checkpoint_it_was_loaded_from(robust_checkpoint: Path, tmp_path: Path) -> None:
    """``--model`` with a checkpoint's weights evaluates exactly like the checkpoint itself."""
    common = ["--dataset", "mnist5k", "--attacks", "fgsm-linf,pgd-linf", "--eps", EPS, "--n-examples", "32"]
    direct = eval_json(tmp_path, str(robust_checkpoint), *common)
    user = eval_json(tmp_path, "--model", "user_models:honest_cnn", "--weights", str(robust_checkpoint), *common)
    assert user["clean_accuracy"] == direct["clean_accuracy"] > 0.6
    assert [row["robust_accuracy"] for row in user["attacks"]] == [row["robust_accuracy"] for row in direct["attacks"]]
    assert user["flags"] == direct["flags"] == []


# ------------------------------------------------------------------------------------------------ acceptance

ACCEPTANCE = [
    # (attacks, the row that must still break the masked model, extra options)
    ("pgd-linf,apgd-ce-linf,square-linf", "square-linf", ["--check-eps", "--check-steps"]),
    ("pgd-linf,autoattack-linf", "autoattack-linf", []),
]


@pytest.mark.slow
@pytest.mark.parametrize(("attacks", "breaker", "extra"), ACCEPTANCE, ids=[row[1] for row in ACCEPTANCE])
def test_masked_model_is_flagged_and_broken_its_honest_twin_is_not(attacks: str, breaker: str, extra: list[str],
                                                                   robust_checkpoint: Path, tmp_path: Path) -> None:
    """Input quantisation (zero gradients) on top of a PGD-AT model: PGD and APGD stall, the sanity checks flag
    it, and Square (alone or inside AutoAttack) still breaks it. The same weights without the quantisation
    raise no flag under the same attacks; the leaderboard shows the codes of the masked row only."""
    common = ["--weights", str(robust_checkpoint), "--dataset", "mnist5k", "--attacks", attacks, "--eps", EPS,
              "--n-examples", "32", *extra]
    masked = eval_json(tmp_path, "--model", "user_models:quantised_cnn", *common)
    honest = eval_json(tmp_path, "--model", "user_models:honest_cnn", *common)

    masked_codes = [flag["code"] for flag in masked["flags"]]
    assert "zero-gradients" in masked_codes and "square-beats-whitebox" in masked_codes
    accuracy = {row["id"].split("@")[0]: row["robust_accuracy"] for row in masked["attacks"]}
    assert accuracy[breaker] < accuracy["pgd-linf"] - 0.15, "Square must still break the masked model"
    assert honest["flags"] == [], honest["flags"]
    assert masked["clean_accuracy"] > 0.6 and honest["clean_accuracy"] > 0.6

    board = json.loads(render(tmp_path, "json"))
    flags_by_name = {row["name"]: row["flags"] for table in board for row in table["rows"]}
    assert set(flags_by_name["user_models:quantised_cnn"].split(",")) == set(masked_codes)
    assert flags_by_name["user_models:honest_cnn"] in ("", None)
