"""Datasets streamed from image files: ``folder:PATH`` and ``imagenet`` (RobustBench's 5,000 validation images).

Every folder is written here with random pixels (so a transposition, a flip or a wrong crop is caught), and every
decoded image is compared with what torchvision's own pipeline gives from the same file: ``ImageFolder``'s class
numbering and ``Resize``/``CenterCrop``, times 255 (midbench keeps 8-bit levels). Nothing is downloaded; the
ImageNet tests write the first files of RobustBench's list with made-up pixels.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from midbench.cli.app import app
from midbench.data import get_dataset, load_split
from midbench.data.folders import Decoding, decode_images
from midbench.errors import ArtifactError, UsageError

RUNNER = CliRunner()
EPS = 'eps = { Linf = 0.1, L2 = 1.0 }\n'


def write_folder(root: Path, per_class: tuple[int, ...] = (3, 2, 3), sizes: tuple[tuple[int, int], ...] = ((28, 28),),
                 colour: bool = False, seed: int = 0, config: str | None = EPS) -> Path:
    """Class folders ``a``, ``b``, … under ``root`` with ``per_class[k]`` random PNGs each, sizes in turn."""
    rng = np.random.default_rng(seed)
    for label, count in enumerate(per_class):
        folder = root / "abcdefgh"[label]
        folder.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            height, width = sizes[index % len(sizes)]
            pixels = rng.integers(0, 256, (height, width, 3) if colour else (height, width), dtype=np.uint8)
            Image.fromarray(pixels, "RGB" if colour else "L").save(folder / f"{index:02d}.png")
    if config is not None:
        (root / "dataset.toml").write_text(config, encoding="utf-8")
    return root


def torchvision_pixels(path: Path, channels: int, resize: int | None = None, size: int | None = None) -> torch.Tensor:
    """The file through torchvision's transforms on PIL, as 8-bit levels: what midbench must equal."""
    import torchvision.transforms as transforms

    steps = ([transforms.Resize(resize)] if resize else []) + ([transforms.CenterCrop(size)] if size else [])
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB")
        floats = transforms.Compose([*steps, transforms.ToTensor()])(image)
    return (floats * 255).round().to(torch.uint8)


def test_a_folder_is_decoded_as_torchvision_decodes_it_and_interleaved_by_class(tmp_path: Path) -> None:
    import torchvision.datasets as tvd

    root = write_folder(tmp_path / "digits")
    spec = get_dataset(f"folder:{root}")
    assert spec.input_shape == (1, 28, 28) and spec.num_classes == 3 and spec.eps == {"Linf": 0.1, "L2": 1.0}
    data = load_split(f"folder:{root}", "test")
    reference = tvd.ImageFolder(str(root))
    by_path = {Path(path): label for path, label in reference.samples}
    assert len(data) == len(by_path) == 8
    # interleaved: the k-th image of every class together, so the first n examples cover the classes evenly
    assert data.labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 2]
    files = sorted(by_path, key=lambda path: (int(path.stem), by_path[path]))
    for index, path in enumerate(files):
        assert int(data.labels[index]) == by_path[path]  # ImageFolder's class numbering
        assert torch.equal(data.images[index], torchvision_pixels(path, 1))


def test_size_in_dataset_toml_resizes_and_centre_crops_mixed_sizes_like_torchvision(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "photos", per_class=(2, 2), sizes=((40, 50), (61, 33)), colour=True,
                        config=f"size = 24\nresize = 30\n{EPS}")
    data = load_split(f"folder:{root}", "test")
    assert tuple(data.images.shape) == (4, 3, 24, 24)
    first = sorted((root / "a").glob("*.png"))[0]
    assert torch.equal(data.images[0], torchvision_pixels(first, 3, resize=30, size=24))


def test_a_limit_decodes_only_the_first_examples(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "digits", per_class=(2, 2))
    (root / "b" / "01.png").write_bytes(b"not an image")  # the last example in the interleaved order
    assert len(load_split(f"folder:{root}", "test", limit=3)) == 3  # the broken file is never opened
    with pytest.raises(ArtifactError, match="01.png is not a readable image"):
        load_split(f"folder:{root}", "test")


