"""Import the MID authors' released MNIST checkpoints as ordinary midbench checkpoints.

The release (Zhang et al., "Meta Invariance Defense Towards Generalizable Robustness to Unknown Adversarial
Attacks", TPAMI 2024; repository ``mln66/MID``, folder ``saving_models/``) ships three *whole modules* saved with
``torch.save(model)`` under PyTorch 0.4.1: the source model, the teacher autoencoder and the MID student encoder
(``shared/mid-official/README.md``). ``torch.load(weights_only=True)`` refuses them and full unpickling would run
whatever the pickle names, so this module reads them with its own restricted unpickler (reliability.md,
"Security"): nothing but tensors, storages, ``collections.OrderedDict`` and placeholders for the allow-listed
module classes is ever built, and no constructor of a real module is called.

The legacy (non-zip, non-tar) file layout, as written by ``_legacy_save`` and read by ``_legacy_load`` in
``torch/serialization.py``, and the storage record read by ``THPStorage_readFileRaw`` in
``torch/csrc/serialization.cpp``:

1. a pickle of the magic number ``0x1950a86a20f9469cfc6c``;
2. a pickle of the protocol version ``1001``;
3. a pickle of the "sys info" dict (``protocol_version``, ``little_endian``, ``type_sizes``);
4. a pickle of the object itself, with persistent ids ``("module", cls, source_file, source)`` for each module
   class (the class's source text is saved so torch can warn when it changed) and
   ``("storage", storage_type, key, location, numel, view_metadata)`` for each tensor storage; tensors are
   ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks)`` and parameters
   ``torch._utils._rebuild_parameter(tensor, requires_grad, backward_hooks)`` or, in older files,
   ``torch.nn.parameter.Parameter(tensor, requires_grad)``;
5. a pickle of the list of storage keys, in the order their bytes follow;
6. for each key, the element count as a little-endian int64, then ``count * element_size`` raw bytes in the
   writer's byte order (``little_endian`` in the sys info).

The restriction itself follows the Python documentation's "Restricting Globals" recipe for
``pickle.Unpickler.find_class``; ``persistent_load`` resolves storages to inert references whose bytes are
read (step 6) only after the pickle is fully parsed.
"""

from __future__ import annotations

import collections
import hashlib
import io
import pickle
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from midbench.checkpoint import _read_checkpoint_bytes, load_weights_into, save_checkpoint
from midbench.errors import ArtifactError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: role -> (file name in the release, SHA-256 of the released file), from shared/mid-official/README.md
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

#: storage class name -> dtype; the storage types PyTorch 0.4.1 could write
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8,
}
#: the release's largest module has 14 (root included); far more means a crafted file
_MAX_MODULES = 256


class MidOfficialWarning(UserWarning):
    """A released file's SHA-256 differs from the README's table (the import goes on)."""


class _Refused(ArtifactError):
    """A global or persistent id outside the allow-list; raised before anything it names is touched."""


class _Malformed(ArtifactError):
    """Raised by the stand-ins, which do not know the file's name; :func:`read_legacy_module` adds it."""


# --- placeholders: inert stand-ins for everything the pickle may name ----------------------------------------


class LegacyModule:
    """Stand-in for a pickled ``nn.Module``: records the pickled ``__dict__`` and runs no code of the real class.

    Pickle creates it with ``cls.__new__(cls)`` (opcode NEWOBJ) and fills it through ``__setstate__`` (BUILD).
    """

    qualified_name: ClassVar[str] = "?"
    state: dict[str, Any]

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict) or not all(isinstance(key, str) for key in state):
            raise _Malformed(f"a pickled {self.qualified_name} has a malformed state; not a MID release file")
        self.state = dict(state)

    @property
    def kind(self) -> str:
        """The real class's name, e.g. ``Conv2d``."""
        return self.qualified_name.rsplit(".", 1)[-1]


