"""Import the MID authors' released MNIST checkpoints as ordinary midbench checkpoints.

The release (Zhang et al., "Meta Invariance Defense Towards Generalizable Robustness to Unknown Adversarial
Attacks", TPAMI 2024; repository ``mln66/MID``, folder ``saving_models/``) ships three *whole modules* saved with
``torch.save(model)`` under PyTorch 0.4.1: the source model, the teacher autoencoder and the MID student encoder
(docs/reproduce-mid.md). They are read by the restricted legacy reader
(:mod:`midbench.artifacts.legacy_torch`), allowed only the authors' LeNet classes and the ``torch.nn`` layers they use;
this module checks that each file holds exactly the released architecture and maps its tensors onto midbench's
``lenet`` and MID parts.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from midbench.artifacts.checkpoint import load_weights_into, save_checkpoint
from midbench.artifacts.legacy_torch import AllowList, LegacyFile, read_legacy_module
from midbench.artifacts.metadata import ModelMetadata
from midbench.errors import ArtifactError

#: role -> (file name in the release, SHA-256 of the released file, as the authors published them)
RELEASE_FILES: dict[str, tuple[str, str]] = {
    "source": ("MNIST_LeNet5.pkl", "8a0cae94edc0dc80cf0f083aac1721173a9ac514487d875345be5b8288e8bcbf"),
    "teacher": ("LeNet5_MNIST_AE.pkl", "b83c9891c0f736598c07d02bd165fa653dbe363d8eea0334486de7c9c05a1ce9"),
    "student": ("encoder_adv_addclean_MNIST_cls_simi_cyc217.pkl",
                "af31ae17d3852f070dfab97b62fe7ed14b12d99d22cf8ce456aa868d15f03396"),
}
RELEASE = "mln66/MID saving_models/ (Zhang et al., TPAMI 2024, arXiv:2404.03340)"
SOURCE_FILE = "mid-official-source.safetensors"
MID_FILE = "mid-official-mid.safetensors"
TEACHER_FILE = "mid-official-teacher.safetensors"
EVALUATION_NOTE = ("the embedded mnist5k images appear to come from MNIST's training set, on which the released "
                   "models were trained: clean accuracy on it overstates test accuracy")

#: the authors' classes and the torch.nn layers that appear in the release; the saved objects are the LeNets
RELEASE_ALLOW_LIST = AllowList(
    modules=("models.LeNet.LeNet5", "models.LeNet.LeNet5_autoencoder", "models.LeNet.LeNet5_encoder",
             "torch.nn.modules.conv.Conv2d", "torch.nn.modules.conv.ConvTranspose2d",
             "torch.nn.modules.activation.ReLU", "torch.nn.modules.pooling.MaxPool2d",
             "torch.nn.modules.pooling.MaxUnpool2d", "torch.nn.modules.linear.Linear"),
    roots=frozenset({"models.LeNet.LeNet5", "models.LeNet.LeNet5_autoencoder", "models.LeNet.LeNet5_encoder"}),
    what="MID release file")


class MidOfficialWarning(UserWarning):
    """A released file's SHA-256 differs from the README's table (the import goes on)."""


def read_release_file(path: str | Path) -> LegacyFile:
    """A file of the MID release, read without running its code (:mod:`midbench.artifacts.legacy_torch`).

    Raises:
        ArtifactError: missing, empty, HTML, truncated, not a legacy PyTorch file, or naming anything outside
            the release's classes (exit 3).
    """
    return read_legacy_module(path, RELEASE_ALLOW_LIST)


def read_release_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released file by their names in the release (``conv1.weight``, ``dec2.bias``, ...)."""
    return read_release_file(path).tensors


# --- checking the released architecture -------------------------------------------------------------------------


