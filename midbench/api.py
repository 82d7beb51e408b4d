"""midbench from Python: load a model, evaluate it, train a method, read results back (docs/api.md).

The functions here are the library's public surface, re-exported from :mod:`midbench` (``midbench.evaluate``…)
and importing torch only when called. They run the very code the command line runs — :func:`evaluate` builds the
``EvalConfig`` that ``midbench eval`` builds and hands it to the same runner, :func:`train` the ``TrainConfig``
of ``midbench train`` — so a number computed here equals the command line's on the same settings (a test checks
it), and with ``results_dir`` the same result files are written.

What is new here is what a command line cannot take: a model already in memory (any ``nn.Module`` taking images in
[0, 1] and returning logits) and examples passed as tensors.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the annotations only: importing midbench must not import torch or pandas
    import numpy as np
    import pandas as pd

    from midbench.artifacts.loading import LoadedModel
    from midbench.evaluation.documents import ResultDocument

__all__ = ["EvaluationResult", "evaluate", "leaderboard", "load_model", "load_result", "train"]

#: the views of :meth:`EvaluationResult.to_pandas`
VIEWS = ("attacks", "profile", "examples")


@dataclass(frozen=True)
class EvaluationResult:
    """One evaluation: the result document (what ``midbench eval`` writes as JSON) and its per-example matrices.

    Attributes:
        document: the result (clean accuracy, one row per attack, the summary, the profile, flags); the schema is
            ``results/README.md``'s.
        clean_correct: per example, whether the model classifies it correctly without attack (N, bool).
        robust: per example and attack, whether it is still classified correctly after the attack (N × attacks,
            in the order of ``document.attacks``).
        curves: per threat model of the profile, whether each example survives every strength up to each one
            (N × strengths, nested).
        path: the result file, when the evaluation was saved (``results_dir``); else None.
        notes: what the run said on the way (a resumed state, fewer examples than asked).
    """

    document: ResultDocument
    clean_correct: np.ndarray
    robust: np.ndarray
    curves: dict[str, np.ndarray] = field(default_factory=dict)
    path: Path | None = None
    notes: tuple[str, ...] = ()

    @property
    def clean_accuracy(self) -> float:
        return float(self.document.clean_accuracy or 0.0)

    @property
    def summary(self) -> dict[str, float | None]:
        """Known/unknown mean and worst case, AutoAttack (proportions; ``results/README.md``)."""
        return dict(self.document.summary)

    @property
    def flags(self) -> list[str]:
        """The sanity flags' codes (docs/flags.md); empty when the checks found nothing."""
        return [flag["code"] for flag in self.document.flags]

    def to_pandas(self, view: str = "attacks") -> pd.DataFrame:
        """The result as a table.

        ``attacks``: one row per attack (id, split, norm, ε, robust accuracy and its 95% Wilson interval,
        seconds, passes). ``profile``: one row per threat model and strength (accuracy, interval, budgets).
        ``examples``: one row per example (``clean``, then one boolean column per attack and per profile rung,
        ``<threat model>@<strength>``): what a paired test between two models reads.

        Raises:
            UsageError: an unknown view.
        """
        import pandas as pd

        from midbench.errors import UsageError

        if view == "attacks":
            return pd.DataFrame([{"attack": row.id, "split": row.split, "norm": row.norm, "eps": row.eps,
                                  "robust_accuracy": row.robust_accuracy,
                                  "ci_low": (row.ci95 or [None, None])[0], "ci_high": (row.ci95 or [None, None])[1],
                                  "seconds": row.seconds, "forward_passes": row.forward_passes,
                                  "backward_passes": row.backward_passes} for row in self.document.attacks],
                                columns=["attack", "split", "norm", "eps", "robust_accuracy", "ci_low", "ci_high",
                                         "seconds", "forward_passes", "backward_passes"])
        if view == "profile":
            rows = [{"threat_model": model["id"], "seen": bool(model["seen"]), "strength": strength,
                     "budget": budget, "accuracy": accuracy, "ci_low": bounds[0], "ci_high": bounds[1]}
                    for model in (self.document.profile or {}).get("threat_models", [])
                    for strength, budget, accuracy, bounds in zip(model["strengths"], model["budgets"],
                                                                  model["accuracy"], model["ci95"], strict=True)]
            return pd.DataFrame(rows, columns=["threat_model", "seen", "strength", "budget", "accuracy", "ci_low",
                                               "ci_high"])
        if view == "examples":
            columns: dict[str, Any] = {"clean": self.clean_correct}
            for index, row in enumerate(self.document.attacks):
                columns[row.id] = self.robust[:, index]
            profile = {model["id"]: model["strengths"] for model in (self.document.profile or {}).get(
                "threat_models", [])}
            for model, matrix in self.curves.items():
                for index, strength in enumerate(profile.get(model, [])):
                    columns[f"{model}@{strength:g}"] = matrix[:, index]
            return pd.DataFrame(columns)
        raise UsageError(f"unknown view {view!r}; use one of {', '.join(VIEWS)}")


