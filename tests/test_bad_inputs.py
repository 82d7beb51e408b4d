"""Every bad input of docs/reliability.md (items 1–11): refused early, with its exit code and a one-line message
that names the problem.

One table, one test body: each case is the command line, the files it needs, the exit code and the words the
message must contain. Refusals must come before any compute: the training epoch and the evaluation engine are
replaced by tripwires for every case that expects a refusal. Cases already tested elsewhere (tests/test_cli.py,
tests/test_checkpoint.py, tests/test_training.py, tests/test_data_torchvision.py) are referenced where they
live; cheap ones are repeated here so the table covers the whole list.
"""

from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from typer.testing import CliRunner

from midbench.artifacts.checkpoint import HASH_KEY, save_checkpoint
from midbench.cli.app import app
from midbench.data.datasets import TensorSplit
from midbench.errors import MidbenchError
from midbench.models import build_model

RUNNER = CliRunner()
HINT = "normalisation belongs inside the model"

#: a cheap training command; a case's own options come after it and win
TRAIN = ("train", "--arch", "test-mlp", "--epochs", "1", "--n-train", "64", "--val-size", "0", "--device", "cpu",
         "--quiet", "--out", "{tmp}/run")
#: an evaluation of the untrained test-cnn checkpoint; cases add the attack options
EVAL = ("eval", "{ckpt}", "--device", "cpu", "--quiet", "--results-dir", "{tmp}/results")
FGSM = ("--attacks", "fgsm-linf", "--n-examples", "8")


def eval_file(name: str, *options: str) -> tuple[str, ...]:
    """An evaluation of the file ``{tmp}/<name>`` with FGSM on 8 examples."""
    return ("eval", f"{{tmp}}/{name}", *options, *FGSM, "--device", "cpu", "--quiet", "--results-dir",
            "{tmp}/results")


PLAIN = ("--arch", "test-cnn", "--dataset", "mnist5k")  # options of a plain PyTorch state dict


def write_checkpoint(path: Path, *, arch: str = "test-cnn", num_classes: int = 10,
                     input_shape: tuple[int, int, int] = (1, 28, 28), dataset: str = "mnist5k", seed: int = 0,
                     edit: Callable[[dict[str, torch.Tensor]], None] | None = None) -> Path:
    """An untrained midbench checkpoint with the metadata training writes (``edit`` may change the weights)."""
    torch.manual_seed(seed)
    channels = input_shape[0]
    model = build_model(arch, num_classes, input_shape, [0.0] * channels, [1.0] * channels)
    state = model.state_dict()
    if edit is not None:
        edit(state)
    save_checkpoint(path, state, {"name": path.stem, "arch": arch, "dataset": dataset, "num_classes": num_classes,
                                  "input_shape": list(input_shape), "mean": [0.0] * channels,
                                  "std": [1.0] * channels, "method": "standard", "train_attacks": [], "epoch": 1})
    return path


@pytest.fixture(scope="module")
def untrained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("checkpoint") / "untrained.safetensors")


# ---- files the cases need (each writer gets the case's tmp_path and the good checkpoint) --------------------


