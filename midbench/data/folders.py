"""Datasets read from image files: ImageNet's validation set and a user's own folder (``--dataset folder:PATH``).

Both use torchvision's ``ImageFolder`` layout — one sub-folder per class, its images anywhere below it, classes
numbered in sorted order of their folder names — and are *streamed*: a ``DataLoader`` with worker processes
decodes the images in batches, and only the examples an evaluation uses are kept, as uint8 (an ImageNet image at
224 × 224 is 147 KB; RobustBench's 5,000 are 735 MB). Pixels are resized and cropped by torchvision's own
``Resize``/``CenterCrop`` on the decoded PIL image and kept as 8-bit levels (``PILToTensor``), so a midbench
image is exactly 255 × what torchvision's ``ToTensor`` pipeline gives. docs/datasets.md has the layouts, the
``dataset.toml`` keys and the ImageNet subset.

``imagenet``: the 5,000 validation images RobustBench evaluates ImageNet models on (Croce et al., "RobustBench",
NeurIPS 2021 Datasets and Benchmarks), in the order of its list, resized to 256 on the shorter side and
centre-cropped to 224 ("Res256Crop224"), labelled by its WordNet-id → index map (the 1,000 ids in sorted order).
The list and the map are read from the installed ``robustbench`` package (the ``robustbench`` extra), so the
subset is RobustBench's own, not a copy that could drift. ``--data-dir DIR`` is the folder holding ``val/``
(RobustBench's layout) or the class folders themselves.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import tomllib
import torch

from midbench.data.datasets import DATASETS, DatasetSpec, TensorSplit
from midbench.errors import ArtifactError, UsageError

#: what ``--dataset folder:PATH`` starts with
FOLDER_PREFIX = "folder:"
#: the optional file of a folder dataset that gives its size, channels, ε and normalisation
FOLDER_CONFIG = "dataset.toml"
#: file endings read as images (torchvision's ``IMG_EXTENSIONS``); other files are skipped, as ImageFolder does
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: the sub-folders that make a folder dataset two splits (``val`` stands for ``test`` where there is no ``test``)
SPLIT_FOLDERS = {"train": ("train",), "test": ("test", "val")}
#: images decoded per batch; the worker processes of the loader each decode whole batches
DECODE_BATCH = 64

IMAGENET_EPS = {"Linf": 4 / 255, "L2": 3.0}
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: RobustBench's ImageNet preprocessing "Res256Crop224": shorter side to 256, then the central 224 × 224
IMAGENET_RESIZE, IMAGENET_SIZE = 256, 224


def default_workers() -> int:
    """Decoding processes: one per core, at most 8 (``0`` decodes in the calling process)."""
    return min(8, os.cpu_count() or 1)


@dataclass(frozen=True)
class Decoding:
    """How every image of a dataset becomes a (channels, size, size) uint8 tensor."""

    channels: int
    #: the shorter side is resized to this before the centre crop (None: no resizing)
    resize: int | None
    #: the side of the centre crop (None: the images are used at their own size, which must then be one size)
    size: int | None


#: one decoded file: its index, its pixels (None where it failed), and what failed
Decoded = tuple[int, "torch.Tensor | None", "str | None"]


class _DecodedImages(torch.utils.data.Dataset):
    """The images at ``files`` decoded as uint8 (C, H, W). A file that fails to decode yields its error message
    instead of raising: an exception raised in a DataLoader worker reaches the caller as a multi-line traceback."""

    def __init__(self, files: Sequence[Path], decoding: Decoding) -> None:
        import torchvision.transforms as transforms

        self.files = list(files)
        self.decoding = decoding
        steps: list[Any] = []
        if decoding.resize is not None:
            steps.append(transforms.Resize(decoding.resize))
        if decoding.size is not None:
            steps.append(transforms.CenterCrop(decoding.size))
        steps.append(transforms.PILToTensor())
        self.transform = transforms.Compose(steps)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Decoded:
        from PIL import Image

        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = image.convert("L" if self.decoding.channels == 1 else "RGB")
                return index, self.transform(image), None
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
            return index, None, f"{path} is not a readable image ({type(error).__name__}: {error})"


def _collate(batch: list[Decoded]) -> tuple[list[int], torch.Tensor] | list[Decoded]:
    """A batch as its indices and one stacked tensor (one shared-memory transfer from a worker process, not one per
    image), or as the items themselves where one failed or the sizes differ, for the caller to report. Module
    level, so that worker processes can pickle it."""
    images = [image for _, image, _ in batch]
    if any(image is None for image in images) or len({tuple(image.shape) for image in images}) != 1:
        return batch
    return [index for index, _, _ in batch], torch.stack(images)


def decode_images(files: Sequence[Path], labels: Sequence[int], decoding: Decoding, shape: tuple[int, int, int],
                  workers: int | None = None) -> TensorSplit:
    """Decode ``files`` in batches with ``workers`` processes into one uint8 tensor of ``shape`` per image.

    Raises:
        ArtifactError: a file that is not a readable image, or one whose size differs from ``shape`` (the message
            says to set ``size``).
    """
    batches = -(-len(files) // DECODE_BATCH)
    # a worker process costs a start-up (a fork, its imports): worth it from two batches on, one per batch at most
    workers = min(default_workers() if workers is None else workers, batches) if batches > 1 else 0
    images = torch.empty((len(files), *shape), dtype=torch.uint8)
    loader = torch.utils.data.DataLoader(_DecodedImages(files, decoding), batch_size=DECODE_BATCH,
                                         num_workers=workers, collate_fn=_collate)
    for batch in loader:
        if isinstance(batch, tuple) and tuple(batch[1].shape[1:]) == shape:
            images[batch[0]] = batch[1]
            continue
        indices, stacked = (None, None) if isinstance(batch, list) else batch
        items = batch if indices is None else [(i, image, None) for i, image in zip(indices, stacked, strict=True)]
        for index, image, error in items:
            if error is not None:
                raise ArtifactError(f"{error}; remove or replace it")
            if tuple(image.shape) != shape:
                size = "×".join(str(side) for side in image.shape[1:])
                raise ArtifactError(f"{files[index]} is {size} pixels, the dataset's images {shape[1]}×{shape[2]}: "
                                    f"set size = N in {FOLDER_CONFIG} to resize and centre-crop them all to N×N")
    return TensorSplit(images, torch.as_tensor(list(labels), dtype=torch.int64))


# --- a user's folder ----------------------------------------------------------------------------------------------


def _walk_images(folder: Path) -> Iterator[Path]:
    """The image files anywhere below ``folder``, in sorted path order (hidden files and folders skipped), found
    one folder at a time (so asking whether there is any reads no more than the first folder that has one)."""
    for parent, directories, names in os.walk(folder, followlinks=True):
        directories[:] = sorted(name for name in directories if not name.startswith("."))
        yield from (Path(parent) / name for name in sorted(names)
                    if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS))


def _class_folders(root: Path, dataset: str) -> list[str]:
    """The class sub-folders of ``root``, sorted.

    Raises:
        UsageError: ``root`` has no sub-folders (images directly in it, or nothing), or a class folder has no image.
    """
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    if not classes:
        loose = "holds images but no class sub-folders" if next(_walk_images(root), None) else \
            "holds no class sub-folders"
        raise UsageError(f"{dataset}: {root} {loose}; put each class's images in {root}/<class>/ "
                         "(torchvision's ImageFolder layout)")
    for name in classes:
        if next(_walk_images(root / name), None) is None:
            raise UsageError(f"{dataset}: class folder {root / name} has no images ({', '.join(IMAGE_EXTENSIONS)}); "
                             "remove it or add its images")
    return classes


@dataclass(frozen=True)
class FolderLayout:
    """Where a folder dataset's splits are: ``{split: folder}`` (one folder is the test split only)."""

    root: Path
    splits: dict[str, Path]
    classes: tuple[str, ...]

    def examples(self, split: str, dataset: str) -> tuple[list[Path], list[int]]:
        """The files of ``split`` and their class indices, interleaved by class: the first image of every class
        (in class order), then the second of every class, and so on, each class's images in sorted path order.
        So the first ``n`` examples (``--n-examples``) cover the classes evenly, as mnist5k's do, instead of being
        the first class's.

        Raises:
            UsageError: the folder has no such split.
        """
        if split not in self.splits:
            raise UsageError(f"{dataset} has no {split} split: training needs {self.root}/train/<class>/ beside "
                             f"{self.root}/test/<class>/ (a folder of class folders alone is a test split)")
        per_class = [list(_walk_images(self.splits[split] / name)) for name in self.classes]
        ordered = sorted(((rank, label, path) for label, found in enumerate(per_class)
                          for rank, path in enumerate(found)), key=lambda item: item[:2])
        return [path for _, _, path in ordered], [label for _, label, _ in ordered]


