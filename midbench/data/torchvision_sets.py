"""Datasets in torchvision's on-disk layout: MNIST, Fashion-MNIST, CIFAR-10/100 and SVHN.

midbench reads the files torchvision downloads (``--data-dir DIR``) and fetches them only when asked with
``--download``, through torchvision, which verifies the published checksums. MNIST and Fashion-MNIST are
read by torchvision itself. CIFAR's batches are Python pickles, which torchvision opens with the full
unpickler; midbench reads them through a restricted unpickler that can build nothing but numpy arrays, lists
and dicts, so a tampered data file cannot run code. Files whose MD5 differs from the published release are
read with a warning (a subset or a re-encoding is legitimate, but the user should know).
"""

from __future__ import annotations

import hashlib
import io
import math
import pickle
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from midbench.data.datasets import (
    CIFAR_EPS,
    DATASETS,
    MNIST_EPS,
    NO_NORMALISATION_1,
    DatasetSpec,
    TensorSplit,
    refuse_float_pixels,
)
from midbench.errors import ArtifactError
from midbench.fileio import check_pickle_memo

#: idx type codes of float32 and float64 data (LeCun's idx format)
_IDX_FLOAT_TYPES = {0x0D: ">f4", 0x0E: ">f8"}


def _missing(name: str, root: Path, detail: str) -> ArtifactError:
    return ArtifactError(f"{name} not found under {root} ({detail}); pass --download to fetch it, "
                         "or --data-dir pointing at torchvision's layout")


def _fetch(name: str, root: Path, fetch: Callable[[], object]) -> None:
    """Run torchvision's download of ``name`` into ``root``; a failure (no network, a server error, a file whose
    checksum does not match) is a one-line ArtifactError instead of a traceback."""
    try:
        fetch()
    except (OSError, RuntimeError) as error:  # URLError and HTTPError are OSErrors
        raise ArtifactError(f"downloading {name} into {root} failed ({type(error).__name__}: {error}); check the "
                            "network and retry, or put torchvision's files there by hand") from error


def _refuse_float_idx(path: Path) -> None:
    """Refuse an idx image file of float pixels (torchvision would only say "not uint8"): bad input 2."""
    if not path.is_file():
        return
    with path.open("rb") as handle:
        magic = handle.read(4)
    if len(magic) < 4 or magic[2] not in _IDX_FLOAT_TYPES:
        return
    raw, ndim = path.read_bytes(), magic[3]
    try:
        shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
        pixels = np.frombuffer(raw, _IDX_FLOAT_TYPES[raw[2]], count=math.prod(shape), offset=4 + 4 * ndim)
    except (struct.error, ValueError):
        return  # a truncated file: torchvision reports it as unreadable
    refuse_float_pixels(pixels, str(path))


def _load_idx(tv_class_name: str, name: str):  # noqa: ANN202 - returns a loader closure
    def load(split: str, root: Path | None, download: bool) -> TensorSplit:
        import torchvision.datasets as tvd

        assert root is not None  # load_split guarantees it for non-embedded sets
        tv_class = getattr(tvd, tv_class_name)
        prefix = "train" if split == "train" else "t10k"
        _refuse_float_idx(root / tv_class_name / "raw" / f"{prefix}-images-idx3-ubyte")
        if download:
            _fetch(name, root, lambda: tv_class(str(root), train=(split == "train"), download=True))
        try:
            dataset = tv_class(str(root), train=(split == "train"), download=False)
        except RuntimeError as error:
            if "not found" in str(error).lower():
                raise _missing(name, root, str(error).split(".")[0]) from error
            raise ArtifactError(f"{name} files under {root} are corrupted ({error}); re-download them") from error
        except (ValueError, OSError, EOFError, AssertionError, TypeError) as error:
            # torchvision checks idx headers with assert and rejects unexpected type codes with TypeError
            raise ArtifactError(f"{name} files under {root} are unreadable ({error or 'bad header'}); "
                                "re-download them") from error
        images = dataset.data.unsqueeze(1).contiguous()
        return TensorSplit(images.to(torch.uint8), dataset.targets.to(torch.int64))

    return load


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches: only numpy array reconstruction and plain containers are allowed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.numeric", "_frombuffer"),  # pickle protocol 5 (Python 3.14's default)
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def _read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    try:
        stream = io.BytesIO(raw)
        check_pickle_memo(stream)  # no corrupt memo index reaches the C unpickler (it would allocate gigabytes)
        batch = _ArrayOnlyUnpickler(stream, encoding="bytes").load()
        data = np.asarray(batch[b"data"])
        labels = np.asarray(batch[label_key])
        refuse_float_pixels(data, str(path))
        # Refuse instead of converting: casting int16 pixels to uint8 would wrap them silently.
        if data.dtype != np.uint8 or not np.issubdtype(labels.dtype, np.integer) or labels.ndim != 1:
            raise ValueError(f"data must be uint8 and labels a 1-D integer list (got {data.dtype}, "
                             f"{labels.dtype} with {labels.ndim} dimensions)")
        data = data.reshape(-1, 3, 32, 32)
        if data.shape[0] != labels.shape[0]:
            raise ValueError(f"{data.shape[0]} images but {labels.shape[0]} labels")
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError, IndexError) as error:
        raise ArtifactError(f"{path} is not a CIFAR batch ({error}); re-download the dataset") from error
    return data, labels.astype(np.int64)


