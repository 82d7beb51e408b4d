"""``run_evaluation``: checkpoint + options → attacks → result files. The library behind ``midbench eval``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from midbench.attacks.specs import ResolvedAttack, load_registry
from midbench.checkpoint import check_compatible, load_checkpoint, load_plain_state_dict, load_weights_into
from midbench.data.registry import get_dataset, load_split
from midbench.device import resolve_device
from midbench.errors import UsageError
from midbench.evaluation.engine import PROTOCOLS, Evaluation, ProgressFn, evaluate
from midbench.evaluation.results import (
    build_result,
    indices_sha256,
    make_run_id,
    utc_now,
    write_result,
)
from midbench.evaluation.selection import AttackSelection, select_attacks
from midbench.fileio import ensure_writable_dir
from midbench.models import build_model
from midbench.models.factory import AUX_PREFIX
from midbench.paths import DEFAULT_RESULTS_DIR


@dataclass
class LoadedModel:
    """A classifier ready to evaluate, with the provenance the result file records."""

    model: nn.Module
    metadata: dict[str, Any]
    sha256: str
    path: str


def load_classifier(path: str | Path, arch: str | None = None, dataset: str | None = None) -> LoadedModel:
    """Load a midbench checkpoint, or a plain state dict when ``arch`` is given (``dataset`` then required).

    Raises:
        ArtifactError: unreadable, unsafe, corrupted or incompatible file (exit 3).
        UsageError: a plain state dict without ``arch``/``dataset``.
    """
    if arch is not None:
        if dataset is None:
            raise UsageError("a plain state dict needs --dataset as well as --arch")
        spec = get_dataset(dataset)
        state, sha256 = load_plain_state_dict(path)
        model = build_model(arch, spec.num_classes, spec.input_shape, spec.mean, spec.std)
        load_weights_into(model, state, str(path))
        metadata = {"name": Path(path).stem, "arch": arch, "dataset": dataset, "num_classes": spec.num_classes,
                    "input_shape": list(spec.input_shape), "method": "unknown", "train_attacks": []}
        return LoadedModel(model, metadata, sha256, str(path))
    checkpoint = load_checkpoint(path)
    model = checkpoint.build_model()
    # Companion modules (MID's teacher encoder and decoder) are stored under aux. and are not the classifier.
    classifier_state = {k: v for k, v in checkpoint.state_dict.items() if not k.startswith(AUX_PREFIX)}
    load_weights_into(model, classifier_state, str(path))
    return LoadedModel(model, checkpoint.metadata, checkpoint.sha256, str(path))


def _beside(recorded: str | None, checkpoint: str) -> str | None:
    """A checkpoint's recorded companion file: relative names are relative to the checkpoint's own folder, so a
    run directory can be moved as a whole."""
    if not recorded or Path(recorded).is_absolute():
        return recorded
    return str(Path(checkpoint).parent / recorded)


@dataclass(frozen=True)
class EvalConfig:
    """Options of one evaluation run (``midbench eval``)."""

    checkpoint: str
    dataset: str | None = None
    arch: str | None = None
    selection: AttackSelection = field(default_factory=AttackSelection)
    protocol: str = "whitebox"
    source: str | None = None
    n_examples: int | None = None
    batch_size: int = 256
    results_dir: str = str(DEFAULT_RESULTS_DIR)
    name: str | None = None
    seed: int = 0
    device: str = "auto"
    registry_dirs: tuple[str, ...] = ()
    data_dir: str | None = None
    download: bool = False


@dataclass
class EvalRun:
    """What :func:`run_evaluation` produced."""

    result: dict[str, Any]
    path: Path
    evaluation: Evaluation
    notes: list[str]


def run_evaluation(config: EvalConfig, progress: ProgressFn | None = None) -> EvalRun:
    """Evaluate a checkpoint as configured and write its result files.

    Everything that can be refused (names, ε, shapes, the results directory) is checked before any attack.
    """
    if config.protocol not in PROTOCOLS:
        raise UsageError(f"unknown protocol {config.protocol!r}; use {' or '.join(PROTOCOLS)}")
    if config.batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1, got {config.batch_size}")
    if config.n_examples is not None and config.n_examples < 1:
        raise UsageError(f"--n-examples must be at least 1, got {config.n_examples}")
    device = resolve_device(config.device)
    loaded = load_classifier(config.checkpoint, config.arch, config.dataset)
    meta = loaded.metadata
    dataset_name = config.dataset or meta["dataset"]
    spec = get_dataset(dataset_name)
    check_compatible(meta, dataset_name, spec.num_classes, spec.input_shape)
    train_attacks = [ResolvedAttack.from_dict(item) for item in meta.get("train_attacks", [])]
    registry = load_registry([Path(d) for d in config.registry_dirs])
    attacks = select_attacks(config.selection, registry, spec.eps, train_attacks)

    source_info: dict[str, Any] | None = None
    source_model = None
    if config.protocol == "transfer":
        source_path = config.source or _beside(meta.get("source_checkpoint"), config.checkpoint)
        if not source_path:
            raise UsageError("--protocol transfer needs --source CHECKPOINT (the model the attacks are crafted on)")
        source = load_classifier(source_path)
        check_compatible(source.metadata, dataset_name, spec.num_classes, spec.input_shape)
        source_model = source.model
        source_info = {"path": str(source_path), "sha256": source.sha256, "name": source.metadata.get("name")}
    elif config.source:
        raise UsageError("--source only applies to --protocol transfer")

    for attack, _ in attacks:  # refuse a bad parameter or a missing backend before any attack runs
        attack.build(seed=config.seed, batch_size=config.batch_size)
    ensure_writable_dir(Path(config.results_dir))
    data = load_split(dataset_name, "test", config.data_dir, config.download)
    notes = []
    count = len(data)
    if config.n_examples is not None and config.n_examples > count:
        notes.append(f"--n-examples {config.n_examples} is larger than the test split; using all {count}")
    elif config.n_examples is not None:
        count = config.n_examples
    indices = np.arange(count)
    data = data.subset(torch.from_numpy(indices))

    evaluation = evaluate(loaded.model, data, attacks, device=device, protocol=config.protocol,
                          source_model=source_model, batch_size=config.batch_size, seed=config.seed,
                          progress=progress)
    created = utc_now()
    name = config.name or meta.get("name") or Path(config.checkpoint).stem
    run_id = make_run_id(name, config.protocol, created)
    checkpoint_info = {"path": str(config.checkpoint), "sha256": loaded.sha256, "name": name,
                       "method": meta.get("method"), "arch": meta.get("arch"), "dataset": meta.get("dataset"),
                       "train_attacks": [attack.key for attack in train_attacks]}
    data_info = {"dataset": dataset_name, "split": "test", "n_examples": count,
                 "indices_sha256": indices_sha256(indices), "eps": {**spec.eps, **config.selection.eps}}
    protocol_info = {"name": config.protocol, "source": source_info}
    result = build_result(evaluation, run_id=run_id, created=created, checkpoint=checkpoint_info, data=data_info,
                          protocol=protocol_info, seed=config.seed, device=str(device))
    path = write_result(result, evaluation, config.results_dir, indices)
    return EvalRun(result, path, evaluation, notes)
