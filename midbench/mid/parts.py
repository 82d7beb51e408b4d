"""MID's modules as midbench models: the teacher autoencoder and the MID classifier ``C∘E_s``.

Both are ordinary :class:`~midbench.models.factory.NormalizedClassifier` objects (so they train, attack, save
and evaluate like any model) with companion modules under ``aux`` that are stored in the same checkpoint but
are not part of the classifier (state-dict prefix :data:`~midbench.models.factory.AUX_PREFIX`):

- teacher: ``net.encoder`` = E_t, ``net.head`` = C, ``aux.decoder`` = D_t; ``forward`` is ``C(E_t(x))``;
- MID classifier: ``net.encoder`` = E_s, ``net.head`` = C (frozen), ``aux.teacher_encoder`` = E_t and
  ``aux.decoder`` = D_t (frozen); ``forward`` is ``C(E_s(x))`` and :func:`regenerate` is ``D_t(E_s(x))``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from midbench.errors import ArtifactError, UsageError
from midbench.models.factory import AUX_PREFIX, MODELS, NormalizedClassifier


def require_mid_architecture(arch: str) -> None:
    """Raise a one-line UsageError unless ``arch`` has an encoder/head split and a registered decoder."""
    info = MODELS.get(arch)
    if info.decoder is None:
        usable = ", ".join(sorted(name for name in MODELS.names() if MODELS.get(name).decoder is not None))
        raise UsageError(f"architecture {arch} has no MID decoder; use one of: {usable}")


def attach_decoder(model: NormalizedClassifier, arch: str, input_shape: tuple[int, int, int]) -> None:
    """Give a freshly built classifier a trainable ``aux.decoder`` (turning it into a teacher autoencoder)."""
    require_mid_architecture(arch)
    decoder = MODELS.get(arch).decoder(tuple(input_shape))  # type: ignore[misc]
    model.aux = nn.ModuleDict({"decoder": decoder.to(model.normalize.mean.device)})


def freeze(module: nn.Module) -> nn.Module:
    """Stop gradients and keep the module in eval mode (its BatchNorm statistics must not move)."""
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    module.eval()
    return module


def assemble_mid_classifier(student: NormalizedClassifier, teacher: NormalizedClassifier) -> None:
    """Turn ``student`` (a fresh classifier of the teacher's architecture) into the MID classifier in place:
    its head becomes a frozen copy of the teacher's head, and frozen copies of E_t and D_t go under ``aux``."""
    student.net.head = freeze(copy.deepcopy(teacher.net.head))
    student.aux = nn.ModuleDict({"teacher_encoder": freeze(copy.deepcopy(teacher.net.encoder)),
                                 "decoder": freeze(copy.deepcopy(teacher.aux["decoder"]))})


@dataclass
class MidModules:
    """The four functions of MID stage 2 (all take and return tensors; normalisation included in ``normalize``)."""

    normalize: nn.Module
    student_encoder: nn.Module
    teacher_encoder: nn.Module
    decoder: nn.Module
    head: nn.Module

    @classmethod
    def of(cls, mid_classifier: NormalizedClassifier) -> MidModules:
        if not hasattr(mid_classifier, "aux") or "teacher_encoder" not in mid_classifier.aux:
            raise UsageError("this model is not a MID classifier (no teacher encoder/decoder stored with it); "
                             "train it with --method mid or import it with `midbench import mid-official`")
        return cls(mid_classifier.normalize, mid_classifier.net.encoder, mid_classifier.aux["teacher_encoder"],
                   mid_classifier.aux["decoder"], mid_classifier.net.head)


@torch.no_grad()
def regenerate(mid_classifier: NormalizedClassifier, x: torch.Tensor) -> torch.Tensor:
    """MID's attack-suppressed image ``D_t(E_s(x))`` (Zhang et al. 2024, Sec. 3), clamped to [0, 1]."""
    parts = MidModules.of(mid_classifier)
    feature, context = parts.student_encoder(parts.normalize(x), return_context=True)
    return parts.decoder(feature, context).clamp(0.0, 1.0)


@dataclass
class LoadedParts:
    """A model loaded with its companion modules, and its checkpoint metadata."""

    model: NormalizedClassifier
    metadata: dict
    sha256: str


def load_with_aux(path: str | Path) -> LoadedParts:
    """Load a midbench checkpoint *with* its ``aux.`` modules: a teacher (``aux.decoder``) or a MID classifier
    (``aux.teacher_encoder`` and ``aux.decoder``), strictly, so every tensor must fit.

    Raises:
        ArtifactError: unreadable or corrupted file, or tensors that do not fit the recorded architecture.
    """
    from midbench.checkpoint import load_checkpoint, load_weights_into

    checkpoint = load_checkpoint(path)
    meta = checkpoint.metadata
    model = checkpoint.build_model()
    arch, num_classes, shape = meta["arch"], int(meta["num_classes"]), tuple(meta["input_shape"])
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
    return LoadedParts(model, meta, checkpoint.sha256)


def load_teacher(path: str | Path) -> LoadedParts:
    """Load a teacher autoencoder checkpoint (``midbench train --method mid-teacher``).

    Raises:
        ArtifactError: the file is not a teacher (no decoder stored with it).
    """
    loaded = load_with_aux(path)
    if not hasattr(loaded.model, "aux") or "decoder" not in loaded.model.aux:
        raise ArtifactError(f"{path} is not a MID teacher (no decoder in it); train one with --method mid-teacher")
    return loaded
