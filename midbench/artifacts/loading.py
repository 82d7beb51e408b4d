"""One way to load a model, for training and evaluation alike.

Every model midbench reads comes through here: a midbench checkpoint (classifier only, or with its companion
modules under ``aux.``: MID's teacher and MID classifiers), a plain state dict with ``--arch``/``--dataset``,
or a user's ``--model module:factory`` (with ``--weights``). The result is always a :class:`LoadedModel` with
the provenance a result file or a training run records. Companion files a checkpoint names (MID's
``source_checkpoint`` and ``teacher_checkpoint``) are resolved by :func:`companion_path`, relative to the
checkpoint's own folder, so a run directory can be moved as a whole.

This module sits below :mod:`midbench.training`, :mod:`midbench.defenses` and :mod:`midbench.evaluation`
(the layer contracts in ``pyproject.toml``): none of them loads a model any other way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from midbench.artifacts.adapters import AdaptedModel, adapted_identity, check_logits, parse_adapters
from midbench.artifacts.checkpoint import load_checkpoint, load_plain_state_dict, load_weights_into
from midbench.artifacts.metadata import ModelMetadata
from midbench.artifacts.usermodel import import_factory, load_user_model
from midbench.artifacts.zoo import DEFAULT_MODEL_DIR, is_zoo_spec, load_zoo_model
from midbench.data.datasets import get_dataset
from midbench.errors import ArtifactError, UsageError
from midbench.models import build_model
from midbench.models.factory import AUX_PREFIX, MODELS


@dataclass
class LoadedModel:
    """A loaded model with the provenance a result file or a run records."""

    model: nn.Module
    metadata: ModelMetadata
    sha256: str
    path: str | None  # None for a --model built without a weights file


def load_classifier(path: str | Path, arch: str | None = None, dataset: str | None = None) -> LoadedModel:
    """Load a midbench checkpoint as a classifier (companion modules left out), or a plain state dict when
    ``arch`` is given (``dataset`` then required).

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
        metadata = ModelMetadata(arch=arch, num_classes=spec.num_classes, input_shape=tuple(spec.input_shape),
                                 dataset=dataset, name=Path(path).stem)
        return LoadedModel(model, metadata, sha256, str(path))
    checkpoint = load_checkpoint(path)
    model = checkpoint.build_model()
    # Companion modules (MID's teacher encoder and decoder) are stored under aux. and are not the classifier.
    classifier_state = {k: v for k, v in checkpoint.state_dict.items() if not k.startswith(AUX_PREFIX)}
    load_weights_into(model, classifier_state, str(path))
    return LoadedModel(model, checkpoint.info, checkpoint.sha256, str(path))


def load_with_aux(path: str | Path) -> LoadedModel:
    """Load a midbench checkpoint *with* its ``aux.`` modules: a teacher (``aux.decoder``) or a MID classifier
    (``aux.teacher_encoder`` and ``aux.decoder``), strictly, so every tensor must fit.

    Raises:
        ArtifactError: unreadable or corrupted file, or tensors that do not fit the recorded architecture.
    """
    checkpoint = load_checkpoint(path)
    meta = checkpoint.info
    model = checkpoint.build_model()
    arch, num_classes, shape = meta.arch, meta.num_classes, meta.input_shape
    aux_names = {key.split(".")[1] for key in checkpoint.state_dict if key.startswith(AUX_PREFIX)}
    if aux_names:
        info = MODELS.get(arch)
        if info.decoder is None:
            raise ArtifactError(f"{path} stores MID modules for {arch}, which has no decoder; re-create it")
        modules: dict[str, nn.Module] = {"decoder": info.decoder(shape)}
        if "teacher_encoder" in aux_names:
            modules["teacher_encoder"] = info.factory(num_classes, shape).encoder
        model.aux = nn.ModuleDict(modules)
    load_weights_into(model, checkpoint.state_dict, str(path))
    return LoadedModel(model, meta, checkpoint.sha256, str(path))


def load_teacher(path: str | Path) -> LoadedModel:
    """Load a teacher autoencoder checkpoint (``midbench train --method mid-teacher``) with its decoder.

    Raises:
        ArtifactError: the file is not a teacher (no decoder stored with it).
    """
    loaded = load_with_aux(path)
    if not hasattr(loaded.model, "aux") or "decoder" not in loaded.model.aux:
        raise ArtifactError(f"{path} is not a MID teacher (no decoder in it); train one with --method mid-teacher")
    return loaded