def _normal(value: Any) -> Any:
    """Compare hyper-parameters the way torch uses them: ``2`` means ``(2, 2)``, ``0`` equals ``0.0``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return (float(value), float(value))
    if isinstance(value, tuple) and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return tuple(float(v) for v in value)
    return value


_CONV = {"kernel_size": (3, 3), "stride": (1, 1), "padding": (1, 1), "dilation": (1, 1), "groups": 1,
         "output_padding": (0, 0)}
_POOL = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0), "dilation": (1, 1), "ceil_mode": False}
_RELU = {"threshold": 0, "value": 0}
_ENCODER = {"conv1": ("Conv2d", _CONV), "relu1": ("ReLU", _RELU), "maxpool1": ("MaxPool2d", _POOL),
            "conv2": ("Conv2d", _CONV), "relu2": ("ReLU", _RELU), "maxpool2": ("MaxPool2d", _POOL)}
_HEAD = {"linear1": ("Linear", {}), "relu3": ("ReLU", _RELU), "linear2": ("Linear", {})}
_UNPOOL = {"kernel_size": (2, 2), "stride": (2, 2), "padding": (0, 0)}
_DECODER = {"dec1": ("MaxUnpool2d", _UNPOOL), "dec2": ("ConvTranspose2d", _CONV), "dec3": ("MaxUnpool2d", _UNPOOL),
            "dec4": ("ConvTranspose2d", _CONV)}
#: role -> (root class, layers and the hyper-parameters the midbench ``lenet`` computation assumes)
_EXPECTED = {
    "source": ("models.LeNet.LeNet5", {**_ENCODER, **_HEAD}),
    "teacher": ("models.LeNet.LeNet5_autoencoder", {**_ENCODER, **_DECODER, **_HEAD}),
    "student": ("models.LeNet.LeNet5_encoder", _ENCODER),
}
_SHAPES = {"conv1.weight": (32, 1, 3, 3), "conv1.bias": (32,), "conv2.weight": (64, 32, 3, 3), "conv2.bias": (64,),
           "linear1.weight": (200, 3136), "linear1.bias": (200,), "linear2.weight": (10, 200),
           "linear2.bias": (10,), "dec2.weight": (64, 32, 3, 3), "dec2.bias": (32,), "dec4.weight": (32, 1, 3, 3),
           "dec4.bias": (1,)}


def _check_release(role: str, released: LegacyFile) -> None:
    """Refuse a file whose class, layers or tensors differ from the README's table: the imported classifier must
    compute exactly what the released module computed."""
    root_class, expected = _EXPECTED[role]
    label = released.path.name
    if released.root_class != root_class:
        raise ArtifactError(f"{label} holds {released.root_class}, but the {role} file of the MID release holds "
                            f"{root_class}; check --{role}")
    for name, (kind, params) in expected.items():
        layer = released.layers.get(name)
        if layer is None or layer.kind != kind:
            raise ArtifactError(f"{label}: layer {name} is {layer.kind if layer else 'missing'}, expected {kind}; "
                                f"not the released {role} model")
        for key, value in params.items():
            found = layer.params.get(key)
            if _normal(found) != _normal(value):
                raise ArtifactError(f"{label}: {name}.{key} is {found!r}, expected {value!r}; not the released "
                                    f"{role} model")
    for name, tensor in released.tensors.items():
        if name not in _SHAPES or tuple(tensor.shape) != _SHAPES[name] or tensor.dtype != torch.float32:
            raise ArtifactError(f"{label}: unexpected tensor {name} {tuple(tensor.shape)} {tensor.dtype}; not the "
                                f"released {role} model")
        if not torch.isfinite(tensor).all():
            raise ArtifactError(f"{label}: tensor {name} holds NaN or Inf; the file is corrupted")


def _verify_sha256(role: str, released: LegacyFile) -> bool:
    name, expected = RELEASE_FILES[role]
    if released.sha256 == expected:
        return True
    warnings.warn(f"{released.path.name}: SHA-256 {released.sha256[:16]}... differs from the released {name} "
                  f"({expected[:16]}...); importing anyway — make sure it is the authors' file",
                  MidOfficialWarning, stacklevel=3)
    return False


# --- import ---------------------------------------------------------------------------------------------------

_ENCODER_NAMES = ("conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias")
_HEAD_NAMES = ("linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias")
_DECODER_NAMES = ("dec2.weight", "dec2.bias", "dec4.weight", "dec4.bias")


def _lenet_state(encoder: dict[str, torch.Tensor], head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Release names onto midbench ``lenet`` keys: ``net.encoder.*`` from ``encoder``, ``net.head.*`` from
    ``head``, and identity normalisation (the release takes raw [0, 1] inputs: build_model's default buffers)."""
    state = {f"net.encoder.{name}": encoder[name] for name in _ENCODER_NAMES}
    state |= {f"net.head.{name}": head[name] for name in _HEAD_NAMES}
    state["normalize.mean"] = torch.zeros(1, 1, 1, 1)
    state["normalize.std"] = torch.ones(1, 1, 1, 1)
    return state


def _build_models(files: dict[str, LegacyFile]) -> dict[str, torch.nn.Module]:
    """The three midbench models, built from the registered ``lenet`` modules and loaded strictly (a missing,
    unexpected or mis-shaped tensor raises ArtifactError):

    - ``source``: the source classifier;
    - ``teacher``: the teacher classifier ``C∘E_t`` with ``aux.decoder`` = D_t (a ``mid-teacher`` checkpoint);
    - ``mid``: the MID classifier ``C∘E_s`` (student encoder, teacher head) with ``aux.teacher_encoder`` = E_t
      and ``aux.decoder`` = D_t, assembled like ``midbench train --method mid`` does.
    """
    from midbench.mid.parts import assemble_mid_classifier, attach_decoder
    from midbench.models import build_model
    from midbench.models.factory import AUX_PREFIX

    shape = (1, 28, 28)
    source, teacher, student = files["source"], files["teacher"], files["student"]
    source_model = build_model("lenet", 10, shape)
    load_weights_into(source_model, _lenet_state(source.tensors, source.tensors), source.path.name)

    teacher_model = build_model("lenet", 10, shape)
    attach_decoder(teacher_model, "lenet", shape)
    decoder = {f"{AUX_PREFIX}decoder.{name}": teacher.tensors[name] for name in _DECODER_NAMES}
    load_weights_into(teacher_model, _lenet_state(teacher.tensors, teacher.tensors) | decoder, teacher.path.name)

    mid_model = build_model("lenet", 10, shape)
    assemble_mid_classifier(mid_model, teacher_model)
    teacher_encoder = {f"{AUX_PREFIX}teacher_encoder.{name}": teacher.tensors[name] for name in _ENCODER_NAMES}
    # Loaded again from the release tensors (not only copied), so the strict check covers every key written.
    load_weights_into(mid_model, _lenet_state(student.tensors, teacher.tensors) | teacher_encoder | decoder,
                      student.path.name)
    return {"source": source_model, "teacher": teacher_model, "mid": mid_model}


