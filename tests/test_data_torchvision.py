"""Torchvision-layout datasets (MNIST, Fashion-MNIST, CIFAR-10/100, SVHN) read from tiny files written here.

Every file is written in the on-disk format torchvision downloads (idx files, CIFAR's Python 2 pickles, SVHN's
MATLAB files) with known pixels and labels; nothing is mocked and nothing is downloaded.
"""

from __future__ import annotations

import os
import pickle
import struct
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from midbench.data import get_dataset, load_split
from midbench.errors import ArtifactError, UsageError

Expected = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (images (N, C, H, W) uint8, labels int64)
SIZES = {"train": 10, "test": 6}  # CIFAR-10 train: 5 batches of 2
SVHN_SIZES = {"train": 7, "test": 5}


def _images(seed: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
    """``n`` random uint8 images of ``shape`` (random so that any transposition or flip is caught)."""
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _labels(seed: int, n: int, num_classes: int) -> np.ndarray:
    """``n`` labels that include both ends of the range."""
    rest = np.random.default_rng(seed).integers(0, num_classes, n - 2)
    return np.concatenate([[num_classes - 1, 0], rest]).astype(np.int64)


# ---- MNIST / Fashion-MNIST: uncompressed idx files --------------------------------------------------------


def _idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """An idx file: magic (0, 0, type, ndim), big-endian uint32 dimensions, then the raw data."""
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def _write_idx_set(root: Path, folder: str) -> Expected:
    """``root/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``; returns what was written."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    expected: Expected = {}
    for seed, (split, prefix) in enumerate((("train", "train"), ("test", "t10k"))):
        n = SIZES[split]
        images, labels = _images(seed, n, (28, 28)), _labels(seed, n, 10)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx_bytes(images))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels.astype(np.uint8)))
        expected[split] = (images[:, None], labels)
    return expected


def write_mnist(root: Path) -> Expected:
    """MNIST in torchvision's layout."""
    return _write_idx_set(root, "MNIST")


def write_fashion_mnist(root: Path) -> Expected:
    """Fashion-MNIST in torchvision's layout."""
    return _write_idx_set(root, "FashionMNIST")


# ---- CIFAR-10 / CIFAR-100: pickled batches ----------------------------------------------------------------


def _py2_str(value: bytes) -> bytes:
    """A Python 2 ``str`` as cPickle wrote it (SHORT_BINSTRING or BINSTRING)."""
    if len(value) < 256:
        return b"U" + bytes([len(value)]) + value
    return b"T" + struct.pack("<i", len(value)) + value


def _py2_int(value: int) -> bytes:
    """A BININT opcode."""
    return b"J" + struct.pack("<i", value)


def _py2_batch(rows: np.ndarray, labels: list[int], label_key: bytes) -> bytes:
    """A CIFAR batch byte for byte as released: Python 2 cPickle, protocol 2, numpy 1.x array of (N, 3072)."""
    dtype_state = b"(" + _py2_int(3) + _py2_str(b"|") + b"NNN" + b"".join(map(_py2_int, (-1, -1, 0))) + b"t"
    dtype = b"cnumpy\ndtype\n" + _py2_str(b"u1") + _py2_int(0) + _py2_int(1) + b"\x87R" + dtype_state + b"b"
    shape = _py2_int(rows.shape[0]) + _py2_int(rows.shape[1]) + b"\x86"
    state = b"(" + _py2_int(1) + shape + dtype + b"\x89" + _py2_str(rows.tobytes()) + b"t"
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + _py2_int(0) + b"\x85"
             + _py2_str(b"b") + b"\x87R" + state + b"b")
    names = b"](" + b"".join(_py2_str(f"img_{i}.png".encode()) for i in range(len(labels))) + b"e"
    label_list = b"](" + b"".join(_py2_int(label) for label in labels) + b"e"
    return (b"\x80\x02}(" + _py2_str(b"batch_label") + _py2_str(b"a batch") + _py2_str(b"data") + array
            + _py2_str(b"filenames") + names + _py2_str(label_key) + label_list + b"u.")