def _warn_if_modified(path: Path, expected_md5: str | None) -> None:
    if expected_md5 and hashlib.md5(path.read_bytes()).hexdigest() != expected_md5:
        warnings.warn(f"{path.name} differs from the published release (MD5 mismatch); using it as is",
                      stacklevel=3)


def _load_cifar(tv_class_name: str, name: str, label_key: bytes):  # noqa: ANN202
    def load(split: str, root: Path | None, download: bool) -> TensorSplit:
        import torchvision.datasets as tvd

        assert root is not None
        tv_class = getattr(tvd, tv_class_name)
        if download:
            _fetch(name, root, lambda: tv_class(str(root), train=(split == "train"), download=True))
        folder = root / tv_class.base_folder
        file_list = tv_class.train_list if split == "train" else tv_class.test_list
        images, labels = [], []
        for file_name, md5 in file_list:
            path = folder / file_name
            if not path.is_file():
                raise _missing(name, root, f"no {tv_class.base_folder}/{file_name}")
            _warn_if_modified(path, md5)
            batch_images, batch_labels = _read_cifar_batch(path, label_key)
            images.append(batch_images)
            labels.append(batch_labels)
        return TensorSplit(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)))

    return load


def _load_svhn(split: str, root: Path | None, download: bool) -> TensorSplit:
    import scipy.io
    import torchvision.datasets as tvd

    assert root is not None
    if download:
        _fetch("svhn", root, lambda: tvd.SVHN(str(root), split=split, download=True))
    _, file_name, md5 = tvd.SVHN.split_list[split]
    path = root / file_name
    if not path.is_file():
        raise _missing("svhn", root, f"no {file_name}")
    _warn_if_modified(path, md5)
    try:
        mat = scipy.io.loadmat(str(path))
        pixels = np.asarray(mat["X"])
        refuse_float_pixels(pixels, str(path))
        if pixels.dtype != np.uint8:  # refuse instead of casting: values above 255 would wrap silently
            raise ValueError(f"X must be uint8, got {pixels.dtype}")
        images = np.transpose(pixels, (3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
        labels = mat["y"].astype(np.int64).reshape(-1)
    except (ValueError, KeyError, OSError, TypeError, scipy.io.matlab.MatReadError) as error:
        raise ArtifactError(f"{path} is not an SVHN .mat file ({error}); re-download it") from error
    labels[labels == 10] = 0  # SVHN stores the digit 0 as label 10
    return TensorSplit(torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels))


CIFAR_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))
CIFAR100_MEAN_STD = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
SVHN_MEAN_STD = ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970))

for _spec in (
    DatasetSpec("mnist", (1, 28, 28), 10, dict(MNIST_EPS), *NO_NORMALISATION_1,
                "MNIST (LeCun et al. 1998), 60,000/10,000, torchvision layout", _load_idx("MNIST", "mnist")),
    DatasetSpec("fashion-mnist", (1, 28, 28), 10, dict(MNIST_EPS), *NO_NORMALISATION_1,
                "Fashion-MNIST (Xiao et al. 2017), 60,000/10,000, torchvision layout",
                _load_idx("FashionMNIST", "fashion-mnist")),
    DatasetSpec("cifar10", (3, 32, 32), 10, dict(CIFAR_EPS), *CIFAR_MEAN_STD,
                "CIFAR-10 (Krizhevsky 2009), 50,000/10,000, torchvision layout",
                _load_cifar("CIFAR10", "cifar10", b"labels")),
    DatasetSpec("cifar100", (3, 32, 32), 100, dict(CIFAR_EPS), *CIFAR100_MEAN_STD,
                "CIFAR-100 (Krizhevsky 2009), 50,000/10,000, torchvision layout",
                _load_cifar("CIFAR100", "cifar100", b"fine_labels")),
    DatasetSpec("svhn", (3, 32, 32), 10, dict(CIFAR_EPS), *SVHN_MEAN_STD,
                "SVHN (Netzer et al. 2011), 73,257/26,032, torchvision layout", _load_svhn),
):
    DATASETS.add(_spec.name, _spec)