def load_model(checkpoint: str | Path | None, *, arch: str | None = None, dataset: str | None = None,
               model_spec: str | None = None, weights: str | None = None, device: torch.device | None = None,
               seed: int = 0, zoo_threat_model: str = "Linf", model_dir: str | None = None,
               download: bool = False, normalize: str | None = None, output: str | None = None) -> LoadedModel:
    """The classifier of a command line: a checkpoint (or plain state dict with ``arch``), a user's
    ``model_spec`` (``module:factory``, with optional ``weights``), or a RobustBench zoo entry
    (``robustbench:NAME``, its weights under ``model_dir``; :mod:`midbench.artifacts.zoo`), behind the adapters
    ``normalize`` and ``output`` ask for (:mod:`midbench.artifacts.adapters`).

    Raises:
        UsageError: neither or both of a checkpoint and a ``model_spec``; options that do not go together.
        ArtifactError: an unreadable, unsafe or incompatible checkpoint or weights file; a model that does not
            return logits (the message names the adapter that would read its output).
    """
    loaded = _load(checkpoint, arch, dataset, model_spec, weights, device, seed, zoo_threat_model, model_dir,
                   download, check=output is None)
    label = f"--model {model_spec}" if model_spec else str(checkpoint)
    return adapt(loaded, normalize, output, dataset, device or torch.device("cpu"), label)


def adapt(loaded: LoadedModel, normalize: str | None, output: str | None, dataset: str | None,
          device: torch.device, label: str, flag: str = "--output") -> LoadedModel:
    """``loaded`` behind ``--normalize`` and ``--output`` (none: unchanged), checked to return logits; the
    adapters are recorded in its metadata (``extra["adapters"]``) and enter its identity.

    Raises:
        UsageError: a bad adapter, or one that does not fit the model's output.
        ArtifactError: the adapted model still does not return logits.
    """
    if normalize is None and output is None:
        return loaded
    name = dataset or loaded.metadata.dataset
    if name is None:
        raise UsageError("--normalize and --output need --dataset (this model records none)")
    spec = get_dataset(name)
    adapters = parse_adapters(normalize, output, spec.input_shape[0], spec.mean, spec.std)
    model = AdaptedModel(loaded.model, adapters).to(device)
    check_logits(model, label, name, device, flag)
    metadata = dataclasses.replace(loaded.metadata, extra={**loaded.metadata.extra, "adapters": adapters.as_dict()})
    return LoadedModel(model, metadata, adapted_identity(loaded.sha256, adapters), loaded.path)


def _load(checkpoint: str | Path | None, arch: str | None, dataset: str | None, model_spec: str | None,
          weights: str | None, device: torch.device | None, seed: int, zoo_threat_model: str,
          model_dir: str | None, download: bool, check: bool) -> LoadedModel:
    """:func:`load_model` without adapters; ``check``: a user's factory is checked to return logits."""
    if not is_zoo_spec(model_spec) and (model_dir is not None or zoo_threat_model != "Linf"):
        raise UsageError("--model-dir and --zoo-threat-model go with --model robustbench:NAME")
    if model_spec is None:
        if checkpoint is None:
            raise UsageError("name the model to evaluate: a CHECKPOINT, or --model module:factory --dataset NAME")
        if weights is not None:
            raise UsageError("--weights goes with --model module:factory; a checkpoint is the positional argument")
        return load_classifier(checkpoint, arch, dataset)
    if checkpoint is not None:
        raise UsageError("give either a CHECKPOINT or --model module:factory, not both (--weights FILE loads "
                         "weights into the --model)")
    if arch is not None:
        raise UsageError("--arch applies to a plain state dict checkpoint, not to --model (its factory builds the "
                         "architecture)")
    device = device or torch.device("cpu")
    if is_zoo_spec(model_spec):
        if weights is not None:
            raise UsageError("--weights goes with --model module:factory; a zoo entry's weights are read from "
                             "--model-dir")
        zoo = load_zoo_model(model_spec, dataset, zoo_threat_model, model_dir or DEFAULT_MODEL_DIR, download, device)
        return LoadedModel(zoo.model, zoo.metadata, zoo.sha256, zoo.path)
    # A factory that initialises weights draws from torch's RNG: seed it, so the same command builds the same
    # model (and an interrupted evaluation of it can resume) without touching the caller's RNG. The module is
    # imported first: an import that draws from the RNG would otherwise make the first build of a process differ
    # from every later one (a sweep's second evaluation of the same factory).
    import_factory(model_spec)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        user = load_user_model(model_spec, dataset, weights, device, check=check)
    return LoadedModel(user.model, user.metadata, user.sha256, user.path)


def companion_path(recorded: str | None, checkpoint: str | Path | None) -> str | None:
    """A checkpoint's recorded companion file (e.g. ``source_checkpoint``): relative names are relative to the
    checkpoint's own folder, so a run directory can be moved as a whole."""
    if not recorded or Path(recorded).is_absolute() or checkpoint is None:
        return recorded
    return str(Path(checkpoint).parent / recorded)


def recorded_source(metadata: ModelMetadata, checkpoint: str | Path | None) -> str | None:
    """The transfer-protocol source model a checkpoint names (MID's ``source_checkpoint``), or None."""
    return companion_path(metadata.source_checkpoint, checkpoint)