class Evil:
    """A pickle that would create ``marker`` if it were ever unpickled with the full unpickler."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _header_edit(old: bytes, new: bytes) -> Callable[[Path, Path], None]:
    """Copy the checkpoint with one same-length edit of its JSON header (the tensors are untouched)."""
    def write(tmp: Path, checkpoint: Path) -> None:
        data = checkpoint.read_bytes()
        (header_length,) = struct.unpack("<Q", data[:8])
        assert data[8:8 + header_length].count(old) >= 1 and len(old) == len(new)
        (tmp / "bad.safetensors").write_bytes(data[:8] + data[8:8 + header_length].replace(old, new, 1)
                                              + data[8 + header_length:])
    return write


def _flip_payload_bit(tmp: Path, checkpoint: Path) -> None:
    data = bytearray(checkpoint.read_bytes())
    data[-5] ^= 0x01  # inside the last tensor
    (tmp / "bad.safetensors").write_bytes(bytes(data))


def _edit_recorded_hash(tmp: Path, checkpoint: Path) -> None:
    data = checkpoint.read_bytes()
    start = data.index(HASH_KEY.encode()) + len(HASH_KEY) + 3  # skip '":"'
    digit = data[start:start + 1]
    _header_edit(HASH_KEY.encode() + b'":"' + digit,
                 HASH_KEY.encode() + b'":"' + (b"0" if digit != b"0" else b"1"))(tmp, checkpoint)


def _foreign(transform: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
             ) -> Callable[[Path, Path], None]:
    """A plain ``torch.save`` state dict of the bare network, transformed."""
    def write(tmp: Path, checkpoint: Path) -> None:
        from midbench.artifacts.checkpoint import load_checkpoint

        state = load_checkpoint(checkpoint).state_dict
        bare = {key[len("net."):]: value for key, value in state.items() if key.startswith("net.")}
        torch.save(transform(bare), tmp / "foreign.pt")
    return write


def _checkpoint_file(name: str, **options: object) -> Callable[[Path, Path], None]:
    """Another checkpoint, ``{tmp}/<name>``, written by :func:`write_checkpoint` with ``options``."""
    def write(tmp: Path, checkpoint: Path) -> None:
        write_checkpoint(tmp / name, **options)  # type: ignore[arg-type]
    return write


def _midbench_with(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path, Path], None]:
    return _checkpoint_file("bad.safetensors", edit=edit)


def _evil_pickle(as_state_dict: bool) -> Callable[[Path, Path], None]:
    """``{tmp}/evil.pt``: a ``torch.save`` zip (``as_state_dict``) or a bare pickle that would run code."""
    def write(tmp: Path, checkpoint: Path) -> None:
        if as_state_dict:
            torch.save({"weights": Evil(tmp / "pwned")}, tmp / "evil.pt")
        else:
            (tmp / "evil.pt").write_bytes(pickle.dumps(Evil(tmp / "pwned")))
    return write


def _truncated(tmp: Path, checkpoint: Path) -> None:
    (tmp / "bad.safetensors").write_bytes(checkpoint.read_bytes()[:-100])


def _float_idx(pixels: np.ndarray, prefix: str) -> Callable[[Path, Path], None]:
    """MNIST in torchvision's layout with float32 pixels (idx type code 0x0D)."""
    def write(tmp: Path, checkpoint: Path) -> None:
        raw = tmp / "data" / "MNIST" / "raw"
        raw.mkdir(parents=True)
        array = pixels.astype(">f4")
        header = bytes([0, 0, 0x0D, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + array.tobytes())
        labels = np.zeros(array.shape[0], np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", labels.size)
                                                          + labels.tobytes())
    return write


def _float_svhn(tmp: Path, checkpoint: Path) -> None:
    """SVHN's train_32x32.mat holding per-channel normalised floats."""
    (tmp / "data").mkdir()
    x = np.random.default_rng(0).normal(size=(32, 32, 3, 4)).astype(np.float32)
    scipy.io.savemat(str(tmp / "data" / "train_32x32.mat"), {"X": x, "y": np.ones((4, 1), np.uint8)})


def _wide_svhn(tmp: Path, checkpoint: Path) -> None:
    """SVHN's train_32x32.mat holding 16-bit pixels (values above 255 would wrap if cast)."""
    (tmp / "data").mkdir()
    x = np.full((32, 32, 3, 4), 1000, np.int16)
    scipy.io.savemat(str(tmp / "data" / "train_32x32.mat"), {"X": x, "y": np.ones((4, 1), np.uint8)})


def _float_cifar(tmp: Path, checkpoint: Path) -> None:
    """CIFAR-10's first training batch holding floats already scaled to [0, 1]."""
    (tmp / "data" / "cifar-10-batches-py").mkdir(parents=True)
    rows = np.random.default_rng(0).random((4, 3072))
    batch = pickle.dumps({b"data": rows, b"labels": [0, 1, 2, 3]}, protocol=4)
    (tmp / "data" / "cifar-10-batches-py" / "data_batch_1").write_bytes(batch)


def _registry_with_negative_steps(tmp: Path, checkpoint: Path) -> None:
    (tmp / "registry").mkdir()
    (tmp / "registry" / "mine.toml").write_text(
        '[[attack]]\nid = "pgd-linf-mine"\nversion = 1\nfamily = "linf"\nnorm = "Linf"\n'
        'implementation = "midbench.attacks.gradient:PGD"\ncitation = "Madry et al. 2018"\n'
        'params = { steps = -1, step_size = "eps/40", random_start = true }\n')


def _file_in_the_way(tmp: Path, checkpoint: Path) -> None:
    (tmp / "file").write_text("a file where a directory should be")


def _read_only_dir(tmp: Path, checkpoint: Path) -> None:
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0o555)


