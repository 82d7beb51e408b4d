"""The RobustBench model zoo as input (``--model robustbench:NAME``), offline: the test saves weights for a small
zoo architecture (Ding2020MMA, a WideResNet-28-4) in RobustBench's layout and CIFAR-10 files in torchvision's,
then evaluates through the real loading code. Skipped where the ``robustbench`` extra is not installed."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from midbench.cli.app import app

if importlib.util.find_spec("robustbench") is None:
    pytest.skip("needs the robustbench extra: pip install 'midbench[robustbench]'", allow_module_level=True)

from midbench.zoo import weights_path, zoo_entries  # noqa: E402 - after the skip

ENTRY = "Ding2020MMA"
RUNNER = CliRunner()


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from test_data_torchvision import write_cifar10

    root = tmp_path_factory.mktemp("zoo")
    write_cifar10(root / "data")
    torch.manual_seed(0)
    network = zoo_entries("cifar10", "Linf")[ENTRY]["model"]()
    path = weights_path(ENTRY, "cifar10", "Linf", root / "models")
    path.parent.mkdir(parents=True)
    torch.save(network.state_dict(), path)
    return {"root": root, "network": network.eval(), "path": path}


def evaluate(zoo: dict, *extra: str, name: str = ENTRY) -> object:
    root = zoo["root"]
    return RUNNER.invoke(app, ["eval", "--model", f"robustbench:{name}", "--dataset", "cifar10", "--data-dir",
                               str(root / "data"), "--model-dir", str(root / "models"), "--attacks", "fgsm-linf",
                               "--results-dir", str(root / "results"), "--quiet", "--format", "json", *extra])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*differs from the published release")  # the test's own CIFAR files
def test_a_zoo_entry_is_evaluated_with_its_weights_and_recorded(zoo: dict) -> None:
    outcome = evaluate(zoo, "--autoattack")
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout[outcome.stdout.index("{"):])
    checkpoint = document["checkpoint"]
    assert checkpoint["name"] == ENTRY and checkpoint["model_spec"] == f"robustbench:{ENTRY}"
    assert checkpoint["zoo"] == {"source": "robustbench", "name": ENTRY, "dataset": "cifar10", "threat_model": "Linf",
                                 "architecture": type(zoo["network"]).__name__, "citation_key": ENTRY}
    # the clean accuracy is the saved network's own: the weights were loaded, not left at a fresh initialisation
    from midbench.data.datasets import load_split

    test = load_split("cifar10", "test", str(zoo["root"] / "data"), False)
    with torch.no_grad():
        expected = (zoo["network"](test.as_float()).argmax(1) == test.labels).float().mean().item()
    assert document["clean_accuracy"] == pytest.approx(expected)

    (result,) = (zoo["root"] / "results" / "runs" / "cifar10").glob(f"{ENTRY}__*.json")
    card_path = zoo["root"] / "card.json"
    exported = RUNNER.invoke(app, ["export", "robustbench", str(result), "--out", str(card_path)])
    assert exported.exit_code == 0, exported.output
    card = json.loads(card_path.read_text(encoding="utf-8"))
    assert card["name"] == ENTRY and card["architecture"] == type(zoo["network"]).__name__
    assert card["dataset"] == "cifar10" and card["eps"] == "8/255"


@pytest.mark.slow
def test_wrapped_and_prefixed_weights_load_the_same(zoo: dict, tmp_path: Path) -> None:
    """RobustBench's files wrap the weights (``state_dict``) and carry DataParallel's ``module.`` prefix."""
    from midbench.zoo import load_zoo_model

    state = {f"module.{key}": value for key, value in zoo["network"].state_dict().items()}
    path = weights_path(ENTRY, "cifar10", "Linf", tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"state_dict": state, "epoch": 3}, path)
    loaded = load_zoo_model(f"robustbench:{ENTRY}", "cifar10", "Linf", tmp_path)
    for key, value in zoo["network"].state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value), key


@pytest.mark.parametrize(("case", "code", "message"), [
    ("unknown", 2, "did you mean Ding2020MMA"),
    ("missing", 3, "pass --download"),
    ("html", 3, "is an HTML page"),
    ("pickle-only", 3, "not a loadable state dict"),
])
def test_bad_zoo_input_is_one_line_with_its_exit_code(case: str, code: int, message: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    name = {"unknown": "Ding2020MM", "missing": "Wong2020Fast"}.get(case, ENTRY)
    if case in ("html", "pickle-only"):
        path = weights_path(ENTRY, "cifar10", "Linf", models)
        path.parent.mkdir(parents=True)
        if case == "html":  # what a failed Google Drive download saves
            path.write_text("<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>")
        else:  # a full pickle, refused by weights_only=True
            torch.save({"weights": object()}, path, _use_new_zipfile_serialization=True)
    outcome = RUNNER.invoke(app, ["eval", "--model", f"robustbench:{name}", "--dataset", "cifar10", "--model-dir",
                                  str(models), "--attacks", "fgsm-linf", "--results-dir", str(tmp_path / "r")])
    assert outcome.exit_code == code, outcome.output
    lines = [line for line in outcome.output.splitlines() if line.startswith("midbench: error:")]
    assert len(lines) == 1 and message in lines[0], outcome.output


@pytest.mark.parametrize("model", [["--model", "user_models:honest_cnn"], []])
@pytest.mark.parametrize("option", [["--model-dir", "models"], ["--threat-model", "L2"]])
def test_zoo_options_without_a_zoo_entry_are_refused(model: list[str], option: list[str],
                                                     pgd_at_checkpoint: Path) -> None:
    named = model or [str(pgd_at_checkpoint)]
    outcome = RUNNER.invoke(app, ["eval", *named, "--dataset", "mnist5k", *option, "--attacks", "fgsm-linf"])
    assert outcome.exit_code == 2 and "go with --model robustbench:NAME" in outcome.output