def _py3_batch(rows: np.ndarray, labels: list[int], label_key: bytes, protocol: int = 4) -> bytes:
    """The same batch re-pickled by Python 3 and numpy 2 (protocol 4: Python 3.8–3.13's default)."""
    return pickle.dumps({b"batch_label": b"a batch", b"data": rows, label_key: labels}, protocol)


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """Rows of 3072 bytes as in CIFAR: the 1024 red pixels (row-major), then the green, then the blue."""
    return np.stack([np.concatenate([image[c].ravel() for c in range(3)]) for image in images])


def _write_cifar(root: Path, folder: str, files: dict[str, list[str]], num_classes: int, label_key: bytes,
                 pickler: Callable[[np.ndarray, list[int], bytes], bytes]) -> Expected:
    """Write each split's batches (``files[split]``, in order); returns the concatenated contents."""
    (root / folder).mkdir(parents=True)
    expected: Expected = {}
    for seed, (split, names) in enumerate(files.items()):
        images = _images(10 + seed, SIZES[split], (3, 32, 32))
        labels = _labels(10 + seed, SIZES[split], num_classes)
        per_file = SIZES[split] // len(names)
        for i, name in enumerate(names):
            part = slice(i * per_file, (i + 1) * per_file)
            batch = pickler(_cifar_rows(images[part]), labels[part].tolist(), label_key)
            (root / folder / name).write_bytes(batch)
        expected[split] = (images, labels)
    return expected


CIFAR10_FILES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
CIFAR100_FILES = {"train": ["train"], "test": ["test"]}


def write_cifar10(root: Path) -> Expected:
    """CIFAR-10 as released (Python 2 pickles)."""
    return _write_cifar(root, "cifar-10-batches-py", CIFAR10_FILES, 10, b"labels", _py2_batch)


def write_cifar10_py3(root: Path) -> Expected:
    """CIFAR-10 re-pickled by Python 3."""
    return _write_cifar(root, "cifar-10-batches-py", CIFAR10_FILES, 10, b"labels", _py3_batch)


def write_cifar10_protocol5(root: Path) -> Expected:
    """CIFAR-10 re-pickled with protocol 5 (Python 3.14's default; numpy then pickles via ``_frombuffer``)."""
    return _write_cifar(root, "cifar-10-batches-py", CIFAR10_FILES, 10, b"labels",
                        lambda rows, labels, key: _py3_batch(rows, labels, key, protocol=5))


def write_cifar100(root: Path) -> Expected:
    """CIFAR-100 as released (Python 2 pickles, fine labels)."""
    return _write_cifar(root, "cifar-100-python", CIFAR100_FILES, 100, b"fine_labels", _py2_batch)


# ---- SVHN: MATLAB files -----------------------------------------------------------------------------------


def write_svhn(root: Path) -> Expected:
    """``{train,test}_32x32.mat``: X (32, 32, 3, N) uint8, y (N, 1) with the digit 0 stored as 10."""
    root.mkdir(parents=True, exist_ok=True)
    expected: Expected = {}
    for seed, split in enumerate(("train", "test")):
        images = _images(20 + seed, SVHN_SIZES[split], (3, 32, 32))
        labels = _labels(20 + seed, SVHN_SIZES[split], 10)
        x = np.ascontiguousarray(images.transpose(2, 3, 1, 0))  # (N, C, H, W) -> (H, W, C, N)
        y = np.where(labels == 0, 10, labels).astype(np.uint8)[:, None]
        scipy.io.savemat(str(root / f"{split}_32x32.mat"), {"X": x, "y": y})
        expected[split] = (images, labels)
    return expected


# ---- loading what was written -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One dataset written one way."""

    name: str
    write: Callable[[Path], Expected]
    input_shape: tuple[int, int, int]
    num_classes: int
    md5_files: dict[str, int]  # split -> files checked against the published MD5 (each warns here)