def _provenance(role: str, released: LegacyFile, verified: bool) -> dict[str, Any]:
    return {"file": released.path.name, "sha256": released.sha256, "release_file": RELEASE_FILES[role][0],
            "sha256_matches_release": verified}


def import_mid_official(source: str | Path, teacher: str | Path, student: str | Path,
                        out_dir: str | Path) -> dict[str, Path]:
    """Turn the three released files into midbench checkpoints in ``out_dir``.

    Writes, all as ``lenet``/``mnist`` midbench checkpoints:

    - ``mid-official-source.safetensors``: the source model (method ``standard``);
    - ``mid-official-teacher.safetensors``: the teacher (method ``mid-teacher``): the classifier ``C∘E_t`` with
      its decoder D_t under ``aux.decoder``, as ``midbench train --method mid-teacher`` writes it, so it evaluates
      as a classifier and :func:`midbench.artifacts.loading.load_teacher` accepts it;
    - ``mid-official-mid.safetensors``: the MID classifier ``C∘E_s`` (student encoder + teacher head) with E_t
      and D_t under ``aux.teacher_encoder`` and ``aux.decoder``, so :func:`midbench.artifacts.loading.load_with_aux`
      and :func:`midbench.mid.parts.regenerate` work on it; its ``source_checkpoint`` names the source
      checkpoint for the transfer protocol and ``teacher_checkpoint`` the teacher's.

    All three files are read and checked before anything is written. Returns ``{"source": path, "teacher": path,
    "mid": path}`` (absolute paths).

    Raises:
        ArtifactError: a file is missing, unsafe, corrupted or not the expected release model (exit 3).
        UsageError: ``out_dir`` cannot be created or written (exit 2).
    """
    from midbench.attacks.specs import load_registry
    from midbench.data import get_dataset
    from midbench.fileio import ensure_writable_dir

    files = {"source": read_release_file(source), "teacher": read_release_file(teacher),
             "student": read_release_file(student)}
    for role, released in files.items():
        _check_release(role, released)
    verified = {role: _verify_sha256(role, released) for role, released in files.items()}
    models = _build_models(files)
    pool = [spec.resolve(get_dataset("mnist").eps).to_dict() for spec in load_registry().suite("mid-mnist-known")]

    out = ensure_writable_dir(Path(out_dir)).resolve()
    paths = {"source": out / SOURCE_FILE, "teacher": out / TEACHER_FILE, "mid": out / MID_FILE}
    common = {"arch": "lenet", "dataset": "mnist", "num_classes": 10, "input_shape": [1, 28, 28], "mean": [0.0],
              "std": [1.0], "release": RELEASE, "evaluation_note": EVALUATION_NOTE}

    save_checkpoint(paths["source"], models["source"].state_dict(), ModelMetadata.from_dict({
        **common, "name": "mid-official-source", "method": "standard",
        "method_citation": "the MID release's source (target) model: LeNet5, cross-entropy", "train_attacks": [],
        "imported_from": {"source": _provenance("source", files["source"], verified["source"])}}))
    save_checkpoint(paths["teacher"], models["teacher"].state_dict(), ModelMetadata.from_dict({
        **common, "name": "mid-official-teacher", "method": "mid-teacher",
        "method_citation": "Zhang et al., Meta Invariance Defense, TPAMI 2024 (released MNIST teacher "
                           "autoencoder, stage 1)",
        "train_attacks": [],
        "composition": "encoder (conv1, conv2), head (linear1, linear2) and decoder (dec2, dec4) from the teacher "
                       "file",
        "imported_from": {"teacher": _provenance("teacher", files["teacher"], verified["teacher"])}}))
    # The MID checkpoint last: the files it refers to exist by the time it does.
    save_checkpoint(paths["mid"], models["mid"].state_dict(), ModelMetadata.from_dict({
        **common, "name": "mid-official-mid", "method": "mid",
        "method_citation": "Zhang et al., Meta Invariance Defense, TPAMI 2024 (released MNIST model)",
        "train_attacks": pool, "source_checkpoint": paths["source"].name,
        "teacher_checkpoint": paths["teacher"].name,
        "composition": "encoder (conv1, conv2) from the student file, head (linear1, linear2) from the teacher "
                       "file; aux.teacher_encoder (conv1, conv2) and aux.decoder (dec2, dec4) from the teacher file",
        "imported_from": {role: _provenance(role, released, verified[role]) for role, released in files.items()}}))
    return paths
