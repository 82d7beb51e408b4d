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

from midbench.artifacts.zoo import weights_path, zoo_entries  # noqa: E402 - after the skip

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
    from midbench.artifacts.zoo import load_zoo_model

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
@pytest.mark.parametrize("option", [["--model-dir", "models"], ["--zoo-threat-model", "L2"]])
def test_zoo_options_without_a_zoo_entry_are_refused(model: list[str], option: list[str],
                                                     pgd_at_checkpoint: Path) -> None:
    named = model or [str(pgd_at_checkpoint)]
    outcome = RUNNER.invoke(app, ["eval", *named, "--dataset", "mnist5k", *option, "--attacks", "fgsm-linf"])
    assert outcome.exit_code == 2 and "go with --model robustbench:NAME" in outcome.output


def test_an_entry_counts_as_trained_against_its_threat_model_but_the_undefended_one_does_not() -> None:
    """A Linf entry's known attack is PGD-L∞ at the dataset's ε, so its ``linf`` curve is seen and not one of its
    unknown threat models; ``Standard`` (listed under every threat model) was trained against nothing."""
    from midbench.artifacts.zoo import _trained_against
    from midbench.attacks.specs import ResolvedAttack
    from midbench.data.datasets import get_dataset

    eps = get_dataset("cifar10").eps
    (linf,) = (ResolvedAttack.from_dict(item) for item in _trained_against(ENTRY, "Linf", eps))
    (l2,) = (ResolvedAttack.from_dict(item) for item in _trained_against(ENTRY, "L2", eps))
    assert (linf.id, linf.eps) == ("pgd-linf", eps["Linf"]) and (l2.id, l2.eps) == ("pgd-l2", eps["L2"])
    assert _trained_against("Standard", "Linf", eps) == ()
    assert _trained_against(ENTRY, "corruptions", eps) == ()


ZOO_SWEEP = """
[sweep]
name = "zoo"
dataset = "cifar10"
device = "cpu"
protocols = ["whitebox"]

[eval]
n_examples = 8
attacks = ["fgsm-linf"]
known_attacks = true

[models.mma]
model = "robustbench:Ding2020MMA"

[models.mma-l2]
model = "robustbench:Ding2020MMA"
zoo_threat_model = "L2"
"""


def _zoo_bench(zoo: dict, folder: Path, text: str, *extra: str) -> object:
    config = folder / "sweep.toml"
    config.write_text(text, encoding="utf-8")
    return RUNNER.invoke(app, ["bench", "--config", str(config), "--out", str(folder / "out"), "--data-dir",
                               str(zoo["root"] / "data"), "--quiet", *extra])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*differs from the published release")  # the test's own CIFAR files
def test_a_zoo_sweep_evaluates_every_entry_with_its_known_attack_and_resumes(zoo: dict, tmp_path: Path) -> None:
    """The MultiRobustBench use case in one `midbench bench`: zoo entries from RobustBench's layout, each with its
    own threat model's PGD as its known attack; a rerun evaluates nothing again."""
    models = tmp_path / "models"
    for threat_model in ("Linf", "L2"):
        path = weights_path(ENTRY, "cifar10", threat_model, models)
        path.parent.mkdir(parents=True)
        path.write_bytes(zoo["path"].read_bytes())
    outcome = _zoo_bench(zoo, tmp_path, ZOO_SWEEP, "--model-dir", str(models))
    assert outcome.exit_code == 0, outcome.output
    documents = {json.loads(path.read_text())["checkpoint"]["name"]: json.loads(path.read_text())
                 for path in (tmp_path / "out" / "results" / "runs" / "cifar10").glob("*.json")}
    assert sorted(documents) == ["mma", "mma-l2"]
    for name, known in (("mma", "pgd-linf"), ("mma-l2", "pgd-l2")):
        splits = {row["id"].split("@")[0]: row["split"] for row in documents[name]["attacks"]}
        assert splits[known] == "known" and splits["fgsm-linf"] == "unknown"  # known: the training attack itself
        assert documents[name]["checkpoint"]["zoo"]["threat_model"] == ("Linf" if name == "mma" else "L2")
    board = (tmp_path / "out" / "results" / "leaderboard-zoo.md").read_text(encoding="utf-8")
    assert "| mma | RobustBench Ding2020MMA (Linf) |" in board and "| mma-l2 | RobustBench Ding2020MMA (L2) |" in board

    again = _zoo_bench(zoo, tmp_path, ZOO_SWEEP, "--model-dir", str(models))
    assert again.exit_code == 0 and "[bench] evaluating" not in again.output
    assert again.output.count("already evaluated") == 2


