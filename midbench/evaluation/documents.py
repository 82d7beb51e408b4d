"""The result document (schema ``midbench.result/1``): one typed record, :class:`ResultDocument`, with one reader
(:meth:`ResultDocument.from_dict`, :func:`read_result`) and one writer (:meth:`ResultDocument.to_dict`).

Built by :mod:`midbench.evaluation.results`; read by the tables (:mod:`midbench.reporting.leaderboard`, ``compare``,
``export``) without importing the evaluation engine, the attacks or torch (a contract in ``pyproject.toml``).
The fields are documented in ``results/README.md``. Keys a section does not name (an attack's AutoAttack
components, a newer midbench's additions) are kept in its ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midbench.errors import ArtifactError
from midbench.protocols import AUTOATTACK_ENTRY, is_autoattack_figure

SCHEMA = "midbench.result/1"
#: the keys of a result's ``summary`` (fractions, ``null`` when the split is empty)
SUMMARY_KEYS = ["known_mean", "known_worst", "unknown_mean", "unknown_worst", "all_worst", "autoattack"]


class _Section:
    """Reading and writing a JSON object whose known keys are the dataclass's fields and the rest ``extra``.
    Fields named in ``_OMITTED_WHEN_NONE`` are left out when ``None``: keys that older files do not have."""

    _OMITTED_WHEN_NONE: tuple[str, ...] = ()

    @classmethod
    def _parse(cls, raw: dict[str, Any]) -> Any:
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]  # type: ignore[arg-type]
        return cls(**{key: raw[key] for key in names if key in raw},
                   extra={key: value for key, value in raw.items() if key not in names})

    def to_dict(self) -> dict[str, Any]:
        written = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                   if f.name != "extra" and not (f.name in self._OMITTED_WHEN_NONE and getattr(self, f.name) is None)}
        return {**written, **self.extra}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class AttackRow(_Section):
    """One attack of an evaluation: its configuration, split (known/unknown) and robust accuracy."""

    id: str
    split: str
    family: str | None = None
    norm: str | None = None
    eps: float | None = None
    targeted: bool | None = None
    target: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    implementation: str | None = None
    robust_accuracy: float | None = None
    ci95: list[float] | None = None
    seconds: float | None = None
    forward_passes: int | None = None
    backward_passes: int | None = None
    #: per-attack details (e.g. AutoAttack's ``components``)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AttackRow:
        return cls._parse(raw)

    @property
    def is_autoattack(self) -> bool:
        """Whether the row is AutoAttack standard at the L∞ ε (the figure of the AutoAttack column)."""
        if self.implementation is not None:
            return is_autoattack_figure(self.implementation, self.norm)
        return self.id.split("@")[0] == AUTOATTACK_ENTRY  # rows of early result files name no implementation


@dataclass(frozen=True)
class EvaluatedModel(_Section):
    """The ``checkpoint`` section: what was evaluated and how it was trained."""

    path: str | None = None
    sha256: str | None = None
    name: str | None = None
    method: str | None = None
    arch: str | None = None
    dataset: str | None = None
    #: the training attacks' keys (``id@version``)
    train_attacks: list[str] = field(default_factory=list)
    #: as the checkpoint recorded it (results written before midbench recorded it lack the key)
    adversarial_training_baseline: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    _OMITTED_WHEN_NONE = ("adversarial_training_baseline",)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvaluatedModel:
        return cls._parse(raw)


@dataclass(frozen=True)
class EvaluatedData(_Section):
    """The ``data`` section: the examples attacked and the ε per norm."""

    dataset: str
    n_examples: int
    split: str = "test"
    indices_sha256: str | None = None
    eps: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EvaluatedData:
        return cls._parse(raw)


@dataclass(frozen=True)
class ProtocolRecord(_Section):
    """The ``protocol`` section: ``whitebox``, or ``transfer`` with the source model the attacks were crafted on
    (``path``, ``sha256``, ``name``)."""

    name: str
    source: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ProtocolRecord:
        return cls._parse(raw)

    @property
    def source_name(self) -> str | None:
        return (self.source or {}).get("name")

    @property
    def label(self) -> str:
        """``transfer (standard)`` for a named source, else the protocol's name (as the leaderboard heads it)."""
        return f"{self.name} ({self.source_name})" if self.source_name else self.name