def load_model(model: Any = None, *, checkpoint: str | Path | None = None, dataset: str | None = None,  # noqa: ANN401
               arch: str | None = None, weights: str | Path | None = None, zoo_threat_model: str = "Linf",
               model_dir: str | Path | None = None, download: bool = False, device: str = "auto",
               name: str | None = None, seed: int = 0, normalize: str | None = None,
               output: int | str | None = None) -> LoadedModel:
    """A model as midbench evaluates it, with the provenance a result records.

    ``model`` is an ``nn.Module`` already built (``dataset`` required: it fixes the input shape and classes),
    ``"module:factory"`` (your factory; ``weights`` optional) or ``"robustbench:NAME"`` (a zoo entry, its weights
    under ``model_dir``); or give ``checkpoint``: a midbench ``.safetensors`` file, or a plain state dict with
    ``arch`` and ``dataset``. Inputs are images in [0, 1]; a model that expects normalised inputs gets
    ``normalize`` (``"dataset"`` for the dataset's mean and std, or the means then the stds, comma-separated), and
    one that returns a tuple, list or dict gets ``output`` (the index or key of its logits), as ``midbench eval``'s
    ``--normalize`` and ``--output`` (docs/api.md, "Adapters").

    Raises:
        UsageError: options that do not go together (exit code 2 on the command line).
        ArtifactError: a file that is missing, unsafe or does not fit; a model whose output is not N × classes
            logits (exit code 3).
    """
    from torch import nn

    from midbench.artifacts.loading import LoadedModel, adapt
    from midbench.artifacts.loading import load_model as load
    from midbench.artifacts.usermodel import in_memory_model
    from midbench.errors import UsageError
    from midbench.runtime.device import resolve_device

    where = resolve_device(device)
    if isinstance(model, nn.Module):
        if checkpoint is not None:
            raise UsageError("give either a model or a checkpoint, not both")
        if dataset is None:
            raise UsageError("an nn.Module needs dataset= (it fixes the input shape, the classes and ε)")
        user = in_memory_model(model, dataset, name, where, check=output is None)
        return adapt(LoadedModel(user.model, user.metadata, user.sha256, None), normalize,
                     None if output is None else str(output), dataset, where, f"the nn.Module {user.metadata.name}",
                     flag="output=")
    if model is not None and not isinstance(model, str):
        raise UsageError(f"model must be an nn.Module or a 'module:factory' / 'robustbench:NAME' string, got "
                         f"{type(model).__name__}")
    loaded = load(None if checkpoint is None else str(checkpoint), arch=arch, dataset=dataset, model_spec=model,
                  weights=None if weights is None else str(weights), device=where, seed=seed,
                  zoo_threat_model=zoo_threat_model, model_dir=None if model_dir is None else str(model_dir),
                  download=download, normalize=normalize, output=None if output is None else str(output))
    loaded.model.to(where)
    return loaded