CASES = [
    Case("mnist", write_mnist, (1, 28, 28), 10, {"train": 0, "test": 0}),
    Case("fashion-mnist", write_fashion_mnist, (1, 28, 28), 10, {"train": 0, "test": 0}),
    Case("cifar10", write_cifar10, (3, 32, 32), 10, {"train": 5, "test": 1}),
    Case("cifar10", write_cifar10_py3, (3, 32, 32), 10, {"train": 5, "test": 1}),
    Case("cifar10", write_cifar10_protocol5, (3, 32, 32), 10, {"train": 5, "test": 1}),
    Case("cifar100", write_cifar100, (3, 32, 32), 100, {"train": 1, "test": 1}),
    Case("svhn", write_svhn, (3, 32, 32), 10, {"train": 1, "test": 1}),
]
WRITERS = {"mnist": write_mnist, "fashion-mnist": write_fashion_mnist, "cifar10": write_cifar10,
           "cifar100": write_cifar100, "svhn": write_svhn}


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.write.__name__.removeprefix("write_"))
def test_loads_exactly_what_was_written(case: Case, tmp_path: Path) -> None:
    """Both splits come back as uint8 (N, C, H, W) / int64 with the written pixels, layout and labels."""
    spec = get_dataset(case.name)
    assert (spec.input_shape, spec.num_classes) == (case.input_shape, case.num_classes)
    expected = case.write(tmp_path)
    for split, (images, labels) in expected.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            data = load_split(case.name, split, tmp_path)
        assert [str(w.message) for w in caught if "MD5 mismatch" not in str(w.message)] == []
        assert len(caught) == case.md5_files[split]
        assert data.images.dtype == torch.uint8 and data.labels.dtype == torch.int64
        assert tuple(data.images.shape) == (len(labels), *spec.input_shape)
        assert tuple(data.labels.shape) == (len(labels),) and len(data) == len(labels)
        assert data.images.is_contiguous()
        np.testing.assert_array_equal(data.images.numpy(), images)
        np.testing.assert_array_equal(data.labels.numpy(), labels)
        assert 0 <= int(data.labels.min()) and int(data.labels.max()) < spec.num_classes


def test_layouts_spot_checks(tmp_path: Path) -> None:
    """Hand-placed pixels land where the formats say: CIFAR rows are channel-major, SVHN X is (H, W, C, N)."""
    (tmp_path / "cifar-10-batches-py").mkdir()
    row = np.zeros((1, 3072), np.uint8)
    row[0, 0 * 1024 + 0 * 32 + 5] = 11  # red, y=0, x=5
    row[0, 1 * 1024 + 2 * 32 + 7] = 22  # green, y=2, x=7
    row[0, 2 * 1024 + 31 * 32 + 31] = 33  # blue, bottom-right
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(_py2_batch(row, [3], b"labels"))
    with pytest.warns(UserWarning, match="MD5 mismatch"):
        cifar = load_split("cifar10", "test", tmp_path)
    pixels = cifar.images[0]
    assert (int(pixels[0, 0, 5]), int(pixels[1, 2, 7]), int(pixels[2, 31, 31])) == (11, 22, 33)
    assert int(cifar.images.sum()) == 66 and cifar.labels.tolist() == [3]

    x = np.zeros((32, 32, 3, 2), np.uint8)
    x[1, 4, 2, 1] = 44  # y=1, x=4, blue, second image
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), {"X": x, "y": np.array([[10], [7]], np.uint8)})
    with pytest.warns(UserWarning, match="MD5 mismatch"):
        svhn = load_split("svhn", "test", tmp_path)
    assert int(svhn.images[1, 2, 1, 4]) == 44 and int(svhn.images.sum()) == 44
    assert svhn.labels.tolist() == [0, 7]


# ---- missing files, missing --data-dir, unknown names -----------------------------------------------------


