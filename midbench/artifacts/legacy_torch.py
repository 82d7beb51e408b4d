"""A restricted reader of whole modules saved by ``torch.save`` in PyTorch 0.4's legacy format.

``torch.load(weights_only=True)`` refuses such files and full unpickling would run whatever the pickle names, so
this module reads them with its own restricted unpickler (docs/reliability.md, "Security"): nothing but tensors,
storages, ``collections.OrderedDict`` and placeholders for the module classes of an :class:`AllowList` is ever
built, and no constructor of a real module is called. :mod:`midbench.mid.official` uses it for the MID authors'
release.

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
import functools
import hashlib
import io
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from midbench.artifacts.checkpoint import read_checkpoint_bytes
from midbench.errors import ArtifactError
from midbench.fileio import check_pickle_memo

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

#: storage class name -> dtype; the storage types PyTorch 0.4.1 could write
_STORAGE_DTYPES: dict[str, torch.dtype] = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "ByteStorage": torch.uint8,
}
#: the MID release's largest module has 14 (root included); far more means a crafted file
_MAX_MODULES = 256


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
            raise _Malformed(f"a pickled {self.qualified_name} has a malformed state")
        self.state = dict(state)

    @property
    def kind(self) -> str:
        """The real class's name, e.g. ``Conv2d``."""
        return self.qualified_name.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class AllowList:
    """What a legacy file may name: the module classes that get an inert placeholder (``modules``, qualified
    names such as ``torch.nn.modules.conv.Conv2d``), which of them may be the saved object (``roots``), and
    what such a file is called in error messages (``what``)."""

    modules: tuple[str, ...]
    roots: frozenset[str]
    what: str

    def placeholders(self) -> dict[str, type[LegacyModule]]:
        """One placeholder class per allowed module class (made once per allow-list)."""
        return _placeholders(self.modules)


@functools.cache
def _placeholders(modules: tuple[str, ...]) -> dict[str, type[LegacyModule]]:
    return {name: type(name.rsplit(".", 1)[-1], (LegacyModule,), {"qualified_name": name, "__module__": __name__})
            for name in modules}


class _Sealed:
    """Refuses pickle's BUILD opcode, which would otherwise overwrite ``__dict__`` of even a frozen dataclass and
    so undo the checks made when the record was created."""

    def __setstate__(self, state: Any) -> None:
        raise _Malformed(f"the pickle modifies a {type(self).__name__.lstrip('_')} record")


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
        raise _Malformed(f"a tensor's {what} is malformed ({value!r:.60})")
    return value


def _no_hooks(backward_hooks: Any) -> None:
    # Hooks would be callables; the release saved none, and anything else is not a plain tensor.
    if backward_hooks is not None and not (isinstance(backward_hooks, dict) and not backward_hooks):
        raise _Malformed("a tensor carries backward hooks")


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, metadata: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: validates the arguments and records the view."""
    if not isinstance(storage, _StorageRef) or not _is_int(storage_offset) or storage_offset < 0:
        raise _Malformed("a tensor record is malformed")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride) or metadata:
        raise _Malformed("a tensor record is malformed")
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
        raise _Malformed("a tensor is larger than its storage")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_parameter`` (and 0.4's ``Parameter(data, requires_grad)``)."""
    if not isinstance(data, _TensorRef):
        raise _Malformed("a parameter record holds no tensor")
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

    def __init__(self, file: io.BytesIO, label: str, roots: dict[str, _StorageRef], allow: AllowList) -> None:
        super().__init__(file)
        self._label = label
        self._allow = allow
        self._roots = roots  # root storage key -> its declared dtype and size, shared across the file's pickles

    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        placeholders = self._allow.placeholders()
        if qualified in placeholders:
            return placeholders[qualified]
        if qualified in _ALLOWED_CALLABLES:
            return _ALLOWED_CALLABLES[qualified]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise _Refused(f"refused {self._label}: its pickle names {qualified[:120]!r}, which is not on the "
                       f"allow-list for {self._allow.what}s; nothing was executed")

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise _Refused(f"refused {self._label}: unknown persistent id; nothing was executed")
        kind = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
        if kind == "module" and len(pid) == 4:
            # The saved class source is ignored: it only served torch's "source code has changed" warning.
            if not (isinstance(pid[1], type) and pid[1] in self._allow.placeholders().values()):
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
            raise ArtifactError(f"{self._label}: a storage record is malformed; not a {self._allow.what}")
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


