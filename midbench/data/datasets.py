"""The dataset catalogue (:data:`DATASETS`) and the :class:`DatasetSpec` every dataset declares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from midbench.catalog import Catalog
from midbench.errors import ArtifactError, UsageError

SPLITS = ("train", "test")


@dataclass(frozen=True)
class TensorSplit:
    """One split of a dataset held as tensors: ``images`` uint8 (N, C, H, W), ``labels`` int64 (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self) -> None:
        refuse_float_pixels(self.images, "the images")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: torch.Tensor) -> TensorSplit:
        """The examples at ``indices`` (a 1-D index tensor), in that order."""
        return TensorSplit(self.images[indices], self.labels[indices])

    def as_float(self) -> torch.Tensor:
        """All images as float32 in [0, 1]."""
        return self.images.float().div_(255.0)


def refuse_float_pixels(images: torch.Tensor | np.ndarray, source: str) -> None:
    """Refuse float pixels: midbench stores uint8 grey levels 0–255 and scales them to [0, 1] itself, so float
    data is either scaled already (it would be divided by 255 again) or normalised (docs/reliability.md, bad input 2).

    Raises:
        UsageError: ``images`` has a floating-point dtype; the message gives its range and what to do.
    """
    if isinstance(images, torch.Tensor):
        floating, count = torch.is_floating_point(images), images.numel()
    else:
        floating, count = images.dtype.kind == "f", images.size
    if not floating:
        return
    low, high = (float(images.min()), float(images.max())) if count else (0.0, 0.0)
    if low < 0:
        looks = "already normalised (negative values)"
    elif high > 1:
        looks = "floats on the 0–255 scale"
    else:
        looks = "already scaled to [0, 1]"
    raise UsageError(f"{source} hold float pixels in [{low:.3g}, {high:.3g}] ({looks}); give the raw uint8 grey "
                     "levels 0–255: midbench scales them to [0, 1] itself and normalisation belongs inside the "
                     "model (the dataset's mean/std)")


LoadFn = Callable[[str, "Path | None", bool], TensorSplit]


@dataclass(frozen=True)
class DatasetSpec:
    """What midbench needs to know about a dataset.

    Attributes:
        name: catalogue id (kebab-case).
        input_shape: (channels, height, width) of one image.
        num_classes: number of labels.
        eps: default threat budget per norm ("Linf", "L2", "L1") for inputs in [0, 1].
        mean, std: per-channel normalisation applied *inside* the model.
        description: one line for ``midbench datasets list``.
        loader: ``loader(split, data_dir, download) -> TensorSplit``.
        embedded: True when the data ships with an installed package (no ``--data-dir`` needed).
    """

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int
    eps: dict[str, float]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str
    loader: LoadFn = field(repr=False)
    embedded: bool = False


DATASETS: Catalog[DatasetSpec] = Catalog("dataset", ("midbench.data.embedded", "midbench.data.torchvision_sets"))

MNIST_EPS = {"Linf": 0.3, "L2": 2.0, "L1": 10.0}
CIFAR_EPS = {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}
NO_NORMALISATION_1 = ((0.0,), (1.0,))


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name`` (raises :class:`UsageError` with suggestions)."""
    return DATASETS.get(name)


def load_split(name: str, split: str, data_dir: str | Path | None = None, download: bool = False) -> TensorSplit:
    """Load ``split`` ("train" or "test") of dataset ``name``.

    Raises:
        UsageError: unknown dataset or split.
        ArtifactError: the files are missing or unreadable (the message says how to get them).
    """
    spec = get_dataset(name)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    root = Path(data_dir).expanduser() if data_dir is not None else None
    if root is None and not spec.embedded:
        raise UsageError(f"dataset {name!r} needs --data-dir DIR (add --download to fetch it there)")
    data = spec.loader(split, root, download)
    _check_split(spec, data)
    return data


def _check_split(spec: DatasetSpec, data: TensorSplit) -> None:
    if data.images.dtype != torch.uint8 or tuple(data.images.shape[1:]) != spec.input_shape:
        raise ArtifactError(f"{spec.name} files give images of shape {tuple(data.images.shape[1:])} "
                            f"({data.images.dtype}); expected uint8 {spec.input_shape}: re-download them")
    if data.labels.dim() != 1 or data.labels.shape[0] != data.images.shape[0]:
        raise ArtifactError(f"{spec.name} files hold {data.images.shape[0]} images but labels of shape "
                            f"{tuple(data.labels.shape)}; re-download them")
    if len(data) == 0:
        raise ArtifactError(f"{spec.name} files hold no examples; re-download them")
    if int(data.labels.min()) < 0 or int(data.labels.max()) >= spec.num_classes:
        raise ArtifactError(f"{spec.name} labels fall outside 0..{spec.num_classes - 1}; re-download the files")