def _layout(root: Path, dataset: str) -> FolderLayout:
    """Read the layout: ``train/`` and ``test/`` (or ``val/``) of class folders, or class folders alone.

    Raises:
        UsageError: no such folder, no class folders, an empty class, or train and test with different classes.
    """
    if not root.is_dir():
        raise UsageError(f"{dataset}: {root} is not a folder; give folder:PATH of a folder of class folders")
    names = {entry.name for entry in root.iterdir() if entry.is_dir()}
    test = next((root / name for name in SPLIT_FOLDERS["test"] if name in names), None)
    if "train" in names and test is not None and names <= {"train", *SPLIT_FOLDERS["test"]}:
        classes, train_classes = _class_folders(test, dataset), _class_folders(root / "train", dataset)
        if classes != train_classes:
            differ = sorted(set(classes) ^ set(train_classes))
            raise UsageError(f"{dataset}: train/ and {test.name}/ hold different classes ({', '.join(differ[:5])}); "
                             "give both the same class folders")
        return FolderLayout(root, {"train": root / "train", "test": test}, tuple(classes))
    return FolderLayout(root, {"test": root}, tuple(_class_folders(root, dataset)))


def _read_config(root: Path, dataset: str) -> dict[str, Any]:
    path = root / FOLDER_CONFIG
    if not path.is_file():
        return {}
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise UsageError(f"{path} is not valid TOML ({error})") from error
    allowed = {"size", "resize", "channels", "eps", "mean", "std"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r}; the keys are {', '.join(sorted(allowed))}")
    return config


