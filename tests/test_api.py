"""The Python API (midbench.api, docs/api.md): the same numbers as `midbench eval`, models in memory and tensors,
adapters, and its refusals. The README's notebook example runs from the wheel in tests/test_packaging.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import midbench
from midbench.cli.app import app
from midbench.errors import ArtifactError, UsageError

REPO = Path(__file__).resolve().parents[1]


def test_the_api_gives_what_midbench_eval_gives(standard_checkpoint: Path, tmp_path: Path) -> None:
    """The same checkpoint and settings through the API and the command line: the same per-example matrices,
    accuracies and summary (only the run id, times and command differ)."""
    options = ["--attacks", "fgsm-linf,pgd-l2", "--unknown-attacks", "--threat-models", "linf,flow",
               "--n-examples", "24", "--batch-size", "16", "--device", "cpu"]
    done = CliRunner().invoke(app, ["eval", str(standard_checkpoint), *options, "--results-dir",
                                    str(tmp_path / "cli"), "--format", "json"])
    assert done.exit_code == 0, done.output
    cli_path = next((tmp_path / "cli" / "runs").glob("*/*.json"))
    result = midbench.evaluate(standard_checkpoint, attacks=["fgsm-linf", "pgd-l2"], unknown_attacks=True,
                               threat_models=["linf", "flow"], n_examples=24, batch_size=16, device="cpu",
                               results_dir=tmp_path / "api")
    cli = midbench.load_result(cli_path)
    assert result.path is not None and result.path.is_file()
    np.testing.assert_array_equal(result.clean_correct, cli.clean_correct)
    np.testing.assert_array_equal(result.robust, cli.robust)
    assert result.curves.keys() == cli.curves.keys() == {"linf", "flow"}
    for threat_model, matrix in cli.curves.items():
        np.testing.assert_array_equal(result.curves[threat_model], matrix)
    assert result.summary == cli.summary
    assert result.document.data == cli.document.data
    assert result.to_pandas().drop(columns="seconds").equals(cli.to_pandas().drop(columns="seconds"))


def test_a_module_in_memory_on_tensors(standard_model: nn.Module, mnist5k_test) -> None:  # noqa: ANN001
    """An nn.Module and float tensors from ToTensor() (k/255): every view of the result is consistent with the
    matrices, and the examples are recorded by content, not as the test split's indices."""
    images = mnist5k_test.images[:20].float() / 255  # what ToTensor() gives
    labels = mnist5k_test.labels[:20]
    result = midbench.evaluate(standard_model, (images, labels), dataset="mnist5k", attacks=["fgsm-linf"],
                               unknown_attacks=True, threat_models=["linf"], device="cpu", name="in-memory")
    assert result.path is None
    assert result.document.data.split == "tensors"
    assert result.document.checkpoint.name == "in-memory"
    attacks = result.to_pandas()
    assert list(attacks["attack"]) == [row.id for row in result.document.attacks]
    assert attacks["robust_accuracy"].tolist() == pytest.approx(result.robust.mean(axis=0).tolist())
    examples = result.to_pandas("examples")
    assert len(examples) == 20 and examples["clean"].mean() == pytest.approx(result.clean_accuracy)
    profile = result.to_pandas("profile")
    assert set(profile["threat_model"]) == {"linf"}
    assert profile["accuracy"].is_monotonic_decreasing  # nested: a stronger rung never leaves more standing
    # the same images as uint8: the same numbers
    again = midbench.evaluate(standard_model, (mnist5k_test.images[:20], labels), dataset="mnist5k",
                              attacks=["fgsm-linf"], unknown_attacks=True, threat_models=["linf"], device="cpu",
                              name="in-memory")
    np.testing.assert_array_equal(again.robust, result.robust)
    assert again.document.data.indices_sha256 == result.document.data.indices_sha256


def test_transfer_from_a_source_in_memory(standard_model: nn.Module, mnist5k_test) -> None:  # noqa: ANN001
    """A source passed as a module: the source attacked through itself is its white-box attack on the same
    examples (the attack is crafted on the model that classifies)."""
    data = (mnist5k_test.images[:16], mnist5k_test.labels[:16])
    transfer = midbench.evaluate(standard_model, data, dataset="mnist5k", attacks=["pgd-linf"], protocol="transfer",
                                 source=standard_model, device="cpu")
    white = midbench.evaluate(standard_model, data, dataset="mnist5k", attacks=["pgd-linf"], device="cpu")
    assert transfer.document.protocol.name == "transfer"
    np.testing.assert_array_equal(transfer.robust, white.robust)