@pytest.mark.parametrize(("name", "split", "delete"), [
    ("mnist", "train", None),
    ("mnist", "test", "MNIST/raw/t10k-labels-idx1-ubyte"),
    ("fashion-mnist", "test", None),
    ("fashion-mnist", "train", "FashionMNIST/raw/train-images-idx3-ubyte"),
    ("cifar10", "train", None),
    ("cifar10", "train", "cifar-10-batches-py/data_batch_4"),
    ("cifar10", "test", "cifar-10-batches-py/test_batch"),
    ("cifar100", "test", "cifar-100-python/test"),
    ("svhn", "train", None),
    ("svhn", "test", "test_32x32.mat"),
])
def test_missing_files_say_how_to_get_them(name: str, split: str, delete: str | None, tmp_path: Path) -> None:
    """An empty or incomplete directory raises ArtifactError pointing at --download."""
    if delete is not None:
        WRITERS[name](tmp_path)
        (tmp_path / delete).unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MD5 mismatches of the batches read before the gap
        with pytest.raises(ArtifactError, match="--download"):
            load_split(name, split, tmp_path)
    with pytest.raises(ArtifactError, match="--download"):
        load_split(name, split, tmp_path / "does-not-exist")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"])
def test_a_failed_download_is_one_line_with_exit_3(name: str, tmp_path: Path, offline: None) -> None:
    """``--download`` without a network (the ``offline`` fixture makes every name lookup and connection fail, so
    nothing reaches the network): torchvision's fetch fails and midbench says so in one line, exit 3."""
    from typer.testing import CliRunner

    from midbench.cli.app import app

    with pytest.raises(ArtifactError, match=f"downloading {name} into"):
        load_split(name, "test", tmp_path / "data", download=True)
    outcome = CliRunner().invoke(app, ["eval", "--model", "user_models:honest_cnn", "--dataset", name, "--data-dir",
                                       str(tmp_path / "data"), "--download", "--attacks", "fgsm-linf"])
    assert outcome.exit_code == 3, outcome.output
    assert [line for line in outcome.output.splitlines() if line.startswith("midbench: error: downloading")]


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10", "cifar100", "svhn"])
def test_needs_a_data_dir(name: str) -> None:
    """A dataset that does not ship with midbench needs --data-dir."""
    assert not get_dataset(name).embedded
    with pytest.raises(UsageError, match="--data-dir"):
        load_split(name, "test")


@pytest.mark.parametrize(("name", "suggestion"), [
    ("cifar-10", "cifar10"), ("cifar-100", "cifar100"), ("fashion_mnist", "fashion-mnist"), ("svnh", "svhn"),
])
def test_unknown_name_suggests(name: str, suggestion: str, tmp_path: Path) -> None:
    """An unknown dataset name raises UsageError with a close match."""
    with pytest.raises(UsageError, match=f"Did you mean .*'{suggestion}'"):
        load_split(name, "test", tmp_path)
    with pytest.raises(UsageError, match=f"Did you mean .*'{suggestion}'"):
        get_dataset(name)


def test_unknown_split(tmp_path: Path) -> None:
    """Only train and test exist."""
    write_cifar10(tmp_path)
    with pytest.raises(UsageError, match="unknown split 'val'"):
        load_split("cifar10", "val", tmp_path)


# ---- CIFAR pickles: nothing but arrays, lists and dicts ---------------------------------------------------


