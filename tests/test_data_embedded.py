"""The embedded mnist5k set: a fixed, stratified, disjoint 4,000/1,000 split."""

from __future__ import annotations

import torch

from midbench.data import get_dataset, load_split
from midbench.data.batches import DeviceBatches
from midbench.data.embedded import _mnist5k_arrays, mnist5k_test_mask


def test_split_sizes_and_stratification() -> None:
    train, test = load_split("mnist5k", "train"), load_split("mnist5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert torch.equal(train.labels.bincount(), torch.full((10,), 400))
    assert torch.equal(test.labels.bincount(), torch.full((10,), 100))
    spec = get_dataset("mnist5k")
    assert tuple(train.images.shape[1:]) == spec.input_shape and train.images.dtype == torch.uint8


def test_split_is_disjoint_and_covers_the_file() -> None:
    images, labels = _mnist5k_arrays()
    mask = mnist5k_test_mask(labels)
    assert mask.sum() == 1000
    test, train = load_split("mnist5k", "test"), load_split("mnist5k", "train")
    as_set = lambda array: {row.tobytes() for row in array.reshape(array.shape[0], -1)}  # noqa: E731
    assert as_set(test.images.numpy()) == as_set(images[mask])
    assert as_set(train.images.numpy()) == as_set(images[~mask])
    assert not as_set(test.images.numpy()) & as_set(train.images.numpy())


def test_every_prefix_of_the_test_split_is_class_balanced() -> None:
    """The file is sorted by digit; the split is interleaved so --n-examples N sees every class equally."""
    labels = load_split("mnist5k", "test").labels
    assert labels[:10].tolist() == list(range(10))
    for n in (20, 200, 1000):
        assert torch.equal(labels[:n].bincount(minlength=10), torch.full((10,), n // 10))


def test_device_batches_cover_every_example_once_in_seeded_order() -> None:
    data = load_split("mnist5k", "test")
    batches = DeviceBatches(data, 300, torch.device("cpu"))
    first = [y for _, y in batches.epoch(torch.Generator().manual_seed(1))]
    again = [y for _, y in batches.epoch(torch.Generator().manual_seed(1))]
    assert len(first) == len(batches) == 4
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert torch.equal(torch.cat(first).sort().values, data.labels.sort().values)
    x, _ = next(batches.epoch(shuffle=False))
    assert x.dtype == torch.float32 and 0.0 <= float(x.min()) and float(x.max()) <= 1.0
