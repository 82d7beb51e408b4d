"""Checkpoints: one ``.safetensors`` file holding the weights and midbench's metadata.

The metadata (JSON under the ``midbench`` key of the safetensors header) records the provenance a result
needs: format version, midbench and torch versions, architecture, dataset, class count, input shape,
normalisation, method, training attacks (fully resolved), config, seed, epoch and metrics. It also records the
SHA-256 of the tensor payload, which is verified on load, so a single flipped bit is caught (docs/reliability.md,
bad input 8).

Foreign checkpoints (a plain state dict saved with ``torch.save``) load only through
``torch.load(weights_only=True)``, which cannot execute code, and need ``--arch``. Every write is atomic.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from midbench._version import __version__
from midbench.artifacts.metadata import ModelMetadata
from midbench.errors import ArtifactError
from midbench.fileio import atomic_write_bytes

FORMAT = "midbench.checkpoint/1"
METADATA_KEY = "midbench"
HASH_KEY = "payload_sha256"


@dataclass
class Checkpoint:
    """Weights (``state_dict``) plus provenance (``metadata``, the JSON as stored; :attr:`info` reads it as a
    :class:`~midbench.artifacts.metadata.ModelMetadata`); ``sha256`` is that of the file's bytes."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    path: str = ""

    @property
    def info(self) -> ModelMetadata:
        """The metadata as a typed record.

        Raises:
            ArtifactError: a field needed to rebuild the model is missing or malformed.
        """
        return ModelMetadata.from_dict(self.metadata, f"checkpoint {self.path}")

    @property
    def arch(self) -> str:
        return self.info.arch

    def build_model(self) -> torch.nn.Module:
        """A fresh model of the recorded architecture, class count, input shape and normalisation (no weights).

        Raises:
            ArtifactError: a metadata field is missing.
        """
        from midbench.models import build_model

        info = self.info
        return build_model(info.arch, info.num_classes, info.input_shape, info.mean, info.std)


def payload_sha256(tensors: dict[str, torch.Tensor], metadata_json: str = "") -> str:
    """SHA-256 over the metadata JSON and every tensor's name, dtype, shape and raw bytes, in name order.

    The metadata is covered too: it decides which attacks count as known, so it must not change unnoticed.
    """
    digest = hashlib.sha256(metadata_json.encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(json.dumps(list(tensor.shape)).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def base_metadata() -> dict[str, Any]:
    """The version fields every checkpoint carries."""
    return {"format": FORMAT, "midbench_version": __version__, "torch_version": torch.__version__}


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: ModelMetadata | dict[str, Any]
                    ) -> str:
    """Atomically write weights and metadata to ``path``; returns the file's SHA-256. midbench's writers give a
    :class:`ModelMetadata`; a plain mapping is stored as it is (the file format does not require the fields)."""
    from safetensors.torch import save

    if isinstance(metadata, ModelMetadata):
        metadata = metadata.to_dict()

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in state_dict.items()}
    full = json.dumps({**base_metadata(), **metadata}, sort_keys=True)
    header = {METADATA_KEY: full, HASH_KEY: payload_sha256(tensors, full), "format": FORMAT}
    data = save(tensors, metadata=header)
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _describe_bad_file(data: bytes, path: Path) -> str | None:
    if not data:
        return f"not a checkpoint: {path} is empty"
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        return f"not a checkpoint: {path} is HTML/text (a failed download?); download it again"
    return None


def read_checkpoint_bytes(path: Path) -> bytes:
    """The file's bytes, refusing missing, empty and HTML/text files with a message that names the problem."""
    if not path.is_file():
        raise ArtifactError(f"checkpoint not found: {path}")
    data = path.read_bytes()
    problem = _describe_bad_file(data, path)
    if problem:
        raise ArtifactError(problem)
    return data


