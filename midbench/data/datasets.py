"""The dataset catalogue (:data:`DATASETS`) and the :class:`DatasetSpec` every dataset declares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
#: ``first_n(split, data_dir, limit)``: the first ``limit`` examples of a split (all for None), decoding no more
FirstNFn = Callable[[str, "Path | None", "int | None"], TensorSplit]


@dataclass(frozen=True)
class DatasetSpec:
    """What midbench needs to know about a dataset.

    Attributes:
        name: catalogue id (kebab-case).
        input_shape: (channels, height, width) of one image.
        num_classes: number of labels.
        eps: default threat budget per norm ("Linf", "L2", "L1") for inputs in [0, 1]; a norm without one (a
            folder dataset's ``dataset.toml`` may leave it out) refuses attacks sized by it.
        mean, std: per-channel normalisation applied *inside* the model.
        description: one line for ``midbench datasets list``.
        loader: ``loader(split, data_dir, download) -> TensorSplit``.
        embedded: True when the data ships with an installed package (no ``--data-dir`` needed).
        located: True when the spec knows where its files are (``folder:PATH``; no ``--data-dir`` needed).
        first_n: for datasets streamed from image files (:mod:`midbench.data.folders`), a loader that decodes only
            the first examples of a split, so an evaluation of a few images never reads the whole split.
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
    located: bool = False
    first_n: FirstNFn | None = field(default=None, repr=False)


DATASETS: Catalog[DatasetSpec] = Catalog("dataset", ("midbench.data.embedded", "midbench.data.torchvision_sets",
                                                     "midbench.data.folders"))

MNIST_EPS = {"Linf": 0.3, "L2": 2.0, "L1": 10.0}
CIFAR_EPS = {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}
NO_NORMALISATION_1 = ((0.0,), (1.0,))


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``, or of the image folder ``folder:PATH``
    (:func:`midbench.data.folders.folder_dataset`); raises :class:`UsageError` with suggestions."""
    return DATASETS.get(name)


def load_split(name: str, split: str, data_dir: str | Path | None = None, download: bool = False,
               limit: int | None = None) -> TensorSplit:
    """Load ``split`` ("train" or "test") of dataset ``name``; with ``limit``, its first ``limit`` examples only
    (streamed datasets then decode no more than those).

    Raises:
        UsageError: unknown dataset or split.
        ArtifactError: the files are missing or unreadable (the message says how to get them).
    """
    spec = get_dataset(name)
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    root = Path(data_dir).expanduser() if data_dir is not None else None
    if root is None and not (spec.embedded or spec.located):
        raise UsageError(f"dataset {name!r} needs --data-dir DIR (add --download to fetch it there)")
    if spec.first_n is not None and limit is not None:
        data = spec.first_n(split, root, limit)
    else:
        data = spec.loader(split, root, download)
        if limit is not None and len(data) > limit:
            data = data.subset(torch.arange(limit))
    _check_split(spec, data)
    return data


def split_from_tensors(images: Any, labels: Any, dataset: str) -> TensorSplit:  # noqa: ANN401
    """Examples a caller holds in memory (the Python API) as a split of ``dataset``'s shape and classes.

    ``images``: N × C × H × W, uint8 grey levels 0–255, or floats in [0, 1] on the 1/255 grid (what
    ``torchvision.transforms.ToTensor`` gives from 8-bit images), which are turned back into those levels; normalised
    or otherwise real-valued images are refused, since midbench attacks in [0, 1] and normalisation belongs inside
    the model. ``labels``: N integers.

    Raises:
        UsageError: a shape, dtype, range or label that does not fit (one line saying what to pass instead).
    """
    spec = get_dataset(dataset)
    images, labels = torch.as_tensor(images).detach().cpu(), torch.as_tensor(labels).detach().cpu()
    if images.dim() != 4 or tuple(images.shape[1:]) != spec.input_shape:
        shape = " x ".join(str(size) for size in spec.input_shape)
        raise UsageError(f"images of shape {tuple(images.shape)}; {dataset} needs N x {shape}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0] or torch.is_floating_point(labels) or \
            labels.dtype == torch.bool:
        raise UsageError(f"labels must be N = {images.shape[0]} integers, got {labels.dtype} of shape "
                         f"{tuple(labels.shape)}")
    if len(labels) == 0:
        raise UsageError("no examples: pass at least one image and its label")
    if int(labels.min()) < 0 or int(labels.max()) >= spec.num_classes:
        raise UsageError(f"labels fall outside 0..{spec.num_classes - 1}, the classes of {dataset}")
    if torch.is_floating_point(images):
        levels = images.double() * 255.0
        if float(images.min()) < 0 or float(images.max()) > 1 or \
                float((levels - levels.round()).abs().max()) > 1e-3:
            raise UsageError(f"float images must lie in [0, 1] on the 1/255 grid of 8-bit images (got values in "
                             f"[{float(images.min()):.3g}, {float(images.max()):.3g}]); pass uint8 images, or "
                             "unnormalised ToTensor() output, and put normalisation inside the model")
        images = levels.round().to(torch.uint8)
    elif images.dtype != torch.uint8:
        raise UsageError(f"images of dtype {images.dtype}; pass uint8 grey levels 0-255 or floats in [0, 1]")
    return TensorSplit(images.contiguous(), labels.to(torch.int64).contiguous())


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