def evaluate(model: Any, data: Any = None, *, dataset: str | None = None,  # noqa: ANN401
             attacks: list[str] | tuple[str, ...] = (), suite: str | None = None, known_attacks: bool = False,
             unknown_attacks: bool = False, threat_models: list[str] | tuple[str, ...] = (),
             profile_suites: list[str] | tuple[str, ...] = (), autoattack: bool = False,
             eps: list[str] | tuple[str, ...] = (), target: str | None = None, protocol: str = "whitebox",
             source: Any = None, n_examples: int | None = None, batch_size: int = 256,  # noqa: ANN401
             seed: int = 0, device: str = "auto", results_dir: str | Path | None = None, name: str | None = None,
             data_dir: str | Path | None = None, download: bool = False,
             registry_dirs: list[str | Path] | tuple[str | Path, ...] = (), normalize: str | None = None,
             output: int | str | None = None,
             progress: Callable[[str, int, int], None] | None = None) -> EvaluationResult:
    """Evaluate a model against attacks, the unknown-attack profile and AutoAttack, as ``midbench eval`` does.

    Args:
        model: what :func:`load_model` takes as ``model`` (an ``nn.Module``, ``"module:factory"``,
            ``"robustbench:NAME"``), a checkpoint path, or a model :func:`load_model` returned.
        data: ``(images, labels)`` tensors (uint8 levels 0–255 or floats in [0, 1] from 8-bit images), or None for
            the test split of ``dataset`` (default: the one the checkpoint records).
        dataset: the dataset the model and data belong to; fixes ε per norm, the input shape and the classes.
        attacks: attack ids of the registry (``midbench attacks list``). This and the next eight arguments are the
            attack selection, as ``midbench eval``'s options of the same names (``midbench eval --help``); none
            of them runs the known attacks and the unknown-attack profile.
        suite: a suite of the registry.
        known_attacks: the attacks the model was trained with.
        unknown_attacks: the unknown-attack profile (every threat model over its ladder of strengths).
        threat_models: with the profile, only these threat models.
        profile_suites: with the profile, the suites it climbs (default ``unknown-profile``).
        autoattack: AutoAttack standard at the dataset's L∞ ε.
        eps: ε overrides (``"0.1"``, ``"L2=1.5"``).
        target: the target policy of the targeted attacks (``random``, ``least-likely``, ``fixed:K``).
        normalize: the adapter of :func:`load_model` for a model that expects normalised input.
        output: the adapter of :func:`load_model` for a model that does not return a logits tensor.
        protocol: ``whitebox``, or ``transfer`` with ``source`` (a checkpoint path, an ``nn.Module`` or a loaded
            model) on which the attacks are crafted.
        progress: called as ``progress(step, done, total)`` while attacks run (a step is an attack, or a threat
            model's rung, and ``done`` of ``total`` examples are attacked), e.g. to drive a notebook's progress bar.
        results_dir: write the result files there (``runs/<dataset>/…json`` and ``.npz``, what ``midbench
            leaderboard`` and ``midbench report`` read); None keeps nothing on disk.

    Raises:
        UsageError: a bad option or name (one line saying what to use).
        ArtifactError: a model or file that does not fit.
    """
    from midbench.artifacts.loading import LoadedModel
    from midbench.data.datasets import split_from_tensors
    from midbench.errors import UsageError
    from midbench.evaluation.eval_config import EvalConfig
    from midbench.evaluation.runner import run_evaluation
    from midbench.evaluation.selection import parse_selection

    if isinstance(model, LoadedModel):
        loaded = model
        if normalize is not None or output is not None:
            raise UsageError("normalize= and output= go with the model's load_model() call when it is loaded already")
    else:
        loaded = _load(model, dataset, device, seed, normalize, output)
    dataset = dataset or loaded.metadata.dataset
    if dataset is None:
        raise UsageError("this model records no dataset; pass dataset=")
    split = None
    if data is not None:
        if not isinstance(data, tuple | list) or len(data) != 2:
            raise UsageError("data must be (images, labels), or None for the dataset's test split")
        split = split_from_tensors(data[0], data[1], dataset)
    selection = parse_selection({"attacks": _listed(attacks), "suite": suite, "known_attacks": known_attacks,
                                 "unknown_attacks": unknown_attacks, "threat_models": _listed(threat_models),
                                 "profile_suites": _listed(profile_suites), "autoattack": autoattack,
                                 "eps": _listed(eps), "target": target})
    source_path = str(source) if isinstance(source, str | Path) else None
    source_model = None
    if source is not None and source_path is None:
        source_model = source if isinstance(source, LoadedModel) else load_model(source, dataset=dataset,
                                                                                 device=device, seed=seed)
    keep = results_dir is not None
    folder = Path(results_dir) if keep else Path(tempfile.mkdtemp(prefix="midbench-eval-"))
    try:
        config = EvalConfig(dataset=dataset, selection=selection, protocol=protocol, source=source_path,
                            n_examples=n_examples, batch_size=batch_size, results_dir=str(folder), name=name,
                            seed=seed, device=device, registry_dirs=tuple(str(d) for d in registry_dirs),
                            data_dir=None if data_dir is None else str(data_dir), download=download)
        run = run_evaluation(config, progress, model=loaded, data=split, source=source_model)
        if run.result is None or run.evaluation is None:  # a rank of a sharded run other than 0
            raise UsageError("evaluate() runs in one process; under torchrun use `midbench eval`")
        evaluation = run.evaluation  # the matrices the result file's .npz holds, in the same order
        curves = {curve.plan.threat_model.id: curve.robust for curve in evaluation.curves}
        return EvaluationResult(run.result, evaluation.clean_correct, evaluation.matrix, curves,
                                run.path if keep else None, tuple(run.notes))
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def load_result(path: str | Path) -> EvaluationResult:
    """A result file written by ``midbench eval``, ``bench`` or :func:`evaluate`, with its per-example matrices.

    Raises:
        ArtifactError: not a complete result, or its ``.npz`` is missing or does not match it.
    """
    from midbench.errors import ArtifactError
    from midbench.evaluation.documents import read_result
    from midbench.reporting.rows import load_run

    result = read_result(Path(path))
    run = load_run(path, result) if result is not None else None
    if run is None:
        raise ArtifactError(f"{path} is not a complete midbench result with its per-example .npz beside it")
    curves = {model_id: matrix for model_id, (matrix, _, _) in (run.curves or {}).items()}
    return EvaluationResult(run.result, run.clean, run.robust, curves, Path(path))


