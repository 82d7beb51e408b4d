"""Checkpoints: round trip, integrity hash, foreign state dicts, and every bad file of docs/reliability.md.

Each bad input is exercised through the CLI (``midbench eval``) so the exit code and one-line message are
checked, not just the exception.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from midbench.artifacts.checkpoint import load_checkpoint, save_checkpoint
from midbench.cli.app import app
from midbench.errors import ArtifactError
from midbench.models import build_model

RUNNER = CliRunner()


def _eval(*args: str) -> tuple[int, str]:
    result = RUNNER.invoke(app, ["eval", *args, "--attacks", "fgsm-linf", "--n-examples", "8", "--device", "cpu"])
    return result.exit_code, result.output


def test_round_trip_keeps_weights_and_metadata(standard_checkpoint: Path) -> None:
    checkpoint = load_checkpoint(standard_checkpoint)
    meta = checkpoint.metadata
    for field in ("format", "midbench_version", "torch_version", "arch", "dataset", "num_classes", "input_shape",
                  "method", "train_attacks", "config", "seed", "epoch", "metrics"):
        assert field in meta, field
    copy = standard_checkpoint.parent / "copy.safetensors"
    save_checkpoint(copy, checkpoint.state_dict, meta)
    again = load_checkpoint(copy)
    assert again.metadata == meta
    assert all(torch.equal(again.state_dict[k], v) for k, v in checkpoint.state_dict.items())


class Evil:
    """A pickle payload that would create a file if it were ever unpickled with the full unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _truncated(source: Path, target: Path) -> None:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


def _bit_flipped(source: Path, target: Path) -> None:
    data = bytearray(source.read_bytes())
    data[-5] ^= 0x01  # a bit inside the last tensor's payload
    target.write_bytes(bytes(data))


def _malicious_zip(source: Path, target: Path) -> None:
    torch.save({"weights": Evil(target.parent / "pwned")}, target)


def _malicious_legacy(source: Path, target: Path) -> None:
    target.write_bytes(pickle.dumps(Evil(target.parent / "pwned")))


BAD_FILES: list[tuple[str, Callable[[Path, Path], None], tuple[str, ...], str]] = [
    ("empty", lambda s, t: t.write_bytes(b""), (), "empty"),
    ("html", lambda s, t: t.write_text("<!DOCTYPE html><html><body>404</body></html>"), (), "HTML"),
    ("truncated", _truncated, (), "truncated"),
    ("bit-flip", _bit_flipped, (), "SHA-256"),
    ("text", lambda s, t: t.write_text("just some notes\n"), (), "not a midbench checkpoint"),
    ("malicious-pickle-zip", _malicious_zip, ("--arch", "test-cnn", "--dataset", "mnist5k"), "refused"),
    ("malicious-pickle-legacy", _malicious_legacy, ("--arch", "test-cnn", "--dataset", "mnist5k"), "refused"),
    ("truncated-foreign", lambda s, t: t.write_bytes(b"PK\x03\x04" + b"\0" * 40),
     ("--arch", "test-cnn", "--dataset", "mnist5k"), "not a checkpoint"),
]


@pytest.mark.parametrize(("kind", "make", "extra", "message"), BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_checkpoint_exits_3_with_one_line(kind: str, make: Callable[[Path, Path], None], extra: tuple[str, ...],
                                              message: str, standard_checkpoint: Path, tmp_path: Path) -> None:
    bad = tmp_path / f"{kind}.safetensors"
    make(standard_checkpoint, bad)
    code, output = _eval(str(bad), *extra, "--results-dir", str(tmp_path / "results"))
    assert code == 3, output
    assert message in output
    assert len(output.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists(), "no code from the pickle may run"
    assert not (tmp_path / "results" / "runs").exists(), "a refused evaluation writes no result"


def test_class_count_mismatch_exits_3_naming_both(tmp_path: Path) -> None:
    model = build_model("test-mlp", 100, (1, 28, 28))
    path = tmp_path / "hundred.safetensors"
    save_checkpoint(path, model.state_dict(), {"name": "hundred", "arch": "test-mlp", "dataset": "cifar100-ish",
                                              "num_classes": 100, "input_shape": [1, 28, 28], "method": "standard",
                                              "train_attacks": []})
    code, output = _eval(str(path), "--dataset", "mnist5k", "--results-dir", str(tmp_path))
    assert code == 3
    assert "100 classes" in output and "10 classes" in output


def test_foreign_state_dict_with_ddp_prefix_loads(standard_checkpoint: Path, tmp_path: Path) -> None:
    """A plain state dict saved from DistributedDataParallel (``module.`` prefix) evaluates with --arch."""
    state = load_checkpoint(standard_checkpoint).state_dict
    plain = {f"module.{k[len('net.'):]}": v for k, v in state.items() if k.startswith("net.")}
    torch.save(plain, tmp_path / "ddp.pt")
    code, output = _eval(str(tmp_path / "ddp.pt"), "--arch", "test-cnn", "--dataset", "mnist5k",
                         "--results-dir", str(tmp_path / "results"))
    assert code == 0, output


def test_foreign_state_dict_with_wrong_keys_exits_3(standard_checkpoint: Path, tmp_path: Path) -> None:
    torch.save({"layer.weight": torch.zeros(3)}, tmp_path / "other.pt")
    code, output = _eval(str(tmp_path / "other.pt"), "--arch", "test-cnn", "--dataset", "mnist5k")
    assert code == 3
    assert "missing keys" in output


def test_load_checkpoint_refuses_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")


def test_model_metadata_round_trips_and_keeps_unknown_keys() -> None:
    """One reader and one writer: what a checkpoint stores comes back unchanged, fields a newer writer added
    included, and the typed fields are typed."""
    from midbench.artifacts.metadata import ModelMetadata

    stored = {"arch": "lenet", "num_classes": 10, "input_shape": [1, 28, 28], "dataset": "mnist5k",
              "mean": [0.1307], "std": [0.3081], "method": "mid", "method_params": {"inner_lr": 1e-4},
              "train_attacks": [{"id": "pgd-linf"}], "source_checkpoint": "../standard/model.safetensors",
              "adversarial_training_baseline": False, "composition": "encoder from the student file"}
    record = ModelMetadata.from_dict(stored)
    assert record.input_shape == (1, 28, 28) and record.mean == (0.1307,) and record.num_classes == 10
    assert record.extra == {"composition": "encoder from the student file"}
    assert record.to_dict() == stored


@pytest.mark.parametrize(("stored", "message"), [
    ({"num_classes": 10, "input_shape": [1, 28, 28]}, r"lacks metadata field\(s\) arch"),
    ({"arch": "lenet", "num_classes": "ten", "input_shape": [1, 28, 28]}, "malformed metadata"),
])
def test_model_metadata_refuses_what_cannot_rebuild_a_model(stored: dict, message: str) -> None:
    from midbench.artifacts.metadata import ModelMetadata
    from midbench.errors import ArtifactError

    with pytest.raises(ArtifactError, match=message) as caught:
        ModelMetadata.from_dict(stored, "checkpoint x.safetensors")
    assert "\n" not in str(caught.value) and caught.value.exit_code == 3