def _write(name: str, content: bytes | str) -> Callable[[Path, Path], None]:
    def write(tmp: Path, checkpoint: Path) -> None:
        path = tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return write


def _inf_bias(state: dict[str, torch.Tensor]) -> None:
    state["net.linear.bias"][3] = float("inf")


def _plain_safetensors(tmp: Path, checkpoint: Path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, str(tmp / "bad.safetensors"))


ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_non_root = pytest.mark.skipif(ROOT, reason="root may write to a read-only directory")


@dataclass(frozen=True)
class Case:
    """One bad input: the command (``{tmp}``: the test's tmp_path, ``{ckpt}``: a good checkpoint), the files it
    needs, the exit code and the words the message must contain. ``computes``: the outcome needs a model
    forward pass (a success or a numerical failure), so the compute tripwires stay off."""

    item: int
    name: str
    args: tuple[str, ...]
    code: int
    message: tuple[str, ...]
    setup: Callable[[Path, Path], None] | None = None
    computes: bool = False


CASES = [
    # 1. checkpoint and dataset disagree → 3, naming both (also tests/test_checkpoint.py)
    Case(1, "class-count", (*EVAL, *FGSM, "--dataset", "mnist5k"), 3, ("100 classes", "10 classes"),
         _checkpoint_file("c.safetensors", arch="test-mlp", num_classes=100, dataset="cifar100")),
    Case(1, "input-shape", (*EVAL, *FGSM, "--dataset", "mnist5k"), 3, ("(3, 32, 32)", "(1, 28, 28)", "cifar10"),
         _checkpoint_file("c.safetensors", input_shape=(3, 32, 32), dataset="cifar10")),
    Case(1, "mid-teacher-of-another-dataset", (*TRAIN, "--method", "mid", "--arch", "lenet", "--teacher",
                                               "{tmp}/c.safetensors"), 3, ("(3, 32, 32)", "(1, 28, 28)"),
         _checkpoint_file("c.safetensors", input_shape=(3, 32, 32), dataset="cifar10")),
    # 2. float, 0–255 or normalised data → 2 with the hint (library inputs: test_library_refuses_unscaled_inputs)
    Case(2, "svhn-normalised-floats", (*TRAIN, "--dataset", "svhn", "--data-dir", "{tmp}/data", "--arch",
                                        "test-cnn"), 2, (HINT, "already normalised", "train_32x32.mat"),
         _float_svhn),
    Case(2, "cifar-floats-in-0-1", (*TRAIN, "--dataset", "cifar10", "--data-dir", "{tmp}/data", "--arch",
                                     "test-cnn"), 2, (HINT, "already scaled to [0, 1]", "data_batch_1"),
         _float_cifar),
    Case(2, "mnist-float-0-255", (*TRAIN, "--dataset", "mnist", "--data-dir", "{tmp}/data"), 2,
         (HINT, "0–255 scale"), _float_idx(np.linspace(0, 255, 4 * 28 * 28).reshape(4, 28, 28), "train")),
    Case(2, "eval-mnist-normalised", (*EVAL, *FGSM, "--dataset", "mnist", "--data-dir", "{tmp}/data"), 2,
         (HINT, "already normalised", "t10k-images"),
         _float_idx(np.linspace(-0.42, 2.8, 4 * 28 * 28).reshape(4, 28, 28), "t10k")),
    # integer pixels wider than uint8 are an incompatible data file (3, like CIFAR's), never cast silently
    Case(2, "svhn-int16-pixels", (*TRAIN, "--dataset", "svhn", "--data-dir", "{tmp}/data", "--arch", "test-cnn"), 3,
         ("X must be uint8", "re-download"), _wide_svhn),
    # 3. ε on the 0–255 scale, negative or not a number → 2; 8/255 is accepted (also tests/test_cli.py)
    Case(3, "train-eps-255-scale", (*TRAIN, "--method", "pgd-at", "--eps", "8"), 2, ("8/255",)),
    Case(3, "eval-eps-255-scale", (*EVAL, *FGSM, "--eps", "8"), 2, ("larger than 1", "8/255")),
    Case(3, "eval-eps-negative", (*EVAL, *FGSM, "--eps", "-0.1"), 2, ("non-negative",)),
    Case(3, "eval-eps-l2-negative", (*EVAL, *FGSM, "--eps", "L2=-1"), 2, ("non-negative",)),
    Case(3, "eval-eps-text", (*EVAL, *FGSM, "--eps", "abc"), 2, ("fraction like 8/255",)),
    Case(3, "eval-eps-fraction-accepted", (*EVAL, *FGSM, "--eps", "8/255", "--format", "json"), 0,
         ('"eps": 0.03137254901960784',), computes=True),
    # 4. unknown names → 2 with close matches (also tests/test_cli.py, tests/test_data_torchvision.py)
    Case(4, "dataset", (*TRAIN, "--dataset", "mnist6k"), 2, ("unknown dataset", "Did you mean 'mnist5k'")),
    Case(4, "eval-dataset", (*EVAL, *FGSM, "--dataset", "cifar-10"), 2, ("Did you mean 'cifar10'",)),
    Case(4, "architecture", (*TRAIN, "--arch", "lenett"), 2, ("unknown architecture", "Did you mean 'lenet'")),
    Case(4, "eval-architecture", eval_file("foreign.pt", "--arch", "test-cnnn", "--dataset", "mnist5k"), 2,
         ("Did you mean 'test-cnn'",), _foreign(lambda state: state)),
    Case(4, "method", (*TRAIN, "--method", "pgd-att"), 2, ("unknown method", "Did you mean 'pgd-at'")),
    Case(4, "train-attack", (*TRAIN, "--method", "pgd-at", "--train-attack", "pgd-lnf"), 2,
         ("unknown attack", "Did you mean 'pgd-linf'")),
    Case(4, "eval-attack", (*EVAL, "--attacks", "pgd-lnf"), 2, ("unknown attack", "Did you mean 'pgd-linf'")),
    Case(4, "pool-attack", (*TRAIN, "--method", "mid", "--arch", "lenet", "--pool", "mim-lnf"), 2,
         ("Did you mean 'mim-linf'",)),
    Case(4, "suite", ("attacks", "list", "--suite", "smok"), 2, ("unknown suite", "Did you mean 'smoke'")),
    # 5. empty MID pool, negative steps, batch size 0, too many examples (clamped with a note)
    Case(5, "mid-pool-empty", (*TRAIN, "--method", "mid", "--arch", "lenet", "--pool", ""), 2, ("--pool is empty",)),
    Case(5, "mid-pool-commas", (*TRAIN, "--method", "mid", "--arch", "lenet", "--pool", ", ,"), 2,
         ("--pool is empty",)),
    Case(5, "negative-steps", (*TRAIN, "--method", "pgd-at", "--attack-steps", "-1"), 2, ("--attack-steps",)),
    Case(5, "zero-steps", (*TRAIN, "--method", "pgd-at", "--attack-steps", "0"), 2, ("--attack-steps",)),
    Case(5, "registry-negative-steps", (*EVAL, "--attacks", "pgd-linf-mine", "--registry-dir", "{tmp}/registry"),
         2, ("steps must be at least 1", "mine.toml"), _registry_with_negative_steps),
    Case(5, "train-batch-size-0", (*TRAIN, "--batch-size", "0"), 2, ("--batch-size",)),
    Case(5, "eval-batch-size-0", (*EVAL, *FGSM, "--batch-size", "0"), 2, ("--batch-size",)),
    Case(5, "eval-n-examples-0", (*EVAL, "--attacks", "fgsm-linf", "--n-examples", "0"), 2, ("--n-examples",)),
    Case(5, "eval-n-examples-negative", (*EVAL, "--attacks", "fgsm-linf", "--n-examples", "-5"), 2,
         ("--n-examples",)),
    Case(5, "train-n-train-0", (*TRAIN, "--n-train", "0"), 2, ("--n-train",)),
    Case(5, "negative-weight-decay", (*TRAIN, "--weight-decay", "-1"), 2, ("--weight-decay",)),
    Case(5, "n-examples-clamped", (*EVAL, "--attacks", "fgsm-linf", "--n-examples", "5000"), 0,
         ("note: --n-examples 5000 is larger than the test split; using all 1000",), computes=True),
    # 6. a pickle with code in it → refused, nothing executed (also tests/test_checkpoint.py)
    Case(6, "pickle-with-code-as-state-dict", eval_file("evil.pt", *PLAIN), 3,
         ("refused", "nothing was executed"),
         _evil_pickle(as_state_dict=True)),
    Case(6, "pickle-with-code-as-checkpoint", eval_file("evil.pt"), 3, ("not a midbench checkpoint",),
         _evil_pickle(as_state_dict=False)),
    Case(6, "pickle-with-code-as-mid-source", (*TRAIN, "--method", "mid", "--arch", "lenet", "--source",
                                               "{tmp}/evil.pt"), 3, ("not a midbench checkpoint",),
         _evil_pickle(as_state_dict=True)),
    # 7. not a checkpoint → 3 (empty, HTML, truncated, text: tests/test_checkpoint.py)
    Case(7, "empty", eval_file("bad.safetensors"), 3, ("not a checkpoint", "empty"),
         _write("bad.safetensors", b"")),
    Case(7, "html", eval_file("bad.safetensors"), 3, ("not a checkpoint", "HTML"),
         _write("bad.safetensors", "\n  <!DOCTYPE html><html><body>Not Found</body></html>")),
    Case(7, "truncated", eval_file("bad.safetensors"), 3, ("not a checkpoint", "truncated"),
         _truncated),
    Case(7, "numpy-file", eval_file("bad.npy"), 3, ("not a midbench checkpoint",),
         lambda tmp, checkpoint: np.save(tmp / "bad.npy", np.zeros(10))),
    Case(7, "png", eval_file("bad.safetensors"), 3, ("not a midbench checkpoint",),
         _write("bad.safetensors", b"\x89PNG\r\n\x1a\n" + bytes(100))),
    Case(7, "plain-safetensors", eval_file("bad.safetensors"), 3, ("without midbench metadata",),
         _plain_safetensors),
    Case(7, "not-a-pytorch-file", eval_file("bad.pt", *PLAIN),
         3, ("not a checkpoint", "neither a PyTorch nor a safetensors file"),
         _write("bad.pt", "model weights, version 2\n" * 20)),
    Case(7, "missing", eval_file("nothing.safetensors"), 3, ("checkpoint not found",)),
    # 8. altered tensors or metadata → 3: the recorded SHA-256 does not match
    Case(8, "payload-bit-flip", eval_file("bad.safetensors"), 3, ("SHA-256",), _flip_payload_bit),
    Case(8, "metadata-edited", eval_file("bad.safetensors"), 3, ("SHA-256",),
         _header_edit(b"standard", b"pgd-at--")),
    Case(8, "recorded-hash-edited", eval_file("bad.safetensors"), 3, ("SHA-256",),
         _edit_recorded_hash),
    # 9. DDP's module. prefix accepted; missing or unexpected keys → 3 (also tests/test_checkpoint.py)
    Case(9, "ddp-prefix-accepted", eval_file("foreign.pt", *PLAIN), 0, ("result:",),
         _foreign(lambda state: {f"module.{key}": value for key, value in state.items()}), computes=True),
    Case(9, "foreign-missing-key", eval_file("foreign.pt", *PLAIN), 3, ("missing keys", "linear.bias"),
         _foreign(lambda state: {k: v for k, v in state.items() if k != "linear.bias"})),
    Case(9, "foreign-wrong-shape", eval_file("foreign.pt", *PLAIN), 3, ("shape mismatch",),
         _foreign(lambda state: {**state, "linear.bias": torch.zeros(7)})),
    Case(9, "midbench-unexpected-key", eval_file("bad.safetensors"), 3,
         ("unexpected keys", "net.extra"), _midbench_with(lambda state: state.update({"net.extra": torch.zeros(2)}))),
    Case(9, "midbench-missing-key", eval_file("bad.safetensors"), 3, ("missing keys", "net.conv.bias"),
         _midbench_with(lambda state: state.pop("net.conv.bias"))),
    # 10. non-finite logits → 4, no result (NaN: tests/test_faults.py; NaN loss: tests/test_training.py and
    #     test_nan_loss_in_a_later_epoch_keeps_the_last_good_checkpoint below)
    Case(10, "inf-logits", eval_file("bad.safetensors"), 4,
         ("NaN or Inf logits", "no result was written"), _midbench_with(_inf_bias), computes=True),
    # 11. output directories that cannot be created or written → 2 before any compute (leaderboard:
    #     test_leaderboard_output_that_cannot_be_written below)
    Case(11, "train-out-cannot-be-created", (*TRAIN, "--out", "{tmp}/file/run"), 2, ("cannot create directory",),
         _file_in_the_way),
    Case(11, "eval-results-dir-cannot-be-created", (*EVAL, *FGSM, "--results-dir", "{tmp}/file/results"), 2,
         ("cannot create directory",), _file_in_the_way),
    Case(11, "train-out-read-only", (*TRAIN, "--out", "{tmp}/locked/run"), 2, ("cannot create directory",),
         _read_only_dir),
    Case(11, "train-out-is-read-only", (*TRAIN, "--out", "{tmp}/locked"), 2, ("not writable",), _read_only_dir),
    Case(11, "eval-results-dir-read-only", (*EVAL, *FGSM, "--results-dir", "{tmp}/locked"), 2, ("not writable",),
         _read_only_dir),
]
READ_ONLY_CASES = {"train-out-read-only", "train-out-is-read-only", "eval-results-dir-read-only"}