def leaderboard(results_dir: str | Path = "results", *, dataset: str | None = None, ci: bool = False,
                columns: list[str] | tuple[str, ...] = ()) -> dict[tuple[str, str], pd.DataFrame]:
    """The ranked tables of every result under ``results_dir``, keyed by (dataset, protocol): what
    ``midbench leaderboard`` prints, as numbers (percentages; ``ci`` adds each interval's ``_lo``/``_hi`` columns;
    ``columns`` adds one robust-accuracy column per attack id). Columns: ``results/README.md``.

    Raises:
        UsageError: a bad ``columns`` entry.
    """
    from midbench.reporting.leaderboard import tables

    return tables(results_dir, dataset, list(columns), ci)


def train(method: str, *, dataset: str = "mnist5k", out: str | Path | None = None, resume: bool = False,
          progress: bool = False, **options: Any) -> Path:  # noqa: ANN401
    """Train ``method`` on ``dataset`` as ``midbench train`` does, and return the final model file.

    ``options`` are ``midbench train``'s options by their config names (``arch``, ``epochs``, ``batch_size``,
    ``lr``, ``attack_steps``, ``eps``, ``seed``, ``device``…; ``midbench train --help``), and a method's own
    options (e.g. ``beta`` for TRADES) under ``options={...}``. ``out`` defaults to
    ``runs/<method>-<arch>-<dataset>``; ``resume`` continues an interrupted run there.

    Raises:
        UsageError: an unknown method or option, or a value out of range.
    """
    from midbench.config import TrainConfig, merge_config
    from midbench.training import train as run

    config = merge_config(TrainConfig(), {}, {"method": method, "dataset": dataset, **options}).validate()
    folder = Path(out) if out is not None else config.default_out()
    return Path(run(config, folder, resume=resume, progress=progress).checkpoint)


def _listed(value: str | list[str] | tuple[str, ...]) -> list[str]:
    """A list option given as one string (``"a,b"``, split later as the command line's) or as a sequence."""
    return [value] if isinstance(value, str) else [str(item) for item in value]


def _load(model: Any, dataset: str | None, device: str, seed: int, normalize: str | None,  # noqa: ANN401
          output: int | str | None) -> LoadedModel:
    """:func:`load_model` of what :func:`evaluate` was given: a path is a checkpoint, a string with ``:`` a factory
    or zoo entry, a module a module."""
    if isinstance(model, Path) or (isinstance(model, str) and ":" not in model):
        return load_model(checkpoint=model, dataset=dataset, device=device, seed=seed, normalize=normalize,
                          output=output)
    return load_model(model, dataset=dataset, device=device, seed=seed, normalize=normalize, output=output)
