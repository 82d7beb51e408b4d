"""Bring your own model: ``midbench eval --model module:factory [--weights FILE] --dataset NAME``.

Any PyTorch classifier the user can import is evaluated like a midbench checkpoint, so masked or exotic
defenses can be checked with the same attacks and sanity flags. The contract: the factory returns an
``nn.Module`` that takes images in [0, 1] of the dataset's shape (normalisation inside the model) and returns
logits, one row per image.

Importing runs the named module's code. That is allowed because the user named it on the command line
(docs/reliability.md, "Security": ``module:attr`` targets in a package the user named); nothing in a config or
registry file can name such a target, and weights still load only through ``torch.load(weights_only=True)`` or
safetensors, so a weights file cannot run code.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midbench.artifacts.adapters import check_logits
from midbench.artifacts.checkpoint import load_plain_state_dict, load_strictly, payload_sha256
from midbench.artifacts.metadata import ModelMetadata
from midbench.data.datasets import get_dataset
from midbench.errors import ArtifactError, UsageError

#: ``package.module:attribute`` (the attribute may be dotted: ``module:Class.create``)
SPEC_PATTERN = re.compile(r"^(?P<module>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*):(?P<attr>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*)$")


@dataclass
class UserModel:
    """A user's classifier with the provenance a result records.

    Attributes:
        model: the classifier (weights loaded when given).
        metadata: ``name``, ``arch`` (the model's class name), ``dataset``, ``num_classes``, ``input_shape``,
            ``method`` ("unknown"), ``train_attacks`` ([]), ``model_spec``, ``weights_sha256``,
            ``source_sha256`` (the module file's, when there is one).
        sha256: the identity of what was evaluated: a hash over the spec, the module file and the state dict, so
            two specs sharing a weights file (an honest model and its masked twin) are never one leaderboard row.
        path: the weights file, or ``None``.
    """

    model: nn.Module
    metadata: ModelMetadata
    sha256: str
    path: str | None


def parse_model_spec(spec: str, option: str = "--model") -> tuple[str, str]:
    """Split ``module:factory`` into (module, attribute).

    Raises:
        UsageError: ``spec`` is not of that form.
    """
    match = SPEC_PATTERN.match(spec.strip())
    if not match:
        model = option != "--method"  # a model factory (``--model``, a sweep's ``model``) or a defense class
        what = ("the factory returns an nn.Module taking images in [0, 1] and returning logits" if model
                else "the class is a midbench.defenses.DefenseTask subclass")
        form = "module:factory" if model else "module:Class"
        raise UsageError(f"{option} {spec!r} is not of the form {form} (e.g. mypackage.models:build); {what}")
    return match["module"], match["attr"]


def import_factory(spec: str, option: str = "--model") -> Any:
    """Import the module of ``spec`` (``module:attribute``, as given to ``option``) and return its attribute
    (a factory, a class, or a module instance).

    Raises:
        UsageError: the module cannot be imported, its import fails, or it has no such attribute.
    """
    module_name, attr = parse_model_spec(spec, option)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = error.name or module_name
        if module_name == missing or module_name.startswith(f"{missing}."):
            raise UsageError(f"{option} {spec}: cannot import module {module_name!r} (no module named {missing!r}); "
                             "install its package or add its folder to PYTHONPATH") from error
        raise UsageError(f"{option} {spec}: importing module {module_name!r} failed: it needs {missing!r}, which is "
                         "not installed") from error
    except Exception as error:  # noqa: BLE001 - the user's module may raise anything; report it in one line
        raise UsageError(f"{option} {spec}: importing module {module_name!r} failed "
                         f"({type(error).__name__}: {error})") from error
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"{option} {spec}: module {module_name!r} has no attribute {attr!r}")
        target = getattr(target, part)
    return target


def _call_factory(factory: Any, spec: str, num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Call the factory, passing ``num_classes``/``input_shape`` only if it has parameters of those names."""
    if isinstance(factory, nn.Module):  # a ready-made instance: calling it would run its forward
        return factory
    if not callable(factory):
        raise UsageError(f"--model {spec}: {type(factory).__name__} is not callable; name a function or class that "
                         "returns an nn.Module")
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        parameters = {}
    offered = {"num_classes": num_classes, "input_shape": tuple(input_shape)}
    kwargs = {name: value for name, value in offered.items() if name in parameters}
    try:
        model = factory(**kwargs)
    except Exception as error:  # noqa: BLE001 - the user's factory may raise anything; report it in one line
        raise UsageError(f"--model {spec}: calling the factory failed ({type(error).__name__}: {error}); it is "
                         "called with no arguments, or with num_classes=/input_shape= if it takes them") from error
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {spec}: the factory returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _load_weights(model: nn.Module, path: str, spec: str) -> str:
    """Load a state dict file strictly into ``model``; returns the file's SHA-256.

    Raises:
        ArtifactError: the file is missing, unsafe, not a state dict, or does not fit the model (exit 3).
    """
    state, sha256 = load_plain_state_dict(path)
    load_strictly(model, state, f"weights {path} do not fit --model {spec}")
    return sha256


def module_source_sha256(spec: str) -> str | None:
    """SHA-256 of the file defining the factory's module (best effort: ``None`` without a source file)."""
    module_name, _ = parse_model_spec(spec)
    try:
        source = inspect.getsourcefile(importlib.import_module(module_name))
    except (TypeError, OSError, ImportError):
        return None
    if not source or not Path(source).is_file():
        return None
    return hashlib.sha256(Path(source).read_bytes()).hexdigest()


def load_user_model(spec: str, dataset: str | None, weights: str | None = None,
                    device: torch.device | None = None, check: bool = True) -> UserModel:
    """Build the classifier of ``--model spec`` for ``dataset``, with ``weights`` loaded if given.

    Args:
        spec: ``module:factory``; the factory is called with no arguments, or with ``num_classes=`` and
            ``input_shape=`` when it has parameters of those names.
        dataset: the dataset to evaluate on (required: it fixes the input shape, classes and ε).
        weights: a ``torch.save`` state dict (loaded with ``weights_only=True``) or a safetensors file.
        device: where the model is checked and left (default CPU).
        check: run one batch through it to check that it returns logits (the caller checks instead when an
            adapter will pick them out of another output, :mod:`midbench.artifacts.adapters`).

    Raises:
        UsageError: bad spec, missing ``dataset``, module not importable, factory failure (exit 2).
        ArtifactError: weights missing, unsafe or not fitting; a model that does not fit the dataset (exit 3).
    """
    parse_model_spec(spec)
    if dataset is None:
        raise UsageError("--model needs --dataset (it fixes the input shape, the classes and ε)")
    data_spec = get_dataset(dataset)
    if weights is not None and not Path(weights).is_file():
        raise ArtifactError(f"weights file not found: {weights}")
    model = _call_factory(import_factory(spec), spec, data_spec.num_classes, data_spec.input_shape)
    weights_sha256 = _load_weights(model, weights, spec) if weights is not None else None
    device = device if device is not None else torch.device("cpu")
    model = model.to(device)
    if check:
        check_logits(model, f"--model {spec}", dataset, device)
    source_sha256 = module_source_sha256(spec)
    identity = _identity({"model_spec": spec, "source_sha256": source_sha256, "state_sha256": _state_sha256(model)})
    metadata = ModelMetadata(arch=type(model).__name__, num_classes=data_spec.num_classes,
                             input_shape=tuple(data_spec.input_shape), dataset=dataset, name=spec, model_spec=spec,
                             weights_sha256=weights_sha256, source_sha256=source_sha256)
    return UserModel(model, metadata, identity, weights)


def in_memory_model(model: nn.Module, dataset: str, name: str | None = None,
                    device: torch.device | None = None, check: bool = True) -> UserModel:
    """A classifier the caller built in Python (the API's ``nn.Module``), checked like ``--model``'s on
    ``dataset``'s inputs and moved to ``device``.

    Its identity is its class and state dict (parameters and buffers): the same weights are the same model in
    every table, whatever variable held them.

    Raises:
        UsageError: not an ``nn.Module``.
        ArtifactError: the model does not accept the dataset's inputs or does not return N × classes logits.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"expected a torch.nn.Module, got {type(model).__name__}; pass a checkpoint path as "
                         "checkpoint= or a factory as model='module:factory'")
    data_spec = get_dataset(dataset)
    device = device if device is not None else torch.device("cpu")
    model = model.to(device)
    label = name or type(model).__name__
    if check:
        check_logits(model, f"the nn.Module {label}", dataset, device, flag="output=")
    identity = _identity({"class": f"{type(model).__module__}.{type(model).__qualname__}",
                          "state_sha256": _state_sha256(model)})
    metadata = ModelMetadata(arch=type(model).__name__, num_classes=data_spec.num_classes,
                             input_shape=tuple(data_spec.input_shape), dataset=dataset, name=label)
    return UserModel(model, metadata, identity, None)


def _state_sha256(model: nn.Module) -> str:
    """SHA-256 of a model's state dict (parameters and buffers)."""
    return payload_sha256({k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)})


def _identity(record: dict[str, str | None]) -> str:
    """A user model's identity in tables: the SHA-256 of what makes it (spec or class, module file, state)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()