def _params() -> list[object]:
    return [pytest.param(case, id=f"{case.item}-{case.name}",
                         marks=[needs_non_root] if case.name in READ_ONLY_CASES else [])
            for case in CASES]


def _tripwire(*args: object, **kwargs: object) -> None:
    raise AssertionError("compute started before the bad input was refused")


@pytest.mark.filterwarnings("ignore:.*MD5 mismatch:UserWarning")  # the data files written here are not the release
@pytest.mark.parametrize("case", _params())
def test_bad_input(case: Case, untrained_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if case.setup is not None:
        case.setup(tmp_path, untrained_checkpoint)
    checkpoint = tmp_path / "c.safetensors" if (tmp_path / "c.safetensors").exists() else untrained_checkpoint
    args = [arg.format(tmp=tmp_path, ckpt=checkpoint) for arg in case.args]
    if not case.computes:
        # An AssertionError inside a command is reported as an internal error (exit 1), failing the case.
        monkeypatch.setattr("midbench.training.loop._run_epoch", _tripwire)
        monkeypatch.setattr("midbench.evaluation.runner.evaluate", _tripwire)
    try:
        result = RUNNER.invoke(app, args)
    finally:
        if (tmp_path / "locked").exists():
            (tmp_path / "locked").chmod(0o755)  # let pytest clean up
    output = result.output
    assert result.exit_code == case.code, output
    for words in case.message:
        assert words in output, output
    assert not (tmp_path / "pwned").exists(), "code from a pickle ran"
    if case.code != 0:
        assert len(output.strip().splitlines()) == 1, output
        assert not list(tmp_path.glob("**/runs/*/*.json")), "a refused evaluation wrote a result"
        assert not (tmp_path / "run" / "model.safetensors").exists()


def test_every_bad_input_item_has_a_case() -> None:
    """Items 1–11 of docs/reliability.md's list each have at least one row."""
    assert sorted({case.item for case in CASES}) == list(range(1, 12))
    assert len({case.name for case in CASES}) == len(CASES)


# ---- bad input 2 at the library boundary: what reaches a model must be floats in [0, 1] --------------------


def _attack_call(x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        from midbench.attacks.specs import load_registry

        attack = load_registry().get("fgsm-linf").resolve({"Linf": 0.3}).build()
        model = build_model("test-mlp", 10, (1, 28, 28))
        return attack(model, x, torch.zeros(x.shape[0], dtype=torch.long))
    return call


PIXELS = torch.linspace(0, 1, 2 * 28 * 28).reshape(2, 1, 28, 28)
LIBRARY_CASES = [
    ("split-of-scaled-floats", lambda: TensorSplit(PIXELS, torch.zeros(2, dtype=torch.long)),
     "already scaled to [0, 1]"),
    ("split-of-normalised-floats", lambda: TensorSplit((PIXELS - 0.13) / 0.31, torch.zeros(2, dtype=torch.long)),
     "already normalised"),
    ("attack-on-uint8", _attack_call((PIXELS * 255).to(torch.uint8)), "float images in [0, 1]"),
    ("attack-on-0-255-floats", _attack_call(PIXELS * 255), "must lie in [0, 1]"),
    ("attack-on-normalised", _attack_call((PIXELS - 0.13) / 0.31), "must lie in [0, 1]"),
]


@pytest.mark.parametrize(("name", "call", "message"), LIBRARY_CASES, ids=[case[0] for case in LIBRARY_CASES])
def test_library_refuses_unscaled_inputs(name: str, call: Callable[[], object], message: str) -> None:
    with pytest.raises(MidbenchError) as raised:
        call()
    assert raised.value.exit_code == 2
    assert message in str(raised.value) and HINT in str(raised.value)


# ---- bad input 10 in a later epoch, bad input 11 for the leaderboard --------------------------------------


def test_nan_loss_in_a_later_epoch_keeps_the_last_good_checkpoint(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss turns NaN in epoch 2: exit 4, and epoch 1's model and resume state stay, byte for byte."""
    from midbench.artifacts.checkpoint import load_checkpoint
    from midbench.training import loop

    real_build_task = loop.build_task

    def poisoned_task(config: object, dataset: object) -> object:
        task = real_build_task(config, dataset)
        real_step, real_start, epoch = task.step, task.on_epoch_start, {"now": 0}

        def on_epoch_start(number: int, model: torch.nn.Module) -> None:
            epoch["now"] = number
            real_start(number, model)

        def step(*args: object) -> dict[str, torch.Tensor]:
            outputs = real_step(*args)
            if epoch["now"] == 2:
                outputs["loss"] = outputs["loss"] * float("nan")
            return outputs

        task.on_epoch_start, task.step = on_epoch_start, step
        return task

    monkeypatch.setattr(loop, "build_task", poisoned_task)
    args = [arg.format(tmp=tmp_path) for arg in TRAIN] + ["--epochs", "3"]
    result = RUNNER.invoke(app, args)
    assert result.exit_code == 4, result.output
    assert "loss became nan in epoch 2" in result.output and "last good checkpoint is kept" in result.output
    checkpoint = load_checkpoint(tmp_path / "run" / "model.safetensors")
    assert checkpoint.metadata["epoch"] == 1
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint.state_dict.values())
    assert len((tmp_path / "run" / "log.jsonl").read_text().splitlines()) == 1
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_leaderboard_output_that_cannot_be_written(untrained_checkpoint: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    evaluated = RUNNER.invoke(app, [arg.format(tmp=tmp_path, ckpt=untrained_checkpoint) for arg in (*EVAL, *FGSM)])
    assert evaluated.exit_code == 0, evaluated.output
    (tmp_path / "file").write_text("in the way")
    refused = RUNNER.invoke(app, ["leaderboard", "--results-dir", str(results), "--output",
                                  str(tmp_path / "file" / "board.md")])
    assert refused.exit_code == 2, refused.output
    assert "cannot create directory" in refused.output and len(refused.output.strip().splitlines()) == 1
