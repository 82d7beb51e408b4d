#!/usr/bin/env python3
"""Images per second from an image folder: midbench's streamed loader against a plain torchvision ``DataLoader``.

``--prepare`` writes ``--n`` JPEGs of ImageNet's typical size (500 × 375, smooth random colour fields with noise,
so they compress and decode like photographs rather than like flat or pure-noise images) into 10 class folders,
with a ``dataset.toml`` asking for ImageNet's preprocessing (shorter side 256, centre crop 224). Then each mode
decodes the whole folder once, with as many worker processes as midbench uses (one per core, at most 8):

- ``midbench``: ``load_split("folder:DIR", "test")`` (:mod:`midbench.data.folders`: uint8 levels, batches of 64,
  the images gathered into one tensor);
- ``torchvision``: ``DataLoader(ImageFolder(DIR, Resize(256) → CenterCrop(224) → ToTensor()), batch_size=64)``,
  the batches gathered into one float tensor — what a user would write by hand.

Time the two as whole processes with the interleaved A/B timer (``$ABBENCH``, docs/performance.md), from the
repository root; images per second = ``--n`` / the median time::

    python benchmarks/bench_folder_loading.py runs/bench-folder --prepare --n 2000
    python "$ABBENCH" -n 5 \\
        -a "python benchmarks/bench_folder_loading.py runs/bench-folder --mode midbench" \\
        -b "python benchmarks/bench_folder_loading.py runs/bench-folder --mode torchvision"
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

CLASSES = 10
BATCH = 64


def prepare(folder: Path, count: int) -> None:
    """Write ``count`` JPEGs into ``folder/<class>/`` and the dataset.toml (skipped where already written)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for index in range(count):
        path = folder / f"class{index % CLASSES}" / f"{index:06d}.jpg"
        if path.is_file():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        field = np.asarray(Image.fromarray(coarse).resize((500, 375), Image.BICUBIC), dtype=np.int16)
        pixels = np.clip(field + rng.integers(-12, 13, field.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(path, "JPEG", quality=90)
    (folder / "dataset.toml").write_text("size = 224\nresize = 256\neps = { Linf = 0.0157 }\n", encoding="utf-8")


def with_midbench(folder: Path) -> int:
    from midbench.data import load_split

    return len(load_split(f"folder:{folder}", "test"))


def with_torchvision(folder: Path) -> int:
    import torch
    import torchvision.datasets as datasets
    import torchvision.transforms as transforms

    from midbench.data.folders import default_workers

    transform = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()])
    loader = torch.utils.data.DataLoader(datasets.ImageFolder(str(folder), transform), batch_size=BATCH,
                                         num_workers=default_workers())
    images = torch.cat([batch for batch, _ in loader])
    return len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--prepare", action="store_true", help="write the images and stop")
    parser.add_argument("--n", type=int, default=2000, help="images to write with --prepare")
    parser.add_argument("--mode", choices=("midbench", "torchvision"), default="midbench")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.folder, args.n)
        return
    start = time.perf_counter()
    count = (with_midbench if args.mode == "midbench" else with_torchvision)(args.folder)
    seconds = time.perf_counter() - start
    from midbench.data.folders import default_workers

    print(f"{args.mode}: {count} images in {seconds:.2f} s, {count / seconds:.1f} images/s "
          f"({default_workers()} worker processes)")


if __name__ == "__main__":
    main()
