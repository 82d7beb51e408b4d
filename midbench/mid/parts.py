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

import torch
from torch import nn

from midbench.errors import UsageError
from midbench.models.factory import MODELS, NormalizedClassifier


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
