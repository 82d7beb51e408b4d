"""What midbench records about a model: the metadata of a checkpoint, and the provenance a loaded model carries
into a result file — one typed record with one reader (:meth:`ModelMetadata.from_dict`) and one writer
(:meth:`ModelMetadata.to_dict`).

Writers: the training loop, the MID release importer, the plain-state-dict and ``--model`` loaders. Readers: the
loader (architecture, shapes, normalisation), evaluation (dataset, training attacks, the transfer source) and MID
(the stages' datasets and architectures). The JSON form is the one documented in ``results/README.md``; keys
no field names (added by a newer midbench, or by a writer for people, such as an import's ``composition``) are
kept in ``extra`` and written back unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from midbench.errors import ArtifactError

#: the fields a model cannot be rebuilt without
REQUIRED = ("arch", "num_classes", "input_shape")


@dataclass(frozen=True)
class ModelMetadata:
    """A model's provenance.

    The architecture, class count, input shape and normalisation rebuild the network; ``method`` and
    ``train_attacks`` (fully resolved attack specifications) decide which attacks count as known;
    ``source_checkpoint`` names the model a transfer evaluation crafts its attacks on (MID's pool source).
    """

    arch: str
    num_classes: int
    input_shape: tuple[int, ...]
    dataset: str | None = None
    name: str | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    #: the training method's id ("unknown" for a plain state dict or a user's --model)
    method: str = "unknown"
    method_citation: str | None = None
    #: the method's hyper-parameters (its ``describe()``)
    method_params: dict[str, Any] = field(default_factory=dict)
    #: whether the method is an adversarial-training baseline (None: not recorded)
    adversarial_training_baseline: bool | None = None
    #: the resolved training attacks (``ResolvedAttack.to_dict()``)
    train_attacks: tuple[dict[str, Any], ...] = ()
    #: MID's companion checkpoints, relative to this checkpoint's folder when they lie beside it
    source_checkpoint: str | None = None
    teacher_checkpoint: str | None = None
    # --- a training run's record
    config: dict[str, Any] | None = None
    seed: int | None = None
    epoch: int | None = None
    epochs: int | None = None
    n_train: int | None = None
    metrics: dict[str, Any] | None = None
    #: the log key that chose ``best.safetensors``, and an early stop's record
    best_by: str | None = None
    stopped_early: dict[str, Any] | None = None
    #: a run trained by several processes (torchrun): ``processes`` and ``batch_norm`` ("synchronised" with
    #: SyncBatchNorm, "per-process" where PyTorch cannot synchronise it, "none" without BatchNorm); None: one
    data_parallel: dict[str, Any] | None = None
    # --- a user's --model module:factory
    model_spec: str | None = None
    weights_sha256: str | None = None
    source_sha256: str | None = None
    #: keys no field names, written back as they were
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "checkpoint") -> ModelMetadata:
        """The record of a metadata mapping (a checkpoint's JSON).

        Raises:
            ArtifactError: a field needed to rebuild the model is missing or malformed (exit 3).
        """
        missing = [key for key in REQUIRED if key not in raw]
        if missing:
            raise ArtifactError(f"{where} lacks metadata field(s) {', '.join(missing)}; re-create it with midbench")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values = {key: value for key, value in raw.items() if key in names}
        try:
            values["num_classes"] = int(raw["num_classes"])
            values["input_shape"] = tuple(int(size) for size in raw["input_shape"])
            for key in ("mean", "std"):
                if raw.get(key) is not None:
                    values[key] = tuple(float(value) for value in raw[key])
            values["train_attacks"] = tuple(raw.get("train_attacks") or ())
            values["method_params"] = dict(raw.get("method_params") or {})
        except (TypeError, ValueError) as error:
            raise ArtifactError(f"{where} has malformed metadata ({error}); re-create it with midbench") from error
        values.setdefault("method", "unknown")
        return cls(**values, extra={key: value for key, value in raw.items() if key not in names})

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: every field that is set (``None`` left out), then ``extra``."""
        written: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name == "extra" or value is None:
                continue
            written[item.name] = list(value) if isinstance(value, tuple) else value
        return {**written, **self.extra}
