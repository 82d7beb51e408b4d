"""The RobustBench model zoo as input: ``midbench eval --model robustbench:NAME --dataset cifar10 --zoo-threat-model
Linf`` (Croce et al., "RobustBench: a standardized adversarial robustness benchmark", NeurIPS 2021 Datasets and
Benchmarks).

The architectures come from the ``robustbench`` package (the ``robustbench`` extra: its ``model_zoo`` builds
each entry's network); the weights from a local model directory in RobustBench's layout,
``<model-dir>/<dataset>/<zoo threat model>/<NAME>.pt`` (RobustBench's own default directory is ``./models``).
A *zoo threat model* is RobustBench's list (Linf, L2, corruptions), not a threat model of midbench's registry.
Nothing is downloaded unless ``--download`` is given, and then through RobustBench's own downloader. The file is read by
midbench with ``torch.load(weights_only=True)`` — never the full unpickler — and refused when it is an HTML page
(what a failed Google Drive download leaves behind; RobustBench issues 68, 158, 174, 177).

An entry counts as trained against its threat model (``TRAINED_AGAINST``; not ``Standard``, the zoo's undefended
reference): its L∞ or L2 PGD is its known attack, and in the unknown-attack profile that threat model is *seen*,
so a Linf entry is ranked on the threat models it was not made robust to (the MultiRobustBench question).

Two shims make the PyPI package importable here, both documented in the README: its ``__init__`` imports
``autoattack`` (the reference AutoAttack under its GitHub name), which the PyPI packaging ``pyautoattack``
provides under another name, so midbench registers it under the old one before importing; and it imports
``pkg_resources``, which setuptools 81 removed, so the extra pins ``setuptools<81``.
"""

from __future__ import annotations

import difflib
import hashlib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from midbench.artifacts.metadata import ModelMetadata
from midbench.data.datasets import get_dataset
from midbench.errors import ArtifactError, UsageError

PREFIX = "robustbench:"
ZOO_THREAT_MODELS = ("Linf", "L2", "corruptions")
#: midbench's dataset ids → RobustBench's
ZOO_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100", "imagenet": "imagenet"}
DEFAULT_MODEL_DIR = "models"
#: the registry attack that stands for a threat model the zoo's entries were trained against, at the dataset's ε
#: (RobustBench's CIFAR budgets, L∞ 8/255 and L2 0.5, are midbench's): a Linf entry's ``linf`` curve is then
#: *seen*, not counted among its unknown threat models. ``corruptions`` are not an attack.
TRAINED_AGAINST = {"Linf": "pgd-linf", "L2": "pgd-l2"}
#: the preprocessing of midbench's ``imagenet`` in the zoo's words (:mod:`midbench.data.folders`); ImageNet entries
#: evaluated on other crops or resolutions are refused rather than shown images they were not made for
IMAGENET_PREPROCESSING = "Res256Crop224"
#: the zoo's undefended reference, listed under every threat model
UNDEFENDED = "Standard"
#: what a file starts with when a download saved a web page instead of the weights
HTML_STARTS = (b"<!doctype html", b"<html", b"<!--", b"<head")


@dataclass
class ZooModel:
    """A loaded zoo entry: the network, what is recorded about it, and the SHA-256 of its weights file."""

    model: nn.Module
    metadata: ModelMetadata
    sha256: str
    path: str


def is_zoo_spec(spec: str | None) -> bool:
    return spec is not None and spec.startswith(PREFIX)


def _model_dicts() -> Any:  # noqa: ANN401 - robustbench's own mapping
    """RobustBench's ``model_dicts`` (one-line UsageError when the extra is missing)."""
    try:
        import pyautoattack

        sys.modules.setdefault("autoattack", pyautoattack)
        with warnings.catch_warnings():  # its imports warn about torch.jit and pkg_resources, not about the user's run
            warnings.simplefilter("ignore")
            from robustbench.model_zoo import model_dicts
    except ImportError as error:
        raise UsageError(f"--model {PREFIX}NAME needs the robustbench extra: pip install 'midbench[robustbench]' "
                         f"({error})") from error
    return model_dicts


def zoo_entries(dataset: str, threat_model: str) -> dict[str, Any]:
    """The zoo's entries for a dataset and threat model.

    Raises:
        UsageError: a dataset or threat model the zoo does not have.
    """
    if dataset not in ZOO_DATASETS:
        raise UsageError(f"the RobustBench zoo has no {dataset!r} models; use --dataset one of "
                         f"{', '.join(ZOO_DATASETS)}")
    if threat_model not in ZOO_THREAT_MODELS:
        raise UsageError(f"--zoo-threat-model {threat_model!r}: use one of {', '.join(ZOO_THREAT_MODELS)}")
    dicts = _model_dicts()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return dict(dicts.get(BenchmarkDataset(ZOO_DATASETS[dataset]), {}).get(ThreatModel(threat_model), {}))


def weights_path(name: str, dataset: str, threat_model: str, model_dir: str | Path) -> Path:
    """Where RobustBench keeps an entry's weights: ``<model_dir>/<dataset>/<threat model>/<name>.pt``."""
    return Path(model_dir) / ZOO_DATASETS[dataset] / threat_model / f"{name}.pt"