#: the authors' classes and the torch.nn layers that appear in the release, each mapped to a placeholder class
_ALLOWED_MODULES = (
    "models.LeNet.LeNet5", "models.LeNet.LeNet5_autoencoder", "models.LeNet.LeNet5_encoder",
    "torch.nn.modules.conv.Conv2d", "torch.nn.modules.conv.ConvTranspose2d", "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.pooling.MaxPool2d", "torch.nn.modules.pooling.MaxUnpool2d", "torch.nn.modules.linear.Linear",
)
_PLACEHOLDERS: dict[str, type[LegacyModule]] = {
    name: type(name.rsplit(".", 1)[-1], (LegacyModule,), {"qualified_name": name, "__module__": __name__})
    for name in _ALLOWED_MODULES
}
_ROOT_CLASSES = {"models.LeNet.LeNet5", "models.LeNet.LeNet5_autoencoder", "models.LeNet.LeNet5_encoder"}


class _Sealed:
    """Refuses pickle's BUILD opcode, which would otherwise overwrite ``__dict__`` of even a frozen dataclass and
    so undo the checks made when the record was created."""

    def __setstate__(self, state: Any) -> None:
        raise _Malformed(f"the pickle modifies a {type(self).__name__.lstrip('_')} record; not a MID release file")


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """What ``torch.FloatStorage`` etc. resolve to: only the dtype is needed (as in torch's own ``StorageType``)."""

    name: str
    dtype: torch.dtype