def read_legacy_module(path: str | Path, allow: AllowList) -> LegacyFile:
    """Read a whole module saved by ``torch.save`` in PyTorch 0.4.1's legacy format, without running its code:
    only the module classes of ``allow`` can appear in it, and only its ``roots`` as the saved object.

    Raises:
        ArtifactError: the file is missing, empty, HTML, truncated or not a legacy PyTorch file, or its pickle
            names anything outside the allow-list (message "refused ...; nothing was executed") — exit 3.
    """
    path = Path(path)
    data = read_checkpoint_bytes(path)  # refuses missing, empty and HTML/text files with a clear line
    label = path.name
    try:
        return _parse(path, data, label, allow)
    except _Malformed as error:
        raise ArtifactError(f"{label}: {error}; not a {allow.what}") from error
    except ArtifactError:
        raise
    except Exception as error:  # noqa: BLE001 - any parse failure means a truncated or foreign file
        detail = " ".join(f"{type(error).__name__}: {error}".split())[:160]
        raise ArtifactError(f"not a checkpoint: {label} is truncated or not a PyTorch 0.4 legacy file "
                            f"({detail})") from error


def _parse(path: Path, data: bytes, label: str, allow: AllowList) -> LegacyFile:
    if data[:2] == b"PK":
        raise ArtifactError(f"not a checkpoint: {label} is a zip-format torch.save file; this importer reads the "
                            "legacy PyTorch 0.4 files only")
    stream = io.BytesIO(data)
    roots: dict[str, _StorageRef] = {}

    def load() -> Any:
        check_pickle_memo(stream)  # no corrupt memo index reaches the C unpickler (it would allocate gigabytes)
        return _RestrictedUnpickler(stream, label, roots, allow).load()

    if load() != MAGIC_NUMBER:
        raise ArtifactError(f"not a checkpoint: {label} is not a legacy PyTorch file (bad magic number)")
    if load() != PROTOCOL_VERSION:
        raise ArtifactError(f"not a checkpoint: {label} has an unknown legacy protocol version")
    sys_info = load()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise ArtifactError(f"not a checkpoint: {label} was not written on a little-endian machine or lacks its "
                            "sys info; not supported")
    root = load()
    if not isinstance(root, LegacyModule) or root.qualified_name not in allow.roots:
        raise ArtifactError(f"not a {allow.what}: {label} does not hold one of {', '.join(sorted(allow.roots))}")
    keys = load()
    if not isinstance(keys, list) or not all(isinstance(key, str | bytes) for key in keys):
        raise ArtifactError(f"not a checkpoint: {label} has a malformed storage list")
    storages = _read_storages(stream, [k.decode("ascii", "replace") if isinstance(k, bytes) else k for k in keys],
                              roots, label)
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, Layer] = {}
    _walk(root, "", tensors, layers, storages, f"{label}", allow.what, set())
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
          storages: dict[str, torch.Tensor], label: str, what: str, visited: set[int]) -> None:
    """Collect parameters and buffers like ``state_dict`` does (``None`` entries skipped), depth-first."""
    # Each module once: a crafted pickle can share or cycle modules through its memo (endless or exponential walk).
    if id(module) in visited or len(visited) >= _MAX_MODULES:
        raise ArtifactError(f"not a {what}: {label} shares, cycles or nests too many modules")
    visited.add(id(module))
    state = getattr(module, "state", None)
    if state is None:
        raise ArtifactError(f"not a {what}: a {module.qualified_name} in {label} has no state")
    if prefix:
        params = {k: v for k, v in state.items() if not k.startswith("_") and k != "training" and _plain(v)}
        layers[prefix[:-1]] = Layer(module.kind, params)
    for group in ("_parameters", "_buffers"):
        entries = state.get(group) or {}
        if not isinstance(entries, dict):
            raise ArtifactError(f"not a {what}: {label} has a malformed {group} table")
        for name, value in entries.items():
            if value is None:
                continue
            if not isinstance(name, str) or not isinstance(value, _TensorRef):
                raise ArtifactError(f"not a {what}: {label} holds a non-tensor in {prefix}{group}")
            tensors[prefix + name] = _materialise(value, storages)
    children = state.get("_modules") or {}
    if not isinstance(children, dict):
        raise ArtifactError(f"not a {what}: {label} has a malformed _modules table")
    for name, child in children.items():
        if child is None:
            continue
        if not isinstance(name, str) or not isinstance(child, LegacyModule):
            raise ArtifactError(f"not a {what}: {label} holds a non-module in {prefix}_modules")
        _walk(child, f"{prefix}{name}.", tensors, layers, storages, label, what, visited)