def _looks_like_safetensors(data: bytes) -> bool:
    if len(data) < 10:
        return False
    (header_length,) = struct.unpack("<Q", data[:8])
    return data[8:9] == b"{" and header_length < len(data) + 1


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a midbench checkpoint and verify its payload hash.

    Raises:
        ArtifactError: missing, empty, HTML, truncated, not midbench's format, or tampered-with (exit 3).
    """
    path = Path(path)
    data = read_checkpoint_bytes(path)
    if not _looks_like_safetensors(data):
        raise ArtifactError(f"not a midbench checkpoint: {path}; for a plain PyTorch state dict pass --arch "
                            "(and --dataset)")
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        (header_length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + header_length])
        tensors = load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError) as error:
        raise ArtifactError(f"not a checkpoint: {path} is truncated or corrupted ({error})") from error
    extra = header.get("__metadata__") or {}
    if METADATA_KEY not in extra or HASH_KEY not in extra:
        raise ArtifactError(f"{path} is a safetensors file without midbench metadata; load it as a plain "
                            "state dict with --arch")
    if payload_sha256(tensors, extra[METADATA_KEY]) != extra[HASH_KEY]:
        raise ArtifactError(f"checkpoint {path} is corrupted: its tensors or metadata do not match the SHA-256 "
                            "recorded in it; restore it from a good copy")
    try:
        metadata = json.loads(extra[METADATA_KEY])
    except json.JSONDecodeError as error:
        raise ArtifactError(f"checkpoint {path} has unreadable metadata ({error})") from error
    return Checkpoint(tensors, metadata, hashlib.sha256(data).hexdigest(), str(path))


def load_plain_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Load a foreign ``torch.save`` state dict with ``weights_only=True`` (no code can run).

    Accepts a bare state dict or one nested under ``state_dict``/``model``; strips a DDP ``module.`` prefix.

    Raises:
        ArtifactError: the file is missing, not a checkpoint, or a pickle with anything but tensors in it.
    """
    path = Path(path)
    data = read_checkpoint_bytes(path)
    if _looks_like_safetensors(data):
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            state = load(data)
        except SafetensorError as error:
            raise ArtifactError(f"not a checkpoint: {path} is truncated or corrupted ({error})") from error
    else:
        import io
        import pickle
        import zipfile

        try:
            # A file object, not the path: torch >= 2.14 picks its loader from a ".safetensors" suffix.
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if not data.startswith((b"PK", b"\x80")):  # neither torch.save's zip nor its legacy pickle
                raise ArtifactError(f"not a checkpoint: {path} is neither a PyTorch nor a safetensors file (text or "
                                    "another format?); pass the checkpoint file itself") from error
            raise ArtifactError(f"refused to load {path}: it is a pickle that names code or objects other than "
                                "tensors (nothing was executed); re-save it as a plain state dict") from error
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as error:
            raise ArtifactError(f"not a checkpoint: {path} is truncated or not a PyTorch file ({error})") from error
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ArtifactError(f"not a checkpoint: {path} does not hold a state dict of tensors")
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    return state, hashlib.sha256(data).hexdigest()


def load_weights_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly; a plain network's keys go into ``model.net``.

    Raises:
        ArtifactError: missing or unexpected keys, or shape mismatches, naming a few of them.
    """
    target = model
    if not any(key.startswith("net.") for key in state) and hasattr(model, "net"):
        target = model.net  # a foreign state dict of the bare network (normalisation comes from the dataset)
    load_strictly(target, state, f"{source} does not fit this architecture", key_hint="; check --arch",
                  shape_hint="; check --arch and the class count")


def load_strictly(target: torch.nn.Module, state: dict[str, torch.Tensor], problem: str, key_hint: str = "",
                  shape_hint: str = "") -> None:
    """``target.load_state_dict(state, strict=True)`` with one-line errors that name a few offending keys.

    Args:
        problem: the start of the message, e.g. ``"model.pt does not fit this architecture"``.
        key_hint, shape_hint: appended to the missing/unexpected-keys and the shape-mismatch messages.

    Raises:
        ArtifactError: missing or unexpected keys, shape mismatches, or tensors that cannot be copied (exit 3).
    """
    expected = target.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ArtifactError(f"{problem}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}{key_hint}")
    wrong = [k for k in expected if tuple(expected[k].shape) != tuple(state[k].shape)]
    if wrong:
        raise ArtifactError(f"{problem}: shape mismatch in {wrong[:5]}{shape_hint}")
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as error:  # e.g. a dtype that cannot be copied; keep the one-line message
        raise ArtifactError(f"{problem} ({str(error).splitlines()[0]})") from error


def check_compatible(metadata: ModelMetadata, dataset_name: str, num_classes: int,
                     input_shape: tuple[int, ...]) -> None:
    """Refuse a checkpoint whose class count or input shape differs from the dataset's (docs/reliability.md, bad
    input 1)."""
    ckpt_classes, ckpt_shape = metadata.num_classes, tuple(metadata.input_shape)
    if ckpt_classes != num_classes or ckpt_shape != tuple(input_shape):
        raise ArtifactError(
            f"checkpoint is for {metadata.dataset or '?'} ({ckpt_classes} classes, input {ckpt_shape}) but "
            f"dataset {dataset_name} has {num_classes} classes, input {tuple(input_shape)}; pick a matching "
            "--dataset")
