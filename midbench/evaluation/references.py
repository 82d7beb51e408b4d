"""Reference sets: the fixed accuracies that unknown-attack scores are normalised by (docs/scoring.md).

A reference set belongs to one dataset (and the datasets that share its ladders) and one architecture family. For
each ranked threat model it holds the ladder it was measured on, the profile attacks it was measured with
(``id@version``), and the ATA curve: at every rung, the accuracy of the model adversarially trained against that
threat model (Kang et al. 2019, "Testing Robustness Against Unforeseen Adversaries", UAR). ``midbench calibrate``
writes one as ``reference.json`` in its folder, beside ``ladders.toml`` (the calibrated ladders), and the result
files it was computed from; the sets of the repository's ``results/references/`` ship inside the package.

Scores are never normalised by "the best model of this table": a row is scored against the set of its dataset and
architecture family, or not at all, so adding or removing a model changes no other row.

This module reads JSON only (no torch): the leaderboard uses it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midbench.errors import ArtifactError, UsageError
from midbench.paths import shipped_reference_dirs

SCHEMA = "midbench.reference/1"
#: the file of a reference set's folder that holds its reference table
REFERENCE_FILE = "reference.json"


@dataclass(frozen=True)
class ReferenceCurve:
    """One threat model of a reference set: its ladder, the attacks climbed, and the ATA at every rung."""

    threat_model: str
    strengths: tuple[float, ...]
    attacks: tuple[str, ...]
    ata: tuple[float, ...]
    #: the reference model(s) behind the curve: name, training attack, checkpoint hash, result file
    models: tuple[dict[str, Any], ...] = ()

    def matches(self, strengths: list[float], attacks: list[str]) -> str | None:
        """Why a measured curve cannot be scored against this one (None when it can): another ladder, or other
        profile attacks (a changed registry entry is a new version, so the reference no longer applies)."""
        if tuple(float(s) for s in strengths) != self.strengths:
            return f"ladder {list(strengths)} differs from the reference's {list(self.strengths)}"
        if tuple(attacks) != self.attacks:
            return f"attacks {', '.join(attacks)} differ from the reference's {', '.join(self.attacks)}"
        return None


@dataclass(frozen=True)
class ReferenceSet:
    """A reference table (``reference.json``) and where it was read from."""

    name: str
    datasets: tuple[str, ...]
    arch_family: str
    archs: tuple[str, ...]
    curves: dict[str, ReferenceCurve]
    made_by: str
    n_examples: int
    path: Path
    document: dict[str, Any] = field(default_factory=dict, repr=False)

    def covers(self, dataset: str, arch: str | None) -> bool:
        return dataset in self.datasets and arch in self.archs

    def label(self) -> str:
        return f"{self.name} ({self.path.parent.name}/{self.path.name})"


def _number_list(value: Any, where: str) -> tuple[float, ...]:
    if not isinstance(value, list) or not all(isinstance(v, int | float) and not isinstance(v, bool)
                                              and math.isfinite(v) for v in value):
        raise ArtifactError(f"{where}: expected a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _names(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ArtifactError(f"{where}: expected a non-empty list of names, got {value!r}")
    return tuple(value)


def load_reference_set(path: str | Path) -> ReferenceSet:
    """Read a reference table: a ``reference.json`` file, or a folder that holds one.

    Raises:
        UsageError: the path does not exist.
        ArtifactError: not a midbench reference table (unreadable, another schema, missing or malformed fields,
            an ATA curve whose length differs from its ladder or with accuracies outside [0, 1]).
    """
    path = Path(path)
    if path.is_dir():
        path = path / REFERENCE_FILE
    if not path.is_file():
        raise UsageError(f"no reference table at {path}; give a folder written by `midbench calibrate` or its "
                         f"{REFERENCE_FILE}")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArtifactError(f"{path}: not a readable reference table ({type(error).__name__}); rerun "
                            "`midbench calibrate`") from error
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise ArtifactError(f"{path}: not a midbench reference table (schema {SCHEMA} expected)")
    try:
        curves = {}
        for model, entry in dict(document["threat_models"]).items():
            where = f"{path} threat model {model}"
            curve = ReferenceCurve(str(model), _number_list(entry["strengths"], where),
                                   _names(entry["attacks"], where), _number_list(entry["ata"], where),
                                   tuple(entry.get("models", [])))
            if len(curve.ata) != len(curve.strengths) or not all(0 <= a <= 1 for a in curve.ata):
                raise ArtifactError(f"{where}: the ATA must give one accuracy in [0, 1] per rung of the ladder")
            curves[str(model)] = curve
        reference = ReferenceSet(str(document["name"]), _names(document["datasets"], str(path)),
                                 str(document["arch_family"]), _names(document["archs"], str(path)), curves,
                                 str(document.get("made_by", "")), int(document["n_examples"]), path, document)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ArtifactError(f"{path}: malformed reference table ({type(error).__name__}: {error}); rerun "
                            "`midbench calibrate`") from error
    return reference


def reference_sets(extra: list[str | Path] | tuple[str | Path, ...] = ()) -> list[ReferenceSet]:
    """The user's reference sets (``extra``, in order) and then the shipped ones."""
    found = [load_reference_set(path) for path in extra]
    found += [load_reference_set(folder) for folder in shipped_reference_dirs()
              if (folder / REFERENCE_FILE).is_file()]
    return found


def check_reference_set(reference: ReferenceSet, dataset: str, arch: str | None) -> None:
    """Refuse a reference set given for a table it does not belong to.

    Raises:
        UsageError: the set is for another dataset or another architecture family.
    """
    if dataset not in reference.datasets:
        raise UsageError(f"reference set {reference.label()} is for dataset(s) {', '.join(reference.datasets)}, "
                         f"not {dataset}; calibrate one for {dataset} (`midbench calibrate`) or leave it out")
    if arch not in reference.archs:
        raise UsageError(f"reference set {reference.label()} is for the {reference.arch_family} family "
                         f"({', '.join(reference.archs)}), not {arch}; calibrate one for this architecture or leave "
                         "it out")


def check_threat_models(reference: ReferenceSet, known: set[str] | list[str]) -> None:
    """Refuse a reference set naming a threat model that the attack registry does not define.

    Raises:
        UsageError: names the first unknown threat model and the registry's.
    """
    for model in reference.curves:
        if model not in known:
            raise UsageError(f"reference set {reference.label()} has a curve for threat model {model!r}, which the "
                             f"attack registry does not define (it has {', '.join(sorted(known))}); add its "
                             "[[threat_model]] with --registry-dir or recalibrate")


def covering_sets(sets: list[ReferenceSet], dataset: str, arch: str | None) -> list[ReferenceSet]:
    """The sets that cover ``dataset`` and ``arch``, in order (user sets before shipped ones): a threat model is
    scored against the first of them with a curve for it."""
    return [reference for reference in sets if reference.covers(dataset, arch)]
