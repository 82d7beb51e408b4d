"""MID's attack-suppressed images as a picture: ``midbench regenerate``.

A MID classifier ``C∘E_s`` is stored with the teacher's encoder E_t and decoder D_t; ``D_t(E_s(x))`` is the
image the student's feature describes (Zhang et al., TPAMI 2024, arXiv:2404.03340). For an adversarial
``x`` it should look like the clean image: the perturbation is suppressed. :func:`regeneration_grid` draws
the first test images, their regenerations and, with an attack, the adversarial images and theirs.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midbench.artifacts.checkpoint import check_compatible
from midbench.artifacts.loading import load_classifier, load_with_aux, recorded_source
from midbench.attacks.specs import load_registry
from midbench.data.datasets import DATASETS, get_dataset, load_split
from midbench.errors import UsageError
from midbench.fileio import atomic_write_bytes, ensure_writable_dir
from midbench.mid.parts import regenerate
from midbench.protocols import PROTOCOLS
from midbench.runtime.device import resolve_device

#: pixels between and around the tiles of the grid (torchvision's default)
PADDING = 2


def grid_size(rows: int, n: int, height: int, width: int, padding: int = PADDING) -> tuple[int, int]:
    """``(width, height)`` in pixels of a grid of ``rows`` rows of ``n`` tiles of ``height × width``."""
    return n * (width + padding) + padding, rows * (height + padding) + padding


def regeneration_grid(checkpoint: str | Path, out_png: str | Path, dataset: str | None = None, n: int = 8,
                      attack_id: str | None = None, protocol: str = "transfer", seed: int = 0,
                      data_dir: str | Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Write a PNG grid of clean, regenerated clean and (with ``attack_id``) adversarial and regenerated
    adversarial test images for a MID checkpoint; one row per kind, ``n`` images per row.

    Args:
        checkpoint: a MID classifier checkpoint (``midbench train --method mid`` or the imported release).
        out_png: where the grid goes (written atomically).
        dataset: test images from this dataset (default: the checkpoint's); same shape and classes.
        n: the first ``n`` test images.
        attack_id: an attack of the registry, at the dataset's ε; none draws only the clean rows.
        protocol: ``transfer`` crafts on the source model recorded in the checkpoint; ``whitebox`` on the MID
            classifier itself.
        seed: seed of the attack's randomness.
        data_dir: root of torchvision datasets.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        ``{"path", "dataset", "n", "rows", "labels", "predictions": {row: [class, ...]}, "attack", "eps",
        "protocol"}``; predictions are the MID classifier's on each row's images.

    Raises:
        UsageError: not a MID classifier, bad options, or no source model for the transfer protocol.
        ArtifactError: unreadable checkpoints or data files.
    """
    if n < 1:
        raise UsageError(f"--n must be at least 1, got {n}")
    if protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {protocol!r}; use {' or '.join(PROTOCOLS)}")
    torch_device = resolve_device(device)
    ensure_writable_dir(Path(out_png).parent)

    loaded = load_with_aux(checkpoint)
    _require_mid_classifier(loaded.model, checkpoint)
    meta = loaded.metadata
    dataset_name = dataset or meta.dataset
    if not dataset_name:
        raise UsageError(f"{checkpoint} records no dataset; pass --dataset")
    spec = get_dataset(dataset_name)
    check_compatible(meta, dataset_name, spec.num_classes, spec.input_shape)
    if dataset is None and not spec.embedded and data_dir is None:
        raise UsageError(_needs_data_dir_hint(dataset_name, spec.num_classes, spec.input_shape))

    resolved = None
    attacker: nn.Module | None = None
    if attack_id is not None:
        resolved = load_registry().get(attack_id).resolve(spec.eps)
        attacker = (_load_source(meta, checkpoint, dataset_name, spec.num_classes, spec.input_shape)
                    if protocol == "transfer" else loaded.model)

    data = load_split(dataset_name, "test", data_dir, False)
    count = min(n, len(data))
    data = data.subset(torch.arange(count))
    x = data.as_float().to(torch_device)
    y = data.labels.to(torch_device)
    model = loaded.model.to(torch_device).eval()

    rows: dict[str, torch.Tensor] = {"clean": x, "regenerated clean": regenerate(model, x)}
    if resolved is not None and attacker is not None:
        attack = resolved.build(seed=seed, batch_size=count)
        attacker = attacker.to(torch_device).eval()
        devices = [torch_device] if torch_device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            x_adv = attack(attacker, x, y)
        rows["adversarial"] = x_adv
        rows["regenerated adversarial"] = regenerate(model, x_adv)

    with torch.no_grad():
        predictions = {name: model(images).argmax(dim=1).cpu().tolist() for name, images in rows.items()}
    _write_grid(torch.cat(list(rows.values())).cpu(), out_png, count)
    return {"path": str(out_png), "dataset": dataset_name, "n": count, "rows": list(rows),
            "labels": data.labels.tolist(), "predictions": predictions,
            "attack": resolved.key if resolved is not None else None,
            "eps": resolved.eps if resolved is not None else None,
            "protocol": protocol if resolved is not None else None}


def _require_mid_classifier(model: nn.Module, checkpoint: str | Path) -> None:
    aux = getattr(model, "aux", None)
    if aux is not None and "teacher_encoder" in aux:
        return
    if aux is not None and "decoder" in aux:
        raise UsageError(f"{checkpoint} is a MID teacher (method mid-teacher), not a MID classifier; pass the "
                         "checkpoint of `midbench train --method mid` instead")
    raise UsageError(f"{checkpoint} is not a MID classifier (no teacher encoder/decoder in it); pass a checkpoint "
                     "of `midbench train --method mid` or of `midbench import mid-official`")


def _needs_data_dir_hint(name: str, num_classes: int, input_shape: tuple[int, int, int]) -> str:
    embedded = sorted(other for other in DATASETS.names()
                      if get_dataset(other).embedded and get_dataset(other).num_classes == num_classes
                      and get_dataset(other).input_shape == tuple(input_shape))
    alternative = f", or pass --dataset {embedded[0]} (embedded, no download)" if embedded else ""
    return f"the checkpoint records dataset {name!r}, which needs --data-dir DIR{alternative}"


def _load_source(meta: dict[str, Any], checkpoint: str | Path, dataset_name: str, num_classes: int,
                 input_shape: tuple[int, int, int]) -> nn.Module:
    source_path = recorded_source(meta, checkpoint)
    if not source_path:
        raise UsageError(f"{checkpoint} records no source checkpoint for --protocol transfer; pass --protocol "
                         "whitebox, or re-import/re-train it so it names its source model")
    if not Path(source_path).is_file():
        raise UsageError(f"the source checkpoint {source_path} recorded in {checkpoint} is missing; pass "
                         "--protocol whitebox, or re-import/re-train it next to its source model")
    source = load_classifier(source_path)
    check_compatible(source.metadata, dataset_name, num_classes, input_shape)
    return source.model


def _write_grid(images: torch.Tensor, out_png: str | Path, per_row: int) -> None:
    from torchvision.utils import save_image

    buffer = io.BytesIO()
    save_image(images, buffer, nrow=per_row, padding=PADDING, format="png")
    atomic_write_bytes(out_png, buffer.getvalue())