def test_worker_processes_decode_the_same_images(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "many", per_class=(70, 70))  # more than one batch, so both workers decode
    files = sorted(root.glob("*/*.png"))
    decoding = Decoding(1, None, None)
    alone = decode_images(files, [0] * len(files), decoding, (1, 28, 28), workers=0)
    together = decode_images(files, [0] * len(files), decoding, (1, 28, 28), workers=2)
    assert torch.equal(alone.images, together.images)


def _loose(root: Path) -> None:
    root.mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8), "L").save(root / "x.png")


def _empty_class(root: Path) -> None:
    write_folder(root)
    (root / "d").mkdir()


def _unreadable(root: Path) -> None:
    write_folder(root)
    (root / "b" / "00.png").write_bytes(b"\x89PNG but truncated")


def _mixed_sizes(root: Path) -> None:
    write_folder(root, sizes=((28, 28), (30, 28)))


def _different_classes(root: Path) -> None:
    write_folder(root / "train")
    write_folder(root / "test", per_class=(1, 1), config=None)
    (root / "dataset.toml").write_text(EPS, encoding="utf-8")


def _unknown_key(root: Path) -> None:
    write_folder(root, config=f"{EPS}sise = 32\n")


def _undeclared_norm(root: Path) -> None:
    write_folder(root, config="eps = { L2 = 1.0 }\n")  # the test asks for an L∞ attack


def _bad_eps(root: Path) -> None:
    write_folder(root, config="eps = { Linf = -1 }\n")


BAD_FOLDERS = {
    "images without class folders": (_loose, 2, "no class sub-folders"),
    "an empty class": (_empty_class, 2, "has no images"),
    "an unreadable image": (_unreadable, 3, "is not a readable image"),
    "mixed sizes without size": (_mixed_sizes, 3, "set size = N"),
    "train and test with different classes": (_different_classes, 2, "different classes"),
    "an unknown dataset.toml key": (_unknown_key, 2, "unknown key 'sise'"),
    "an attack of an undeclared norm": (_undeclared_norm, 2, "does not declare"),
    "a negative ε": (_bad_eps, 2, "positive numbers"),
    "no such folder": (lambda root: None, 2, "is not a folder"),
}


@pytest.mark.parametrize("case", list(BAD_FOLDERS))
def test_a_bad_folder_is_one_line_with_its_exit_code_and_nothing_written(case: str, tmp_path: Path) -> None:
    make, code, message = BAD_FOLDERS[case]
    make(tmp_path / "data")
    results = tmp_path / "results"
    outcome = RUNNER.invoke(app, ["eval", "--model", "midbench.models.lenet:LeNet", "--dataset",
                                  f"folder:{tmp_path / 'data'}", "--attacks", "fgsm-linf", "--results-dir",
                                  str(results), "--quiet"])
    assert outcome.exit_code == code, outcome.output
    lines = [line for line in outcome.output.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], outcome.output
    assert not results.exists() or not any(path.is_file() for path in results.rglob("*"))