def check_zoo_name(spec: str, dataset: str, threat_model: str) -> tuple[str, dict[str, Any]]:
    """The entry name of ``robustbench:NAME``, checked against the zoo, and its zoo record (its ``model``
    builds the network).

    Raises:
        UsageError: the extra missing, a dataset or threat model the zoo lacks, an unknown name (with close
            matches).
    """
    name = spec[len(PREFIX):].strip()
    entries = zoo_entries(dataset, threat_model)
    if name not in entries:
        close = difflib.get_close_matches(name, list(entries), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else f" (the zoo has {len(entries)} entries there)"
        raise UsageError(f"no RobustBench model {name!r} for {dataset} under {threat_model}{hint}")
    return name, entries[name]


def load_zoo_model(spec: str, dataset: str | None, threat_model: str = "Linf",
                   model_dir: str | Path = DEFAULT_MODEL_DIR, download: bool = False,
                   device: torch.device | None = None) -> ZooModel:
    """Build zoo entry ``robustbench:NAME`` and load its weights from ``model_dir``.

    Raises:
        UsageError: no ``dataset``, the extra missing, an unknown name (with close matches).
        ArtifactError: the weights file missing (without ``download``), an HTML page, unreadable, or not fitting.
    """
    if dataset is None:
        raise UsageError(f"--model {spec} needs --dataset (cifar10, cifar100 or imagenet)")
    name, entry = check_zoo_name(spec, dataset, threat_model)
    preprocessing = entry.get("preprocessing")
    if dataset == "imagenet" and preprocessing not in (None, IMAGENET_PREPROCESSING):
        raise UsageError(f"RobustBench model {name} is evaluated on {preprocessing} images; midbench's imagenet is "
                         f"{IMAGENET_PREPROCESSING} (docs/datasets.md), so this entry is not supported yet")
    path = weights_path(name, dataset, threat_model, model_dir)
    if not path.is_file():
        if not download:
            raise ArtifactError(f"{path} not found: put the zoo's weights there (RobustBench's layout under "
                                f"--model-dir {model_dir}) or pass --download to fetch them")
        _download(name, dataset, threat_model, model_dir)
    model = entry["model"]()
    _load_weights(model, path)
    device = device if device is not None else torch.device("cpu")
    data_spec = get_dataset(dataset)
    zoo = {"source": "robustbench", "name": name, "dataset": ZOO_DATASETS[dataset], "threat_model": threat_model,
           "architecture": type(model).__name__, "citation_key": name}
    metadata = ModelMetadata(arch=type(model).__name__, num_classes=data_spec.num_classes,
                             input_shape=tuple(data_spec.input_shape), dataset=dataset, name=name, model_spec=spec,
                             train_attacks=_trained_against(name, threat_model, data_spec.eps), extra={"zoo": zoo})
    return ZooModel(model.to(device).eval(), metadata, _sha256(path), str(path))


def _trained_against(name: str, threat_model: str, dataset_eps: dict[str, float]) -> tuple[dict[str, Any], ...]:
    """What the entry counts as trained against: the zoo lists it under ``threat_model`` because it was made robust
    to that threat model (all but ``Standard``), so the threat model's PGD at the dataset's ε stands for its
    training attacks — its known split, and the profile's seen threat model."""
    attack_id = TRAINED_AGAINST.get(threat_model)
    if attack_id is None or name == UNDEFENDED:
        return ()
    from midbench.attacks.specs import load_registry

    return (load_registry([]).get(attack_id).resolve(dataset_eps).to_dict(),)


def _download(name: str, dataset: str, threat_model: str, model_dir: str | Path) -> None:
    """RobustBench's downloader (Google Drive or Zenodo) writes the file into the layout; midbench then reads it
    itself, safely."""
    from robustbench.utils import load_model

    path = weights_path(name, dataset, threat_model, model_dir)
    try:
        load_model(model_name=name, model_dir=str(model_dir), dataset=ZOO_DATASETS[dataset], threat_model=threat_model)
    except Exception as error:  # noqa: BLE001 - any failure of the download is reported the same way
        if path.is_file() and not _is_html(path):
            return  # downloaded; only RobustBench's own loading failed, and midbench loads the file itself
        if path.is_file():
            raise ArtifactError(f"{path} is an HTML page, not weights (a failed Google Drive download): delete it "
                                "and retry later, or fetch the file by hand") from error
        raise ArtifactError(f"downloading RobustBench model {name} failed ({type(error).__name__}: {error})") from error


def _is_html(path: Path) -> bool:
    with path.open("rb") as handle:
        start = handle.read(512).lstrip().lower()
    return start.startswith(HTML_STARTS)


def _load_weights(model: nn.Module, path: Path) -> None:
    if _is_html(path):
        raise ArtifactError(f"{path} is an HTML page, not weights (a failed Google Drive download): delete it and "
                            "download again")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means the file is unusable
        raise ArtifactError(f"{path} is not a loadable state dict ({type(error).__name__}); delete it and download "
                            "again") from error
    for key in ("state_dict", "model_state_dict", "model"):  # the zoo's files wrap the weights in various ways
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                              for key, value in state.items()):
        raise ArtifactError(f"{path} holds no state dict (names to tensors): delete it and download again")
    state = {(key[len("module."):] if key.startswith("module.") else key): value for key, value in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ArtifactError(f"{path} does not fit the zoo's {type(model).__name__}: {first}") from error


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
