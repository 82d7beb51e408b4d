"""Datasets: every dataset declares its shape, class count, normalisation and default ε per norm.

``load_split(name, split)`` returns images as uint8 tensors (N, C, H, W) and int64 labels; the model sees
them as floats in [0, 1] (the conversion happens per batch in :mod:`midbench.data.batches`).
"""

from midbench.data.datasets import DATASETS, DatasetSpec, TensorSplit, get_dataset, load_split

__all__ = ["DATASETS", "DatasetSpec", "TensorSplit", "get_dataset", "load_split"]