@pytest.mark.slow
def test_a_folder_dataset_trains_evaluates_and_is_recorded_under_a_file_name(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    write_folder(root / "train", per_class=(12, 12, 12), seed=1, config=None)
    write_folder(root / "test", per_class=(4, 4, 4), seed=2, config=None)
    (root / "dataset.toml").write_text(EPS, encoding="utf-8")
    dataset = f"folder:{root}"
    trained = RUNNER.invoke(app, ["train", "--dataset", dataset, "--epochs", "1", "--val-size", "6",
                                  "--out", str(tmp_path / "run"), "--quiet"])
    assert trained.exit_code == 0, trained.output
    results = tmp_path / "results"
    outcome = RUNNER.invoke(app, ["eval", str(tmp_path / "run" / "model.safetensors"), "--attacks", "fgsm-linf",
                                  "--results-dir", str(results), "--quiet", "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout[outcome.stdout.index("{"):])
    assert document["data"]["dataset"] == dataset and document["data"]["n_examples"] == 12
    # one folder per dataset directly under runs/, whatever slashes and colon the dataset's name has
    (folder,) = (results / "runs").iterdir()
    assert ":" not in folder.name and "/" not in folder.name and list(folder.glob("*.json"))

    from midbench import load_model

    model = load_model(checkpoint=tmp_path / "run" / "model.safetensors").model.eval()
    test = load_split(dataset, "test")
    with torch.no_grad():
        expected = (model(test.as_float()).argmax(1) == test.labels).float().mean().item()
    assert document["clean_accuracy"] == pytest.approx(expected)


def test_a_folder_of_class_folders_alone_has_no_train_split(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "only-test")
    with pytest.raises(UsageError, match="has no train split"):
        load_split(f"folder:{root}", "train")


# --- ImageNet ------------------------------------------------------------------------------------------------------

needs_robustbench = pytest.mark.skipif(importlib.util.find_spec("robustbench") is None,
                                       reason="the ImageNet subset's list comes with the robustbench extra")


def write_imagenet(root: Path, count: int) -> list[str]:
    """The first ``count`` images of RobustBench's list under ``root/val``, random pixels at sizes above 256."""
    from midbench.data.folders import imagenet_subset

    ids, _ = imagenet_subset()
    rng = np.random.default_rng(0)
    for index, entry in enumerate(ids[:count]):
        path = root / "val" / entry
        path.parent.mkdir(parents=True, exist_ok=True)
        height, width = (300 + 7 * index, 270 + 11 * index)
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path, "JPEG")
    return ids[:count]


@needs_robustbench
def test_imagenet_is_robustbench_s_list_in_its_order_resized_and_cropped_as_res256crop224(tmp_path: Path) -> None:
    from midbench.data.folders import imagenet_subset

    ids, classes = imagenet_subset()
    assert len(ids) == 5000 and len(set(ids)) == 5000
    assert sorted(classes, key=classes.get) == sorted(classes) and set(classes.values()) == set(range(1000))
    written = write_imagenet(tmp_path, 3)
    data = load_split("imagenet", "test", tmp_path, limit=3)
    assert tuple(data.images.shape) == (3, 3, 224, 224)
    assert data.labels.tolist() == [classes[entry.split("/")[0]] for entry in written]
    for index, entry in enumerate(written):
        assert torch.equal(data.images[index], torchvision_pixels(tmp_path / "val" / entry, 3, resize=256, size=224))


@needs_robustbench
def test_imagenet_refuses_missing_images_and_training(tmp_path: Path) -> None:
    write_imagenet(tmp_path, 2)
    with pytest.raises(ArtifactError, match="1 of the 3 ImageNet validation images are not under"):
        load_split("imagenet", "test", tmp_path, limit=3)
    with pytest.raises(UsageError, match="evaluation dataset"):
        load_split("imagenet", "train", tmp_path)
    with pytest.raises(UsageError, match="needs --data-dir"):
        load_split("imagenet", "test")


@needs_robustbench
@pytest.mark.slow
def test_a_zoo_imagenet_entry_evaluates_offline_with_its_own_weights(tmp_path: Path) -> None:
    from midbench.artifacts.zoo import weights_path, zoo_entries

    write_imagenet(tmp_path / "data", 2)
    torch.manual_seed(0)
    network = zoo_entries("imagenet", "Linf")["Salman2020Do_R18"]["model"]()  # a ResNet-18, random weights
    path = weights_path("Salman2020Do_R18", "imagenet", "Linf", tmp_path / "models")
    path.parent.mkdir(parents=True)
    torch.save(network.state_dict(), path)
    common = ["--dataset", "imagenet", "--data-dir", str(tmp_path / "data"), "--model-dir", str(tmp_path / "models"),
              "--attacks", "fgsm-linf", "--n-examples", "2", "--results-dir", str(tmp_path / "results"), "--quiet"]
    outcome = RUNNER.invoke(app, ["eval", "--model", "robustbench:Salman2020Do_R18", *common, "--format", "json"])
    assert outcome.exit_code == 0, outcome.output
    document = json.loads(outcome.stdout[outcome.stdout.index("{"):])
    test = load_split("imagenet", "test", tmp_path / "data", limit=2)
    with torch.no_grad():
        logits = network.eval()(test.as_float())
    assert document["clean_accuracy"] == pytest.approx((logits.argmax(1) == test.labels).float().mean().item())
    assert document["checkpoint"]["zoo"]["dataset"] == "imagenet"
    # an entry made for another crop (Wong2020Fast: 288 × 288) is refused, not shown images it was not made for
    other = RUNNER.invoke(app, ["eval", "--model", "robustbench:Wong2020Fast", *common])
    assert other.exit_code == 2 and "Crop288" in other.output