@dataclass(frozen=True)
class ResultDocument:
    """One evaluation run's result (``results/runs/<dataset>/<run_id>.json``, beside its ``.npz`` matrix)."""

    run_id: str
    created: str
    checkpoint: EvaluatedModel
    data: EvaluatedData
    protocol: ProtocolRecord
    attacks: tuple[AttackRow, ...]
    summary: dict[str, float | None]
    versions: dict[str, str | None] = field(default_factory=dict)
    device: str | None = None
    seed: int | None = None
    clean_accuracy: float | None = None
    clean_ci95: list[float] | None = None
    #: sanity flags, ``{"code", "message"}``
    flags: tuple[dict[str, str], ...] = ()
    #: what the sanity checks measured (absent when none ran)
    sanity: dict[str, Any] | None = None
    #: the unknown-attack profile (absent without one)
    profile: dict[str, Any] | None = None
    #: the per-example matrix file, beside the JSON
    per_example: str | None = None
    #: the command line that ran the evaluation (``midbench eval ...``, or the ``bench``/``demo`` that ran it);
    #: absent for evaluations run from Python and in files of earlier versions
    command: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: Any) -> ResultDocument | None:
        """The document of a parsed JSON value, or ``None`` when it is not a complete ``midbench.result/1``."""
        if not isinstance(raw, dict) or raw.get("schema") != SCHEMA:
            return None
        required = {"run_id": str, "created": str, "checkpoint": dict, "data": dict, "protocol": dict,
                    "attacks": list, "summary": dict}
        if any(not isinstance(raw.get(key), kind) for key, kind in required.items()):
            return None
        if not {"dataset", "n_examples"} <= set(raw["data"]) or "name" not in raw["protocol"]:
            return None
        if not all(isinstance(row, dict) and "id" in row and "split" in row for row in raw["attacks"]):
            return None
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        sections = {"checkpoint": EvaluatedModel.from_dict(raw["checkpoint"]),
                    "data": EvaluatedData.from_dict(raw["data"]),
                    "protocol": ProtocolRecord.from_dict(raw["protocol"]),
                    "attacks": tuple(AttackRow.from_dict(row) for row in raw["attacks"]),
                    "flags": tuple(raw.get("flags") or ())}
        plain = {key: value for key, value in raw.items() if key in names and key not in sections}
        return cls(**plain, **sections, extra={key: value for key, value in raw.items()
                                               if key not in names and key != "schema"})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, in the order of ``results/README.md``; ``sanity`` and ``profile`` only when present."""
        document: dict[str, Any] = {
            "schema": SCHEMA, "run_id": self.run_id, "created": self.created, "versions": self.versions,
            "device": self.device, "checkpoint": self.checkpoint.to_dict(), "data": self.data.to_dict(),
            "protocol": self.protocol.to_dict(), "seed": self.seed, "clean_accuracy": self.clean_accuracy,
            "clean_ci95": self.clean_ci95, "attacks": [row.to_dict() for row in self.attacks],
            "summary": self.summary, "flags": [dict(flag) for flag in self.flags],
        }
        if self.sanity is not None:
            document["sanity"] = self.sanity
        if self.profile is not None:
            document["profile"] = self.profile
        if self.command is not None:
            document["command"] = self.command
        return {**document, "per_example": self.per_example, **self.extra}

    @property
    def flag_codes(self) -> list[str]:
        return [str(flag.get("code")) for flag in self.flags]


def read_result(path: str | Path) -> ResultDocument | None:
    """The result document at ``path``, or ``None`` when the file is not a complete midbench result."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return ResultDocument.from_dict(raw)


def load_result_file(path: str | Path) -> ResultDocument:
    """The result document at ``path`` for commands that name one; :class:`ArtifactError` (exit 3) if it is
    missing or not a complete ``midbench.result/1`` document."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"result file {path} not found; pass a results/runs/<dataset>/<run_id>.json file "
                            "written by `midbench eval`")
    result = read_result(path)
    if result is None:
        raise ArtifactError(f"{path} is not a complete midbench result (schema midbench.result/1); rerun "
                            "`midbench eval`")
    return result