class _System:
    """Unpickles into ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return os.system, (self.command,)


class _Eval:
    """Unpickles into ``eval(expression)``."""

    def __init__(self, expression: str) -> None:
        self.expression = expression

    def __reduce__(self) -> tuple[Callable[[str], object], tuple[str]]:
        return eval, (self.expression,)


def _payloads(marker: Path) -> dict[str, object]:
    """Pickle payloads that would each create ``marker`` if unpickled without restriction."""
    rows = _cifar_rows(_images(0, 2, (3, 32, 32)))
    smuggled = np.empty(1, dtype=object)
    smuggled[0] = _System(f"echo pwned > {marker}")
    return {
        "bare-os-system": _System(f"echo pwned > {marker}"),
        "os-system-as-labels": {b"data": rows, b"labels": _System(f"echo pwned > {marker}")},
        "eval-as-data": {b"data": _Eval(f"open({str(marker)!r}, 'w').write('pwned')"), b"labels": [1, 2]},
        "object-array": {b"data": rows, b"labels": smuggled},
    }


@pytest.mark.parametrize("payload", ["bare-os-system", "os-system-as-labels", "eval-as-data", "object-array"])
@pytest.mark.parametrize(("name", "batch"), [
    ("cifar10", "cifar-10-batches-py/data_batch_3"), ("cifar100", "cifar-100-python/train"),
])
def test_malicious_pickle_is_refused(name: str, batch: str, payload: str, tmp_path: Path) -> None:
    """A batch naming a global other than numpy's array builders is refused before anything runs."""
    WRITERS[name](tmp_path)
    marker = tmp_path / "PWNED"
    (tmp_path / batch).write_bytes(pickle.dumps(_payloads(marker)[payload], protocol=2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MD5 mismatches
        with pytest.raises(ArtifactError, match="refusing to load .*(system|eval)"):
            load_split(name, "train", tmp_path)
    assert not marker.exists()


# ---- corrupt files ----------------------------------------------------------------------------------------


def _overwrite(relative: str, content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """A corruption: replace ``root/relative`` by ``content(old bytes)``."""
    def corrupt(root: Path) -> None:
        path = root / relative
        path.write_bytes(content(path.read_bytes()))
    return corrupt


def _svhn_mat(**arrays: np.ndarray) -> Callable[[Path], None]:
    """A corruption: replace test_32x32.mat by a MATLAB file holding ``arrays``."""
    def corrupt(root: Path) -> None:
        scipy.io.savemat(str(root / "test_32x32.mat"), arrays)
    return corrupt


def _cifar_test(content: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    """A corruption of CIFAR-10's test_batch."""
    return _overwrite("cifar-10-batches-py/test_batch", content)



_ROWS = _cifar_rows(_images(0, 4, (3, 32, 32)))
_X2 = np.zeros((32, 32, 3, 2), np.uint8)
CORRUPT = [
    pytest.param("cifar10", _cifar_test(lambda _: b"hello\n"), id="cifar-not-a-pickle"),
    pytest.param("cifar10", _cifar_test(lambda old: old[: len(old) // 2]), id="cifar-truncated"),
    pytest.param("cifar10", _cifar_test(lambda _: b""), id="cifar-empty"),
    pytest.param("cifar10", _cifar_test(lambda _: pickle.dumps([1, 2])), id="cifar-a-list"),
    pytest.param("cifar10", _cifar_test(lambda _: pickle.dumps({b"data": _ROWS})), id="cifar-no-labels"),
    pytest.param("cifar10", _cifar_test(lambda _: pickle.dumps({"data": _ROWS, "labels": [1, 2, 3, 4]})),
                 id="cifar-str-keys"),
    pytest.param("cifar10", _cifar_test(lambda _: _py2_batch(_ROWS[:, :3000], [1, 2, 3, 4], b"labels")),
                 id="cifar-short-rows"),
    pytest.param("cifar10", _cifar_test(lambda _: _py2_batch(_ROWS[:0], [], b"labels")), id="cifar-no-rows"),
    pytest.param("cifar100", _overwrite("cifar-100-python/test",
                                        lambda _: _py2_batch(_ROWS, [0, 1, 100, 2], b"fine_labels")),
                 id="cifar100-label-100"),
    pytest.param("cifar100", _overwrite("cifar-100-python/test",
                                        lambda _: _py2_batch(_ROWS, [0, 1, 2, 3], b"coarse_labels")),
                 id="cifar100-coarse-only"),
    pytest.param("svhn", _overwrite("test_32x32.mat", lambda _: b"MATLAB" * 40), id="svhn-not-a-mat"),
    pytest.param("svhn", _overwrite("test_32x32.mat", lambda old: old[: len(old) // 2]), id="svhn-truncated"),
    pytest.param("svhn", _svhn_mat(X=_X2), id="svhn-no-y"),
    pytest.param("svhn", _svhn_mat(X=np.zeros((28, 28, 3, 2), np.uint8), y=np.ones((2, 1), np.uint8)),
                 id="svhn-28x28"),
    pytest.param("svhn", _svhn_mat(X=_X2, y=np.array([[1], [11]], np.uint8)), id="svhn-label-11"),
    pytest.param("mnist", _overwrite("MNIST/raw/t10k-images-idx3-ubyte", lambda old: old[:500]),
                 id="mnist-truncated-images"),
    pytest.param("mnist", _overwrite("MNIST/raw/t10k-labels-idx1-ubyte", lambda _: b""),
                 id="mnist-empty-labels"),
    pytest.param("mnist", _overwrite("MNIST/raw/t10k-labels-idx1-ubyte",
                                     lambda _: _idx_bytes(np.array([3, 10, 1, 0, 2, 5], np.uint8))),
                 id="mnist-label-10"),
    pytest.param("mnist", _overwrite("MNIST/raw/t10k-images-idx3-ubyte",
                                     lambda _: _idx_bytes(np.zeros((6, 32, 32), np.uint8))),
                 id="mnist-32x32"),
    pytest.param("mnist", _overwrite("MNIST/raw/t10k-labels-idx1-ubyte",
                                     lambda _: _idx_bytes(np.zeros((6, 2), np.uint8))), id="mnist-2d-labels"),
    # Bugs found by these tests and fixed: raw scipy/torchvision exceptions, mismatched lengths, 0-d labels.
    pytest.param("svhn", _overwrite("test_32x32.mat", lambda _: b""), id="svhn-empty"),
    pytest.param("svhn", _overwrite("test_32x32.mat", lambda _: bytes(200)), id="svhn-zeroed"),
    pytest.param("mnist", _overwrite("MNIST/raw/t10k-images-idx3-ubyte", lambda old: bytes(4) + old[4:]),
                 id="mnist-bad-magic"),
    pytest.param("mnist", _overwrite("MNIST/raw/t10k-images-idx3-ubyte",
                                     lambda _: _idx_bytes(np.zeros((6, 28, 28), ">i4"), 0x0C)),
                 id="mnist-int32-images"),
    pytest.param("cifar10", _cifar_test(lambda _: pickle.dumps({b"data": _ROWS, b"labels": 3})),
                 id="cifar-scalar-labels"),
    pytest.param("mnist", _overwrite("MNIST/raw/t10k-labels-idx1-ubyte",
                                     lambda _: _idx_bytes(np.zeros(4, np.uint8))),
                 id="mnist-fewer-labels"),
    pytest.param("cifar10", _cifar_test(lambda _: _py2_batch(_ROWS, [1, 2, 3], b"labels")),
                 id="cifar-fewer-labels"),
    pytest.param("cifar10", _cifar_test(lambda _: pickle.dumps({b"data": _ROWS, b"labels": [[1, 2], [3, 4]]},
                                                               protocol=4)),
                 id="cifar-2d-labels"),
    pytest.param("svhn", _svhn_mat(X=np.zeros((32, 32, 3, 3), np.uint8), y=np.ones((2, 1), np.uint8)),
                 id="svhn-fewer-labels"),
]


@pytest.mark.parametrize(("name", "corrupt"), CORRUPT)
def test_corrupt_files_raise_artifact_error(name: str, corrupt: Callable[[Path], None],
                                            tmp_path: Path) -> None:
    """Unreadable or inconsistent files raise ArtifactError (never a raw exception, never bad data)."""
    WRITERS[name](tmp_path)
    corrupt(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MD5 mismatches
        with pytest.raises(ArtifactError):
            load_split(name, "test", tmp_path)


# ---- MD5 -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "split", "file_names"), [
    ("cifar10", "test", ["test_batch"]), ("cifar10", "train", [f"data_batch_{i}" for i in range(1, 6)]),
    ("cifar100", "train", ["train"]), ("svhn", "test", ["test_32x32.mat"]),
])
def test_md5_mismatch_warns_but_loads(name: str, split: str, file_names: list[str], tmp_path: Path) -> None:
    """Files that differ from the published release are read, with one UserWarning naming each file."""
    expected = WRITERS[name](tmp_path)
    with pytest.warns(UserWarning, match="differs from the published release") as record:
        data = load_split(name, split, tmp_path)
    assert [str(w.message).split()[0] for w in record] == file_names
    np.testing.assert_array_equal(data.images.numpy(), expected[split][0])
