"""``midbench regenerate``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import console, guarded
from midbench.cli._options import Device
from midbench.protocols import Protocol


@guarded
def regenerate_command(
    checkpoint: Annotated[Path, typer.Argument(help="A MID classifier checkpoint (train --method mid, or imported).")],
    out: Annotated[Path, typer.Option(help="The PNG grid to write (atomically).")],
    dataset: Annotated[str | None, typer.Option(help="Test images from this dataset (default: the checkpoint's; e.g. mnist5k for an imported MNIST model).")] = None,
    n: Annotated[int, typer.Option("--n", help="The first N test images (one column each).")] = 8,
    attack: Annotated[str | None, typer.Option(help="Add adversarial rows crafted with this attack id at the dataset's ε.")] = None,
    protocol: Annotated[Protocol, typer.Option(help="transfer (craft on the checkpoint's source model) or whitebox (on the MID classifier).")] = Protocol.TRANSFER,
    seed: Annotated[int, typer.Option(help="Attack seed.")] = 0,
    data_dir: Annotated[Path | None, typer.Option(help="Root of torchvision datasets.")] = None,
    device: Device = "auto",
) -> None:
    """Draw MID's attack-suppressed images D_t(E_s(x)): rows of clean, regenerated clean and, with --attack,
    adversarial and regenerated adversarial test images; prints the MID classifier's predictions per row.

    Example: midbench regenerate runs/mid/model.safetensors --dataset mnist5k --attack pgd-linf --out grid.png
    """
    from midbench.mid.regenerate import regeneration_grid

    summary = regeneration_grid(checkpoint, out, dataset=dataset, n=n, attack_id=attack, protocol=protocol.value,
                                seed=seed, data_dir=data_dir, device=device)
    show = console()
    if summary["attack"]:
        show.print(f"attack: {summary['attack']} (ε={summary['eps']:.4g}, {summary['protocol']})", highlight=False)
    show.print(f"{'labels':<24} {' '.join(str(label) for label in summary['labels'])}", highlight=False)
    for row in summary["rows"]:
        show.print(f"{row:<24} {' '.join(str(p) for p in summary['predictions'][row])}", highlight=False)
    show.print(f"grid: {summary['path']}", highlight=False)