def test_a_misspelt_zoo_entry_in_a_sweep_is_refused_with_close_matches(zoo: dict, tmp_path: Path) -> None:
    outcome = _zoo_bench(zoo, tmp_path, ZOO_SWEEP.replace("robustbench:Ding2020MMA", "robustbench:Ding2020MM", 1))
    assert outcome.exit_code == 2, outcome.output
    assert "models.mma: no RobustBench model 'Ding2020MM'" in outcome.output
    assert "did you mean Ding2020MMA" in outcome.output and not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*differs from the published release")
def test_a_zoo_entry_downloaded_by_the_sweep_is_recorded_by_its_file(zoo: dict, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      offline: None) -> None:
    """With --download a missing file is fetched by the evaluation (RobustBench's downloader, stood in for by a
    copy: the machine is offline); the state records the downloaded file's hash, so a rerun skips it."""
    import midbench.artifacts.zoo
    import midbench.data.torchvision_sets

    def fake_download(name: str, dataset: str, threat_model: str, model_dir: str | Path) -> None:
        path = weights_path(name, dataset, threat_model, model_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(zoo["path"].read_bytes())

    monkeypatch.setattr(midbench.artifacts.zoo, "_download", fake_download)
    # --download also asks torchvision for the dataset, and the test's CIFAR files are not the release's (their
    # checksums differ), so it would fetch the release: that fetch is stood in for by nothing
    monkeypatch.setattr(midbench.data.torchvision_sets, "_fetch", lambda name, root, fetch: None)
    text = ZOO_SWEEP.split("[models.mma-l2]")[0]
    models = tmp_path / "models"
    outcome = _zoo_bench(zoo, tmp_path, text, "--model-dir", str(models), "--download")
    assert outcome.exit_code == 0, outcome.output
    state = json.loads((tmp_path / "out" / "sweep-state.json").read_text())
    assert state["evaluations"]["mma/whitebox"]["checkpoint_sha256"] is not None
    again = _zoo_bench(zoo, tmp_path, text, "--model-dir", str(models))
    assert again.exit_code == 0 and "mma/whitebox: already evaluated" in again.output, again.output


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*differs from the published release")
def test_a_zoo_entry_crafts_the_transfer_attacks_from_eval_and_from_a_sweep(zoo: dict, tmp_path: Path) -> None:
    """The MID paper's transfer protocol with a zoo entry as the source (``--source robustbench:NAME``; in a sweep,
    ``transfer_source`` naming a [models] entry): the result records the source's weights file and zoo entry."""
    from midbench.artifacts.zoo import _sha256

    models = tmp_path / "models"
    for threat_model in ("Linf", "L2"):
        path = weights_path(ENTRY, "cifar10", threat_model, models)
        path.parent.mkdir(parents=True)
        path.write_bytes(zoo["path"].read_bytes())
    outcome = RUNNER.invoke(app, ["eval", "--model", "user_models:honest_cnn", "--dataset", "cifar10", "--data-dir",
                                  str(zoo["root"] / "data"), "--protocol", "transfer", "--source",
                                  f"robustbench:{ENTRY}", "--model-dir", str(models), "--attacks", "fgsm-linf",
                                  "--n-examples", "8", "--results-dir", str(tmp_path / "r"), "--quiet", "--format",
                                  "json"])
    assert outcome.exit_code == 0, outcome.output
    source = json.loads(outcome.stdout[outcome.stdout.index("{"):])["protocol"]["source"]
    assert source["sha256"] == _sha256(zoo["path"]) and source["zoo"]["name"] == ENTRY

    text = ZOO_SWEEP.replace('protocols = ["whitebox"]',
                             'protocols = ["whitebox", "transfer"]\ntransfer_source = "mma"')
    swept = _zoo_bench(zoo, tmp_path, text, "--model-dir", str(models))
    assert swept.exit_code == 0, swept.output
    results = tmp_path / "out" / "results" / "runs" / "cifar10"
    documents = [json.loads(path.read_text()) for path in results.glob("*.json")]
    transfer = [d for d in documents if d["protocol"]["name"] == "transfer"]
    assert [d["checkpoint"]["name"] for d in transfer] == ["mma-l2"]
    assert transfer[0]["protocol"]["source"]["zoo"] == {**transfer[0]["protocol"]["source"]["zoo"], "name": ENTRY,
                                                        "threat_model": "Linf"}
    board = (tmp_path / "out" / "results" / "leaderboard-zoo.md").read_text(encoding="utf-8")
    assert "crafted on the `mma` model" in board