def _positive_int(config: dict[str, Any], key: str, path: Path) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise UsageError(f"{path}: {key} must be a positive whole number of pixels, got {value!r}")
    return value


def _first_image_shape(layout: FolderLayout, channels: int | None) -> tuple[int, int, int]:
    """(channels, height, width) of the test split's first example (the first image of the first class): the
    shape every image must have when ``size`` is not set."""
    from PIL import Image

    first = next(_walk_images(layout.splits["test"] / layout.classes[0]))  # _class_folders checked it has one
    try:
        with Image.open(first) as image:
            grey = image.mode in ("1", "L", "I", "I;16", "F")
            return (channels or (1 if grey else 3), image.height, image.width)
    except (OSError, ValueError, SyntaxError) as error:
        raise ArtifactError(f"{first} is not a readable image ({type(error).__name__}: {error}); "
                            "remove or replace it") from error


@lru_cache(maxsize=16)
def _folder_spec(name: str, root: Path, config_mtime: float) -> DatasetSpec:
    del config_mtime  # part of the cache key only: an edited dataset.toml is read again
    layout = _layout(root, name)
    path = root / FOLDER_CONFIG
    config = _read_config(root, name)
    size, resize = _positive_int(config, "size", path), _positive_int(config, "resize", path)
    channels = config.get("channels")
    if channels not in (None, 1, 3):
        raise UsageError(f"{path}: channels must be 1 (grey) or 3 (colour), got {channels!r}")
    if resize is not None and size is None:
        raise UsageError(f"{path}: resize needs size (the centre crop taken after resizing)")
    if size is None:
        shape = _first_image_shape(layout, channels)
    else:
        shape = (channels or 3, size, size)
        resize = resize or size
    eps = config.get("eps", {})
    if not isinstance(eps, dict) or any(norm not in ("Linf", "L2", "L1") or not isinstance(value, int | float)
                                        or isinstance(value, bool) or not 0 < value < math.inf
                                        for norm, value in eps.items()):
        raise UsageError(f"{path}: eps must be a table of positive numbers under Linf, L2 and L1 "
                         "(e.g. eps = { Linf = 0.0314, L2 = 0.5 })")
    mean, std = config.get("mean", [0.0] * shape[0]), config.get("std", [1.0] * shape[0])
    if not all(isinstance(values, list) and len(values) == shape[0] and all(
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            for value in values) for values in (mean, std)) or any(value <= 0 for value in std):
        raise UsageError(f"{path}: mean and std need one number per channel ({shape[0]}), std above 0")
    decoding = Decoding(shape[0], resize, size)

    def first_n(split: str, data_dir: Path | None, limit: int | None) -> TensorSplit:
        del data_dir  # a folder dataset is its own location
        files, labels = layout.examples(split, name)
        if limit is not None:
            files, labels = files[:limit], labels[:limit]
        return decode_images(files, labels, decoding, shape)

    return DatasetSpec(name, shape, len(layout.classes), {norm: float(value) for norm, value in eps.items()},
                       tuple(float(v) for v in mean), tuple(float(v) for v in std),
                       f"image folder {root} ({len(layout.classes)} classes)",
                       loader=lambda split, data_dir, download: first_n(split, data_dir, None),
                       located=True, first_n=first_n)