@dataclass(frozen=True)
class _StorageRef(_Sealed):
    """A storage persistent id: ``numel`` elements from ``offset`` of root storage ``key`` (bytes read later)."""

    key: str
    dtype: torch.dtype
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef(_Sealed):
    """A tensor to build once the storage bytes are read: a strided view of a storage."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(_is_int(v) and v >= 0 for v in value):
        raise _Malformed(f"a tensor's {what} is malformed ({value!r:.60}); not a MID release file")
    return value


def _no_hooks(backward_hooks: Any) -> None:
    # Hooks would be callables; the release saved none, and anything else is not a plain tensor.
    if backward_hooks is not None and not (isinstance(backward_hooks, dict) and not backward_hooks):
        raise _Malformed("a tensor carries backward hooks; not a MID release file")


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: validates the arguments and records the view."""
    if not isinstance(storage, _StorageRef) or not _is_int(storage_offset) or storage_offset < 0:
        raise _Malformed("a tensor record is malformed; not a MID release file")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or metadata:
        raise _Malformed("a tensor record is malformed; not a MID release file")
    _no_hooks(backward_hooks)
    numel = 1
    for dim in size:
        numel *= dim
    # The last element the view touches must lie inside its storage (as_strided would read past it otherwise).
    last = storage_offset + sum((dim - 1) * step for dim, step in zip(size, stride, strict=True))
    if numel and last >= storage.numel:
        raise _Malformed("a tensor reaches past the end of its storage; the file is corrupted")
    # No more elements than its storage holds: a zero-stride view could otherwise ask for terabytes on copy.
    if numel > storage.numel:
        raise _Malformed("a tensor is larger than its storage; not a MID release file")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter`` (and 0.4's ``Parameter(data, requires_grad)``)."""
    if not isinstance(data, _TensorRef):
        raise _Malformed("a parameter record holds no tensor; not a MID release file")
    _no_hooks(backward_hooks)
    return data


def _no_backend() -> None:
    """Stand-in for ``torch.nn.backends.thnn._get_thnn_function_backend``: 0.4 modules pickled their backend
    object as a call of this factory; it holds no state, so the placeholder records ``None`` instead."""
    return None


_ALLOWED_CALLABLES: dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch.nn.parameter.Parameter": _rebuild_parameter,
    "torch.nn.backends.thnn._get_thnn_function_backend": _no_backend,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` returns only stand-ins from the allow-list and whose
    ``persistent_load`` resolves storages to :class:`_StorageRef` (no bytes are touched while parsing)."""

    def __init__(self, file: io.BytesIO, label: str, roots: dict[str, _StorageRef]) -> None:
        super().__init__(file)
        self._label = label
        self._roots = roots  # root storage key -> its declared dtype and size, shared across the file's pickles

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in _PLACEHOLDERS:
            return _PLACEHOLDERS[qualified]
        if qualified in _ALLOWED_CALLABLES:
            return _ALLOWED_CALLABLES[qualified]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise _Refused(f"refused {self._label}: its pickle names {qualified[:120]!r}, which is not on the "
                       "allow-list for the MID release files; nothing was executed")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise _Refused(f"refused {self._label}: unknown persistent id; nothing was executed")
        kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) == 4:
            # The saved class source is ignored: it only served torch's "source code has changed" warning.
            if not (isinstance(pid[1], type) and pid[1] in _PLACEHOLDERS.values()):
                raise _Refused(f"refused {self._label}: a module persistent id names a disallowed class; "
                               "nothing was executed")
            return pid[1]
        if kind == "storage" and len(pid) == 6:
            return self._storage(*pid[1:])
        raise _Refused(f"refused {self._label}: unknown persistent id {str(kind)[:40]!r}; nothing was executed")

    def _storage(self, storage_type: Any, key: Any, location: Any, numel: Any, view: Any) -> _StorageRef:
        # ``location`` (e.g. "cuda:0") is ignored on purpose: every tensor is built on the CPU.
        key = key.decode("ascii", "replace") if isinstance(key, bytes) else key
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not _is_int(numel) \
                or numel < 0:
            raise ArtifactError(f"{self._label}: a storage record is malformed; not a MID release file")
        root = _StorageRef(key, storage_type.dtype, 0, numel)
        known = self._roots.setdefault(key, root)
        if known != root:
            raise ArtifactError(f"{self._label}: storage {key} is declared twice with different types or sizes; "
                                "the file is corrupted")
        if view is None:
            return root
        # A view of the root storage: (view_key, offset, size) in elements of the root's dtype.
        if not (isinstance(view, tuple) and len(view) == 3 and _is_int(view[1]) and _is_int(view[2])
                and 0 <= view[1] and 0 <= view[2] and view[1] + view[2] <= numel):
            raise ArtifactError(f"{self._label}: a storage view is malformed; the file is corrupted")
        return _StorageRef(key, storage_type.dtype, view[1], view[2])


# --- reading a legacy file -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """A module of the released model: its class name (``Conv2d``) and its plain hyper-parameters."""

    kind: str
    params: dict[str, Any]


@dataclass(frozen=True)
class LegacyFile:
    """What a released file holds: the root class, its tensors by name (``conv1.weight``) and its layers."""

    path: Path
    sha256: str
    root_class: str
    tensors: dict[str, torch.Tensor]
    layers: dict[str, Layer]


def read_legacy_module(path: str | Path) -> LegacyFile:
    """Read a whole module saved by ``torch.save`` in PyTorch 0.4.1's legacy format, without running its code.

    Raises:
        ArtifactError: the file is missing, empty, HTML, truncated or not a legacy PyTorch file, or its pickle
            names anything outside the allow-list (message "refused ...; nothing was executed") — exit 3.
    """
    path = Path(path)
    data = _read_checkpoint_bytes(path)  # refuses missing, empty and HTML/text files with a clear line
    label = path.name
    try:
        return _parse(path, data, label)
    except _Malformed as error:
        raise ArtifactError(f"{label}: {error}") from error
    except ArtifactError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure means a truncated or foreign file
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        raise ArtifactError(f"not a checkpoint: {label} is truncated or not a PyTorch 0.4 legacy file "
                            f"({detail})") from error


def read_release_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a released file by their names in the release (``conv1.weight``, ``dec2.bias``, ...)."""
    return read_legacy_module(path).tensors


def _parse(path: Path, data: bytes, label: str) -> LegacyFile:
    if data[:2] == b"PK":
        raise ArtifactError(f"not a checkpoint: {label} is a zip-format torch.save file; this importer reads the "
                            "MID release's legacy PyTorch 0.4 files only")
    stream = io.BytesIO(data)
    roots: dict[str, _StorageRef] = {}

    def load() -> Any:
        return _RestrictedUnpickler(stream, label, roots).load()

    if load() != MAGIC_NUMBER:
        raise ArtifactError(f"not a checkpoint: {label} is not a legacy PyTorch file (bad magic number)")
    if load() != PROTOCOL_VERSION:
        raise ArtifactError(f"not a checkpoint: {label} has an unknown legacy protocol version")
    sys_info = load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ArtifactError(f"not a checkpoint: {label} was not written on a little-endian machine or lacks its "
                            "sys info; not supported")
    root = load()
    if not isinstance(root, LegacyModule) or root.qualified_name not in _ROOT_CLASSES:
        raise ArtifactError(f"not a MID release file: {label} does not hold one of the authors' LeNet modules")
    keys = load()
    if not isinstance(keys, list) or not all(isinstance(key, str | bytes) for key in keys):
        raise ArtifactError(f"not a checkpoint: {label} has a malformed storage list")
    storages = _read_storages(stream, [k.decode("ascii", "replace") if isinstance(k, bytes) else k for k in keys],
                              roots, label)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Layer] = {}
    _walk(root, "", tensors, layers, storages, label, set())
    return LegacyFile(path, hashlib.sha256(data).hexdigest(), root.qualified_name, tensors, layers)


def _read_storages(stream: io.BytesIO, keys: list[str], roots: dict[str, _StorageRef],
                   label: str) -> dict[str, torch.Tensor]:
    """Step 6 of the layout: each storage's int64 element count, then its raw little-endian bytes."""
    storages: dict[str, torch.Tensor] = {}
    for key in keys:
        if key not in roots or key in storages:
            raise ArtifactError(f"not a checkpoint: {label} lists storage {key[:40]} that its pickle does not use")
        root = roots[key]
        header = stream.read(8)
        if len(header) != 8:
            raise ArtifactError(f"not a checkpoint: {label} is truncated (storage data missing)")
        (count,) = struct.unpack("<q", header)
        if count != root.numel:
            raise ArtifactError(f"not a checkpoint: {label} is corrupted (storage {key} holds {count} elements, "
                                f"declared {root.numel})")
        # Checked before allocating, so a crafted size cannot make us allocate more than the file holds.
        nbytes = count * torch.empty((), dtype=root.dtype).element_size()
        raw = stream.read(nbytes)
        if len(raw) != nbytes:
            raise ArtifactError(f"not a checkpoint: {label} is truncated (storage data missing)")
        storages[key] = torch.frombuffer(bytearray(raw), dtype=root.dtype) if nbytes else \
            torch.empty(0, dtype=root.dtype)
    missing = sorted(set(roots) - set(storages))
    if missing:
        raise ArtifactError(f"not a checkpoint: {label} lacks the data of {len(missing)} storage(s)")
    return storages


def _materialise(ref: _TensorRef, storages: dict[str, torch.Tensor]) -> torch.Tensor:
    flat = storages[ref.storage.key][ref.storage.offset : ref.storage.offset + ref.storage.numel]
    # A contiguous copy that owns its memory (the bytearray behind ``flat`` is shared by all views).
    return torch.as_strided(flat, ref.size, ref.stride, ref.offset).contiguous().clone()


def _plain(value: Any) -> bool:
    if isinstance(value, tuple):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, bool | int | float | str)


def _walk(module: LegacyModule, prefix: str, tensors: dict[str, torch.Tensor], layers: dict[str, Layer],
          storages: dict[str, torch.Tensor], label: str, visited: set[int]) -> None:
    """Collect parameters and buffers like ``state_dict`` does (``None`` entries skipped), depth-first."""
    # Each module once: a crafted pickle can share or cycle modules through its memo (endless or exponential walk).
    if id(module) in visited or len(visited) >= _MAX_MODULES:
        raise ArtifactError(f"not a MID release file: {label} shares, cycles or nests too many modules")
    visited.add(id(module))
    state = getattr(module, "state", None)
    if state is None:
        raise ArtifactError(f"not a MID release file: a {module.qualified_name} in {label} has no state")
    if prefix:
        params = {k: v for k, v in state.items() if not k.startswith("_") and k != "training" and _plain(v)}
        layers[prefix[:-1]] = Layer(module.kind, params)
    for group in ("_parameters", "_buffers"):
        entries = state.get(group) or {}
        if not isinstance(entries, dict):
            raise ArtifactError(f"not a MID release file: {label} has a malformed {group} table")
        for name, value in entries.items():
            if value is None:
                continue
            if not isinstance(name, str) or not isinstance(value, _TensorRef):
                raise ArtifactError(f"not a MID release file: {label} holds a non-tensor in {prefix}{group}")
            tensors[prefix + name] = _materialise(value, storages)
    children = state.get("_modules") or {}
    if not isinstance(children, dict):
        raise ArtifactError(f"not a MID release file: {label} has a malformed _modules table")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(name, str) or not isinstance(child, LegacyModule):
            raise ArtifactError(f"not a MID release file: {label} holds a non-module in {prefix}_modules")
        _walk(child, f"{prefix}{name}.", tensors, layers, storages, label, visited)


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
      as a classifier and :func:`midbench.loading.load_teacher` accepts it;
    - ``mid-official-mid.safetensors``: the MID classifier ``C∘E_s`` (student encoder + teacher head) with E_t
      and D_t under ``aux.teacher_encoder`` and ``aux.decoder``, so :func:`midbench.loading.load_with_aux`
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

    files = {"source": read_legacy_module(source), "teacher": read_legacy_module(teacher),
             "student": read_legacy_module(student)}
    for role, released in files.items():
        _check_release(role, released)
    verified = {role: _verify_sha256(role, released) for role, released in files.items()}
    models = _build_models(files)
    pool = [spec.resolve(get_dataset("mnist").eps).to_dict() for spec in load_registry().suite("mid-mnist-known")]

    out = ensure_writable_dir(Path(out_dir)).resolve()
    paths = {"source": out / SOURCE_FILE, "teacher": out / TEACHER_FILE, "mid": out / MID_FILE}
    common = {"arch": "lenet", "dataset": "mnist", "num_classes": 10, "input_shape": [1, 28, 28], "mean": [0.0],
              "std": [1.0], "release": RELEASE, "evaluation_note": EVALUATION_NOTE}

    save_checkpoint(paths["source"], models["source"].state_dict(), {
        **common, "name": "mid-official-source", "method": "standard",
        "method_citation": "the MID release's source (target) model: LeNet5, cross-entropy", "train_attacks": [],
        "imported_from": {"source": _provenance("source", files["source"], verified["source"])}})
    save_checkpoint(paths["teacher"], models["teacher"].state_dict(), {
        **common, "name": "mid-official-teacher", "method": "mid-teacher",
        "method_citation": "Zhang et al., Meta Invariance Defense, TPAMI 2024 (released MNIST teacher "
                           "autoencoder, stage 1)",
        "train_attacks": [],
        "composition": "encoder (conv1, conv2), head (linear1, linear2) and decoder (dec2, dec4) from the teacher "
                       "file",
        "imported_from": {"teacher": _provenance("teacher", files["teacher"], verified["teacher"])}})
    # The MID checkpoint last: the files it refers to exist by the time it does.
    save_checkpoint(paths["mid"], models["mid"].state_dict(), {
        **common, "name": "mid-official-mid", "method": "mid",
        "method_citation": "Zhang et al., Meta Invariance Defense, TPAMI 2024 (released MNIST model)",
        "train_attacks": pool, "source_checkpoint": paths["source"].name,
        "teacher_checkpoint": paths["teacher"].name,
        "composition": "encoder (conv1, conv2) from the student file, head (linear1, linear2) from the teacher "
                       "file; aux.teacher_encoder (conv1, conv2) and aux.decoder (dec2, dec4) from the teacher file",
        "imported_from": {role: _provenance(role, released, verified[role]) for role, released in files.items()}})
    return paths