class _Tuple(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.inner(x)
        return logits, logits


@pytest.mark.parametrize(("call", "error", "words"), [
    (lambda m, x, y: midbench.evaluate(m, (x.float() / 255 * 0.5 + 0.001, y), dataset="mnist5k"), UsageError,
     "1/255 grid"),
    (lambda m, x, y: midbench.evaluate(m, ((x.float() / 255 - 0.13) / 0.3, y), dataset="mnist5k"), UsageError,
     "[0, 1]"),
    (lambda m, x, y: midbench.evaluate(m, (x[:, :, :20], y), dataset="mnist5k"), UsageError, "needs N x 1 x 28 x 28"),
    (lambda m, x, y: midbench.evaluate(m, (x, y + 10), dataset="mnist5k"), UsageError, "outside 0..9"),
    (lambda m, x, y: midbench.evaluate(m, (x, y.float()), dataset="mnist5k"), UsageError, "integers"),
    (lambda m, x, y: midbench.evaluate(m, x, dataset="mnist5k"), UsageError, "(images, labels)"),
    (lambda m, x, y: midbench.evaluate(m, (x, y)), UsageError, "dataset="),
    (lambda m, x, y: midbench.evaluate(_Tuple(m), (x, y), dataset="mnist5k"), ArtifactError, "output=0"),
    (lambda m, x, y: midbench.evaluate(m, (x, y), dataset="mnist5k", attacks=["no-such-attack"]), UsageError,
     "no-such-attack"),
    (lambda m, x, y: midbench.load_model(42), UsageError, "nn.Module"),
])
def test_bad_input_is_refused_with_one_line(call, error: type, words: str, standard_model: nn.Module,  # noqa: ANN001
                                            mnist5k_test) -> None:  # noqa: ANN001
    with pytest.raises(error) as raised:
        call(standard_model, mnist5k_test.images[:4], mnist5k_test.labels[:4])
    message = str(raised.value)
    assert words in message and "\n" not in message


def test_to_pandas_refuses_an_unknown_view(standard_model: nn.Module, mnist5k_test) -> None:  # noqa: ANN001
    result = midbench.evaluate(standard_model, (mnist5k_test.images[:4], mnist5k_test.labels[:4]),
                               dataset="mnist5k", attacks=["fgsm-linf"], device="cpu")
    with pytest.raises(UsageError, match="attacks, profile, examples"):
        result.to_pandas("per-attack")


def test_train_is_midbench_train(tmp_path: Path) -> None:
    """Same options, same weights: the API's train and the command line's write the same checkpoint."""
    options = {"arch": "test-mlp", "epochs": 1, "n_train": 256, "val_size": 32, "batch_size": 64, "device": "cpu"}
    path = midbench.train("standard", out=tmp_path / "api", **options)
    done = CliRunner().invoke(app, ["train", "--method", "standard", "--arch", "test-mlp", "--epochs", "1",
                                    "--n-train", "256", "--val-size", "32", "--batch-size", "64", "--device", "cpu",
                                    "--out", str(tmp_path / "cli"), "--quiet"])
    assert done.exit_code == 0, done.output
    api = midbench.load_model(checkpoint=path)
    cli = midbench.load_model(checkpoint=tmp_path / "cli" / path.name)
    for (name, a), (_, b) in zip(api.model.state_dict().items(), cli.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_importing_midbench_imports_no_torch() -> None:
    code = "import sys, midbench; print(json.dumps('torch' in sys.modules))"
    done = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) is False


class _Denormalise(nn.Module):
    """Turns normalised input back into [0, 1]: a model behind it expects normalised input, like one trained with
    the normalisation in its data pipeline."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


def test_adapters_make_a_model_midbench_can_attack(standard_model: nn.Module, mnist5k_test) -> None:  # noqa: ANN001
    """A model returning a tuple, read with output=0, is the plain model: the same matrices. A model expecting
    normalised input, behind normalize=, classifies the clean images as the plain model does. Both record their
    adapters, which enter the model's identity."""
    data = (mnist5k_test.images[:24], mnist5k_test.labels[:24])
    options = {"dataset": "mnist5k", "attacks": ["fgsm-linf"], "device": "cpu", "name": "m"}
    plain = midbench.evaluate(standard_model, data, **options)
    picked = midbench.evaluate(_Tuple(standard_model), data, output=0, **options)
    np.testing.assert_array_equal(picked.robust, plain.robust)
    assert picked.document.checkpoint.extra["adapters"] == {"output": 0}
    expecting = nn.Sequential(_Denormalise(0.1307, 0.3081), standard_model)
    normalised = midbench.evaluate(expecting, data, normalize="0.1307,0.3081", **options)
    np.testing.assert_array_equal(normalised.clean_correct, plain.clean_correct)
    assert normalised.document.checkpoint.extra["adapters"] == {"normalize": {"mean": [0.1307], "std": [0.3081]}}
    assert len({plain.document.checkpoint.sha256, picked.document.checkpoint.sha256,
                normalised.document.checkpoint.sha256}) == 3


@pytest.mark.parametrize(("options", "words"), [
    ({"normalize": "0.5"}, "1 mean(s) then 1 std(s)"),
    ({"normalize": "0.5,0"}, "std must be positive"),
    ({"normalize": "a,b"}, "1 mean(s) then 1 std(s)"),
    ({"output": 3}, "give an index it has"),
    ({"output": "logits"}, "without 'logits'"),
])
def test_bad_adapters_are_refused_with_one_line(options: dict, words: str, standard_model: nn.Module,
                                                mnist5k_test) -> None:  # noqa: ANN001
    model = _Tuple(standard_model) if "output" in options and isinstance(options["output"], int) else standard_model
    with pytest.raises(UsageError) as raised:
        midbench.evaluate(model, (mnist5k_test.images[:4], mnist5k_test.labels[:4]), dataset="mnist5k",
                          attacks=["fgsm-linf"], device="cpu", **options)
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_eval_takes_the_adapters_and_records_them(standard_checkpoint: Path, tmp_path: Path) -> None:
    """`midbench eval --normalize dataset` on a checkpoint: a different model (its own identity, the adapters in
    the result); `--output 1` on a model that returns a tensor: one line, exit 2, nothing written."""
    common = [str(standard_checkpoint), "--attacks", "fgsm-linf", "--n-examples", "8", "--device", "cpu",
              "--results-dir", str(tmp_path), "--quiet"]
    done = CliRunner().invoke(app, ["eval", *common, "--normalize", "dataset"])
    assert done.exit_code == 0, done.output
    result = midbench.load_result(next((tmp_path / "runs").glob("*/*.json")))
    assert set(result.document.checkpoint.extra["adapters"]["normalize"]) == {"mean", "std"}
    assert result.document.checkpoint.sha256 != midbench.load_model(checkpoint=standard_checkpoint).sha256
    bad = CliRunner().invoke(app, ["eval", *common, "--output", "1", "--name", "other"])
    assert bad.exit_code == 2
    assert "--output 1" in bad.output and len(bad.output.strip().splitlines()) == 1
    assert len(list((tmp_path / "runs").glob("*/*.json"))) == 1


def test_leaderboard_ranks_what_evaluate_saved(standard_model: nn.Module, mnist5k_test, tmp_path: Path) -> None:  # noqa: ANN001
    """Two models saved by evaluate(): one white-box table with a row each, whose clean accuracy is the results'."""
    data = (mnist5k_test.images[:16], mnist5k_test.labels[:16])
    results = {name: midbench.evaluate(model, data, dataset="mnist5k", attacks=["fgsm-linf"], device="cpu",
                                       name=name, results_dir=tmp_path)
               for name, model in (("a", standard_model), ("b", nn.Sequential(standard_model, nn.Identity())))}
    tables = midbench.leaderboard(tmp_path, ci=True)
    assert list(tables) == [("mnist5k", "whitebox")]
    table = tables[("mnist5k", "whitebox")].set_index("name")
    for name, result in results.items():
        assert table.loc[name, "clean"] == pytest.approx(100 * result.clean_accuracy, abs=0.005)
        assert table.loc[name, "clean_lo"] <= table.loc[name, "clean"] <= table.loc[name, "clean_hi"]


def test_progress_is_reported(standard_model: nn.Module, mnist5k_test) -> None:  # noqa: ANN001
    """Every attack reports its examples as they are attacked, up to all of them."""
    seen: dict[str, tuple[int, int]] = {}
    midbench.evaluate(standard_model, (mnist5k_test.images[:12], mnist5k_test.labels[:12]), dataset="mnist5k",
                      attacks=["fgsm-linf", "pgd-l2"], batch_size=4, device="cpu",
                      progress=lambda step, done, total: seen.__setitem__(step, (done, total)))
    assert {step.split("@")[0] for step in seen} >= {"fgsm-linf", "pgd-l2"}
    assert all(done == total for done, total in seen.values())