def folder_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of ``folder:PATH``: its classes are PATH's sub-folders, its shape and ε come from
    ``PATH/dataset.toml`` or, for the shape, from its first image.

    Raises:
        UsageError: a bad layout or ``dataset.toml`` (one line saying what to fix).
    """
    root = Path(name[len(FOLDER_PREFIX):]).expanduser()
    if not name[len(FOLDER_PREFIX):]:
        raise UsageError("give the folder: --dataset folder:PATH")
    config = root / FOLDER_CONFIG
    return _folder_spec(name, root.resolve(), config.stat().st_mtime if config.is_file() else 0.0)


# --- ImageNet -----------------------------------------------------------------------------------------------------


def _robustbench_file(name: str) -> Path:
    """A file of the installed robustbench package's ``helper_files`` (found without importing the package, whose
    import pulls in its whole model zoo).

    Raises:
        UsageError: the extra is not installed.
    """
    found = importlib.util.find_spec("robustbench")
    if found is None or not found.submodule_search_locations:
        raise UsageError("imagenet is evaluated on RobustBench's 5,000 validation images, whose list comes with the "
                         "robustbench extra: pip install 'midbench[robustbench]'")
    path = Path(list(found.submodule_search_locations)[0]) / "helper_files" / name
    if not path.is_file():
        raise ArtifactError(f"the robustbench package has no helper_files/{name}; reinstall the robustbench extra")
    return path


def imagenet_subset() -> tuple[list[str], dict[str, int]]:
    """RobustBench's ImageNet evaluation list (``wnid/file`` paths, in its order) and its wnid → class map."""
    ids = [line.strip() for line in _robustbench_file("imagenet_test_image_ids.txt").read_text().splitlines()
           if line.strip()]
    classes = json.loads(_robustbench_file("imagenet_class_to_id_map.json").read_text())
    return ids, {wnid: int(index) for wnid, index in classes.items()}


def _imagenet_first_n(split: str, data_dir: Path | None, limit: int | None) -> TensorSplit:
    if split != "test":
        raise UsageError("imagenet is an evaluation dataset here (RobustBench's 5,000 validation images); training "
                         "reads a whole split into memory, so train on a folder dataset (--dataset folder:PATH)")
    assert data_dir is not None  # load_split asks for --data-dir first
    root = data_dir / "val" if (data_dir / "val").is_dir() else data_dir
    ids, classes = imagenet_subset()
    ids = ids[:limit] if limit is not None else ids
    files = [root / entry for entry in ids]
    missing = [path for path in files if not path.is_file()]
    if missing:
        raise ArtifactError(f"{len(missing)} of the {len(files)} ImageNet validation images are not under {root} "
                            f"(first: {missing[0].relative_to(root)}); --data-dir must hold val/<wnid>/*.JPEG")
    labels = [classes[entry.split("/")[0]] for entry in ids]
    decoding = Decoding(3, IMAGENET_RESIZE, IMAGENET_SIZE)
    return decode_images(files, labels, decoding, (3, IMAGENET_SIZE, IMAGENET_SIZE))


DATASETS.add_prefix(FOLDER_PREFIX, folder_dataset)
DATASETS.add("imagenet", DatasetSpec(
    "imagenet", (3, IMAGENET_SIZE, IMAGENET_SIZE), 1000, dict(IMAGENET_EPS), *IMAGENET_MEAN_STD,
    "ImageNet (Deng et al. 2009): RobustBench's 5,000 validation images, Res256Crop224 (ImageFolder layout)",
    loader=lambda split, data_dir, download: _imagenet_first_n(split, data_dir, None), first_n=_imagenet_first_n,
))
