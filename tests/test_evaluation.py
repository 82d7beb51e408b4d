"""Evaluation: known/unknown selection, robust-points-only cost, result files, per-example worst case, tables."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from midbench.attacks.specs import load_registry
from midbench.cli.app import app
from midbench.data import get_dataset, load_split
from midbench.evaluation.engine import evaluate
from midbench.evaluation.metrics import summarise, wilson_interval, worst_case_accuracy
from midbench.reporting.leaderboard import render

RUNNER = CliRunner()


def _run_eval(checkpoint: Path, results: Path, *args: str) -> dict:
    result = RUNNER.invoke(app, ["eval", str(checkpoint), "--n-examples", "40", "--device", "cpu", "--quiet",
                                 "--results-dir", str(results), "--format", "json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def test_known_split_is_exactly_the_training_attack(pgd_at_checkpoint: Path, tmp_path: Path) -> None:
    """The PGD-AT checkpoint trained with a custom PGD; its known split is that attack, and every entry of the
    default-unknown suite is unknown (none equals it by specification)."""
    known = _run_eval(pgd_at_checkpoint, tmp_path, "--known-attacks")
    assert [(row["id"], row["split"]) for row in known["attacks"]] == [("pgd-linf@custom", "known")]
    unknown = _run_eval(pgd_at_checkpoint, tmp_path, "--suite", "default-unknown")
    suite = load_registry().suites["default-unknown"]
    assert [row["id"].split("@")[0] for row in unknown["attacks"]] == suite
    assert {row["split"] for row in unknown["attacks"]} == {"unknown"}


def test_registry_attack_equal_to_training_attack_is_known(tmp_path: Path) -> None:
    """Equality by specification, not by name: a model trained with the registry's own pgd-linf has it known,
    in a suite as when named."""
    from midbench.config import TrainConfig
    from midbench.training import train

    config = TrainConfig.of(method="pgd-at", arch="test-mlp", epochs=1, n_train=32, val_size=8, device="cpu")
    checkpoint = train(config, tmp_path / "run", progress=False).checkpoint
    unknown = _run_eval(checkpoint, tmp_path / "results", "--suite", "default-unknown", "--n-examples", "8")
    splits = {row["id"].split("@")[0]: row["split"] for row in unknown["attacks"]}
    assert list(splits) == load_registry().suites["default-unknown"]
    assert {a for a, split in splits.items() if split == "known"} == {"pgd-linf"}
    named = _run_eval(checkpoint, tmp_path / "results", "--attacks", "pgd-linf", "--n-examples", "8")
    assert [(row["id"], row["split"]) for row in named["attacks"]] == [("pgd-linf@1", "known")]


def test_standard_checkpoint_runs_the_whole_unknown_suite(standard_checkpoint: Path, tmp_path: Path) -> None:
    document = _run_eval(standard_checkpoint, tmp_path, "--suite", "default-unknown")
    assert [row["id"].split("@")[0] for row in document["attacks"]] == load_registry().suites["default-unknown"]
    assert document["summary"]["known_mean"] is None


def test_result_files_follow_the_schema(standard_checkpoint: Path, tmp_path: Path) -> None:
    document = _run_eval(standard_checkpoint, tmp_path, "--attacks", "fgsm-linf,pgd-linf")
    path = tmp_path / "runs" / "mnist5k" / f"{document['run_id']}.json"
    assert json.loads(path.read_text()) == document
    for key in ("schema", "run_id", "created", "versions", "device", "checkpoint", "data", "protocol", "seed",
                "clean_accuracy", "attacks", "summary", "flags", "per_example"):
        assert key in document
    assert document["schema"] == "midbench.result/1"
    matrix = np.load(path.with_suffix(".npz"))
    robust = matrix["robust"]
    assert robust.shape == (40, 2) and list(matrix["attacks"]) == ["fgsm-linf@1", "pgd-linf@1"]
    for column, row in enumerate(document["attacks"]):
        assert row["robust_accuracy"] == pytest.approx(robust[:, column].mean())
        low, high = row["ci95"]
        assert low <= row["robust_accuracy"] <= high
    assert not (robust & ~matrix["clean"][:, None]).any(), "a misclassified clean example is never robust"
    assert document["summary"]["all_worst"] == pytest.approx(robust.all(axis=1).mean())


def test_accuracy_does_not_rise_with_eps(standard_model: nn.Module) -> None:
    data = load_split("mnist5k", "test").subset(torch.arange(60))
    attack = load_registry().get("pgd-linf")
    accuracies = []
    for eps in (0.0, 0.05, 0.1, 0.2):
        spec = attack.resolve({"Linf": eps})
        spec.params["steps"] = 10
        evaluation = evaluate(standard_model, data, [(spec, "unknown")], device=torch.device("cpu"), seed=0)
        accuracies.append(evaluation.matrix[:, 0].mean())
    assert accuracies == sorted(accuracies, reverse=True)
    assert accuracies[0] == pytest.approx(evaluate(standard_model, data, [], device=torch.device("cpu"))
                                          .clean_correct.mean())


class AlwaysWrong(nn.Module):
    """A parameter-free classifier that is never right: predicts (label + 1) mod 10 from a lookup."""

    def __init__(self, labels: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("wrong", torch.nn.functional.one_hot((labels + 1) % 10, 10).float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wrong[: x.shape[0]] + 0 * x.flatten(1)[:, :1]


def test_robust_points_only_a_wrong_model_costs_no_attack_step() -> None:
    """Goal P5: attacks run only on the examples the model gets right clean."""
    data = load_split("mnist5k", "test").subset(torch.arange(16))
    spec = load_registry().get("pgd-linf").resolve(get_dataset("mnist5k").eps)
    evaluation = evaluate(AlwaysWrong(data.labels), data, [(spec, "unknown")], device=torch.device("cpu"))
    outcome = evaluation.outcomes[0]
    assert (outcome.forward_passes, outcome.backward_passes) == (0, 0)
    assert not outcome.robust.any()


def test_worst_case_is_per_example_not_the_minimum_of_means() -> None:
    """Two attacks that each leave 50% robust, on different examples: the worst case is 0%, not 50%."""
    robust = np.array([[True, False], [True, False], [False, True], [False, True]])
    assert worst_case_accuracy(robust) == 0.0
    assert min(robust.mean(axis=0)) == 0.5
    summary = summarise(robust, ["unknown", "unknown"], [])
    assert summary["unknown_worst"] == 0.0 and summary["unknown_mean"] == 0.5


def test_wilson_interval_contains_the_estimate_and_shrinks_with_n() -> None:
    narrow, wide = wilson_interval(500, 1000), wilson_interval(5, 10)
    assert narrow[0] < 0.5 < narrow[1] and wide[0] < narrow[0] and narrow[1] < wide[1]
    assert wilson_interval(0, 100)[0] == 0.0 and wilson_interval(100, 100)[1] == 1.0


def test_leaderboard_markdown_and_csv_agree(standard_checkpoint: Path, pgd_at_checkpoint: Path,
                                            tmp_path: Path) -> None:
    for checkpoint in (standard_checkpoint, pgd_at_checkpoint):
        _run_eval(checkpoint, tmp_path, "--known-attacks", "--suite", "default-unknown")
    (tmp_path / "runs" / "mnist5k" / "partial.json").write_text('{"schema": "midbench.result/1", "run_')  # torn
    csv_text = render(tmp_path, "csv")
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(csv_text))
    assert len(table) == 2 and set(table["method"]) == {"standard", "pgd-at"}
    markdown = render(tmp_path, "markdown")
    for value in table["clean"]:
        assert f"{value:g}" in markdown
    assert list(table["rank"]) == [1, 2]
    # the fixture's PGD-AT (a few epochs on a few hundred images) is far below a PGD-AT baseline's expected range
    # on mnist5k (docs/baselines.md), so it is flagged and is no "best AT": the Δ column stays empty
    at_row = table[table["method"] == "pgd-at"].iloc[0]
    assert "below-expected-range" in str(at_row["flags"]) and pd.isna(at_row["delta_unknown_worst_vs_at"])
    output = tmp_path / "board.md"
    result = RUNNER.invoke(app, ["leaderboard", "--results-dir", str(tmp_path), "--output", str(output)])
    assert result.exit_code == 0 and output.read_text() == markdown


def test_atomic_writes_leave_no_temporary_files_and_normal_permissions(tmp_path: Path) -> None:
    import os

    from midbench.fileio import atomic_write_text

    target = tmp_path / "board.md"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["board.md"]
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_eps_override_is_recorded_as_a_custom_configuration(standard_checkpoint: Path, tmp_path: Path) -> None:
    """A run at another ε must never be filed under the entry's id@version or the dataset's default ε."""
    default = _run_eval(standard_checkpoint, tmp_path, "--attacks", "fgsm-linf")
    custom = _run_eval(standard_checkpoint, tmp_path, "--attacks", "fgsm-linf", "--eps", "0.1")
    assert default["attacks"][0]["id"] == "fgsm-linf@1"
    assert (custom["attacks"][0]["id"], custom["attacks"][0]["eps"]) == ("fgsm-linf@custom", 0.1)
    assert custom["data"]["eps"]["Linf"] == 0.1
    import pandas as pd

    table = pd.read_csv(__import__("io").StringIO(render(tmp_path, "csv")))
    assert sorted(table["eps_linf"]) == [0.1, 0.3], "both runs stay on the leaderboard"


def test_target_override_reaches_targeted_attacks_only_and_is_custom() -> None:
    """``--target fixed:0`` (the MID release's policy) changes every targeted registry attack, records it as a
    custom configuration, and leaves untargeted attacks as they are."""
    from midbench.evaluation.selection import AttackSelection, select_attacks

    registry = load_registry()
    chosen = select_attacks(AttackSelection(attacks=("pgd-linf-t", "pgd-linf"), target="fixed:0"), registry,
                            get_dataset("mnist5k").eps, [])
    by_id = {attack.id: attack for attack, _ in chosen}
    assert (by_id["pgd-linf-t"].target, by_id["pgd-linf-t"].version) == ("fixed:0", 0)
    assert (by_id["pgd-linf"].target, by_id["pgd-linf"].version) == (None, registry.get("pgd-linf").version)
    same = select_attacks(AttackSelection(attacks=("pgd-linf-t",), target="random"), registry,
                          get_dataset("mnist5k").eps, [])
    assert same[0][0].version == registry.get("pgd-linf-t").version  # the entry's own policy: not custom


def test_bad_target_policy_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "missing.safetensors"), "--target", "class-0"])
    assert result.exit_code == 2 and "target policy" in result.output


def test_every_attack_is_built_once_per_evaluation(standard_checkpoint: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The up-front check that refuses a bad attack before any compute builds each of the evaluation's attacks; the
    evaluation then uses those builds instead of building every attack a second time. (Loading the registry also
    builds each entry once at a check ε, with no evaluation seed: those builds are not counted.)"""
    from midbench.attacks.specs import ResolvedAttack

    built: list[str] = []
    real_build = ResolvedAttack.build

    def counting_build(self: ResolvedAttack, *args: object, **kwargs: object) -> object:
        if "batch_size" in kwargs:  # an evaluation's build (the registry's check passes neither seed nor batch)
            built.append(json.dumps(self.to_dict(), sort_keys=True, default=str))
        return real_build(self, *args, **kwargs)

    monkeypatch.setattr(ResolvedAttack, "build", counting_build)
    document = _run_eval(standard_checkpoint, tmp_path, "--attacks", "fgsm-linf,pgd-linf", "--unknown-attacks",
                         "--threat-models", "linf", "--n-examples", "8")
    assert len(built) == len(set(built)), "an attack was built more than once"
    climbed = [key for model in document["profile"]["threat_models"] for key in model["attacks"]]
    assert {json.loads(b)["id"] for b in built} >= {"fgsm-linf", "pgd-linf"} | {k.split("@")[0] for k in climbed}


def test_a_batchnorm_and_dropout_model_stays_in_eval_mode_through_every_attack(mnist5k_test) -> None:  # noqa: ANN001
    """Attacks run on a pass-counting wrapper; restoring the wrapper's mode (training, nn.Module's default) used to
    switch the wrapped model to training mode after the first attack, so every later prediction used batch
    statistics and dropout and rewrote BatchNorm's running averages. With the modes kept module by module, the
    running averages are untouched, the model leaves in the mode it came in, and each attack's column equals the
    same attack run alone on a fresh copy (no earlier attack can change the model)."""
    import copy

    import midbench

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
                          nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10))
    with torch.no_grad():  # running averages that differ from any batch's statistics
        model[1].running_mean.fill_(0.3)
        model[1].running_var.fill_(2.0)
    model.eval()
    before = {name: buffer.clone() for name, buffer in model.named_buffers()}
    data = (mnist5k_test.images[:32], mnist5k_test.labels[:32])
    with torch.no_grad():
        labels = model(data[0].float() / 255).argmax(1)  # every example correct at the start
    attacks = ["fgsm-linf", "pgd-linf", "pgd-l2"]
    result = midbench.evaluate(model, (data[0], labels), dataset="mnist5k", attacks=attacks, device="cpu")
    assert not model.training and not any(module.training for module in model.modules())
    for name, buffer in model.named_buffers():
        assert torch.equal(buffer, before[name]), name
    assert result.clean_accuracy == 1.0
    for index, attack in enumerate(attacks):
        alone = midbench.evaluate(copy.deepcopy(model), (data[0], labels), dataset="mnist5k", attacks=[attack],
                                  device="cpu")
        np.testing.assert_array_equal(result.robust[:, index], alone.robust[:, 0], err_msg=attack)
