"""``midbench calibrate``: train the fixed references of a dataset and architecture family, calibrate the ladders
of the unknown-attack profile on them, and write the reference table that scores are normalised by
(docs/scoring.md).

One command, resumable at every stage (a rerun of the same command continues where it stopped):

1. **Train** one reference per ranked threat model: a model adversarially trained against that threat model at its
   full budget (by default PGD-AT with a training attack of the threat model: Madry et al. 2018's objective, the
   inner maximisation done by whatever attack the registry entry names, so rotation/translation, flow, elastic and
   JPEG work like L∞). Runs resume from their last finished epoch.
2. **Calibrate** each threat model's ladder on the reference's held-out validation slice (never on the test
   images): climb a candidate grid of strengths (nested, so the grid costs little more than its top rung), and for
   every target τ take the smallest grid strength at which the reference keeps at most τ × its clean accuracy.
   This is UAR's idea (Kang et al. 2019: sizes chosen so that ATA accuracies match across attacks) with targets
   shared by every threat model. A target the grid cannot reach ends the ladder at the top of the grid.
3. **Measure** every reference on the first ``n_examples`` test images at its calibrated ladder (an ordinary
   ``midbench eval --unknown-attacks --threat-models T`` whose result files stay in the folder as provenance), and
   write ``reference.json`` (the ATA curves), ``ladders.toml`` (a registry file of ``[[ladder]]`` tables),
   ``calibration.json`` (the grid curves and the choice) and ``reference.md`` (the table for people).

A reference's grid curve (``grids/<threat model>.json``, until ``calibration.json`` gathers them) and its result
file are written to the set's folder as soon as they are made, with the training settings that made them: a
half-finished set committed on one machine continues on another, where a finished reference needs neither
training nor its checkpoint.

The three stages of one reference form a chain that no other reference waits for: with ``workers`` > 1, that
many chains run side by side, each in its own process with ``threads`` CPU threads (one by default), taken in the
file's order as workers come free (so list the costliest references first: a long chain started last would finish
alone). The references are independent, and with pinned threads a reference's numbers are the same bits whichever
process computes them. The set's files list the threat models in the file's order.

The file format (``calibrate.toml``)::

    [calibrate]
    name = "mnist5k-lenet"
    dataset = "mnist5k"
    arch_family = "lenet"            # archs = ["lenet"] by default: [train] arch
    grid = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
    targets = [0.98, 0.95, 0.9, 0.8] # fractions of the reference's held-out clean accuracy
    n_examples = 1000
    seed = 0
    workers = 2                      # references trained and measured side by side (one CPU thread each)

    [train]                          # shared by every reference (any `midbench train` key)
    method = "pgd-at"
    epochs = 20

    [references.linf]                # one table per threat model: its own training keys
    train_attack = "pgd-linf"
    attack_steps = 10
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midbench._toml import read_tables
from midbench.attacks.specs import LADDER_FILE
from midbench.config import TrainConfig, merge_config
from midbench.errors import UsageError
from midbench.evaluation.references import REFERENCE_FILE, SCHEMA, ReferenceSet, load_reference_set
from midbench.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from midbench.runtime.processes import run_side_by_side

CALIBRATION_FILE = "calibration.json"
#: the folder of the references' grid curves, one file each, kept in the set's folder as soon as each is climbed
#: (resumable on another machine once committed) until ``calibration.json`` gathers them
GRIDS_DIR = "grids"
TABLE_FILE = "reference.md"
SECTION_KEYS = {"name", "dataset", "datasets", "arch_family", "archs", "grid", "targets", "n_examples", "seed",
                "device", "threads", "workers", "suite", "batch_size"}
#: the profile suite the ladders and references are measured with (attacks_registry/suites.toml)
DEFAULT_SUITE = "unknown-profile"


@dataclass(frozen=True)
class Calibration:
    """A parsed ``calibrate.toml``."""

    path: Path
    name: str
    dataset: str
    datasets: tuple[str, ...]
    arch_family: str
    archs: tuple[str, ...]
    grid: tuple[float, ...]
    targets: tuple[float, ...]
    n_examples: int
    seed: int
    device: str
    threads: int | None
    workers: int
    suite: str
    batch_size: int
    #: threat model → the training config of its reference
    references: dict[str, TrainConfig] = field(default_factory=dict)


def _require(value: Any, kind: type, key: str, path: Path, what: str) -> Any:
    """``value`` when it is a ``kind`` (a boolean is never taken for a number or a name)."""
    if isinstance(value, bool) or not isinstance(value, kind):
        raise UsageError(f"{path}: [calibrate] {key} must be {what}, got {value!r}")
    return value


def load_calibration(path: str | Path, device: str | None = None) -> Calibration:
    """Read and check a calibration file; every reference's training task is built once so that a bad method,
    attack or option is refused before anything is trained.

    Raises:
        UsageError: a missing file, bad TOML, unknown keys, values of the wrong type, a grid that is not strictly
            increasing in (0, 1], targets that are not decreasing in (0, 1), a threat model that is not in the
            registry or not climbed by the suite, a training attack of another threat model.
    """
    from midbench.attacks.plans import threat_model_of
    from midbench.attacks.specs import load_registry
    from midbench.attacks.threat_models import check_strengths
    from midbench.data.datasets import get_dataset
    from midbench.defenses.base import build_task

    path = Path(path)
    document = read_tables(path, "calibration", ("calibrate", "train", "references"))
    section = document.get("calibrate")
    if not isinstance(section, dict):
        raise UsageError(f"{path}: a [calibrate] table is required (name, dataset, grid, targets, ...)")
    extra = set(section) - SECTION_KEYS
    if extra:
        raise UsageError(f"{path}: [calibrate] unknown key(s) {sorted(extra)}; allowed: "
                         f"{', '.join(sorted(SECTION_KEYS))}")
    shared = document.get("train", {})
    references = document.get("references", {})
    if not isinstance(shared, dict) or not isinstance(references, dict) or not references:
        raise UsageError(f"{path}: [train] must be a table and [references.T] needs at least one threat model T")
    dataset = str(_require(section.get("dataset"), str, "dataset", path, "a dataset id"))
    spec = get_dataset(dataset)
    name = str(_require(section.get("name", f"{dataset}-{shared.get('arch', 'lenet')}"), str, "name", path, "a name"))
    grid = check_strengths(section.get("grid"), f"{path}: [calibrate]", "grid")
    targets = section.get("targets")
    if (not isinstance(targets, list) or not targets
            or not all(isinstance(t, int | float) and not isinstance(t, bool) and 0 < t < 1 for t in targets)
            or any(b >= a for a, b in zip(targets, targets[1:], strict=False))):
        raise UsageError(f"{path}: [calibrate] targets must be a strictly decreasing list of fractions in (0, 1), "
                         f"e.g. [0.9, 0.7, 0.5, 0.3], got {targets!r}")
    integers = {key: _require(section.get(key, default), int, key, path, "an integer")
                for key, default in (("n_examples", 1000), ("seed", 0), ("workers", 1), ("batch_size", 256))}
    threads = section.get("threads")
    if threads is not None:
        _require(threads, int, "threads", path, "an integer")
    if integers["n_examples"] < 1 or integers["workers"] < 1 or integers["batch_size"] < 1:
        raise UsageError(f"{path}: [calibrate] n_examples, workers and batch_size must be at least 1")
    registry = load_registry()
    suite = str(section.get("suite", DEFAULT_SUITE))
    climbed = {entry.threat_model for entry in registry.suite(suite)}
    configs: dict[str, TrainConfig] = {}
    for model, values in references.items():
        if model not in registry.threat_models or model not in climbed:
            raise UsageError(f"{path}: [references.{model}]: not a threat model climbed by suite {suite!r} "
                             f"(choose among {', '.join(sorted(climbed))})")
        if not isinstance(values, dict):
            raise UsageError(f"{path}: [references.{model}] must be a table of training keys")
        merged = {"dataset": dataset, "seed": integers["seed"], "method": "pgd-at", **shared, **values}
        try:
            config = merge_config(TrainConfig(), merged, {"device": device or section.get("device")}).validate()
            task = build_task(config, spec)
        except UsageError as error:
            raise UsageError(f"{path}: [references.{model}]: {error}") from error
        trained = {threat_model_of(attack, registry) for attack in task.train_attacks}
        if model not in trained:
            raise UsageError(f"{path}: [references.{model}]: its training attacks belong to "
                             f"{', '.join(sorted(str(t) for t in trained)) or 'no threat model'}, not {model}; "
                             f"choose a train_attack of threat model {model}")
        configs[model] = config
    archs = section.get("archs", [configs[next(iter(configs))].arch])
    if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
        raise UsageError(f"{path}: [calibrate] archs must be a list of architecture ids")
    datasets = section.get("datasets", [dataset])
    if not isinstance(datasets, list) or dataset not in datasets or not all(isinstance(d, str) for d in datasets):
        raise UsageError(f"{path}: [calibrate] datasets must be a list of dataset ids that includes {dataset}")
    return Calibration(path, name, dataset, tuple(datasets), str(section.get("arch_family", archs[0])),
                       tuple(archs), grid, tuple(float(t) for t in targets), integers["n_examples"],
                       integers["seed"], str(device or section.get("device", "auto")), threads, integers["workers"],
                       suite, integers["batch_size"], configs)


def choose_ladder(grid: tuple[float, ...], accuracies: list[float], clean: float, targets: tuple[float, ...]
                  ) -> tuple[float, ...]:
    """The calibrated ladder: for each target τ (decreasing), the smallest grid strength whose accuracy is at most
    τ × ``clean``; a target the grid does not reach ends the ladder at the top of the grid.

    ``accuracies`` is the reference's nested (so non-increasing) curve over ``grid``."""
    rungs: list[float] = []
    for target in targets:
        reached = next((s for s, a in zip(grid, accuracies, strict=True) if a <= target * clean), None)
        rung = grid[-1] if reached is None else reached
        if not rungs or rung > rungs[-1]:
            rungs.append(rung)
        if reached is None:
            break
    return tuple(rungs)


@dataclass
class CalibrationOutcome:
    """What :func:`run_calibration` wrote, and how long each stage took."""

    out_dir: Path
    files: list[Path]
    seconds: dict[str, float]


ProgressFn = Callable[[str], None]


def run_calibration(calibration: Calibration, out_dir: str | Path, work_dir: str | Path,
                    progress: ProgressFn | None = None, show_bars: bool = False, command: str = ""
                    ) -> CalibrationOutcome:
    """Train, calibrate and measure every reference (module docstring), then write the set's files. Each reference
    is one chain of the three stages; ``calibration.workers`` chains run at once, taken in the file's order. Every
    stage skips what an earlier run of the same command finished.

    Args:
        out_dir: the reference set's folder (committed: tables, ladders, result files).
        work_dir: where the references' training runs go (checkpoints; not committed).
        command: the command line recorded as ``made_by``.

    Returns: the files written and, in ``seconds``, the wall time and each stage's compute summed over references.
    """
    say = progress or (lambda _message: None)
    out = ensure_writable_dir(out_dir)
    work = ensure_writable_dir(work_dir)
    made_by = command or f"midbench calibrate --config {calibration.path.as_posix()}"
    cached = {}
    if (out / CALIBRATION_FILE).is_file():
        cached = json.loads((out / CALIBRATION_FILE).read_text(encoding="utf-8")).get("threat_models", {})
    clock = time.perf_counter()
    # side by side: one thread each unless set, and no progress bars (they would interleave)
    parallel = calibration.workers > 1 and len(calibration.references) > 1
    threads = (calibration.threads or 1) if parallel else calibration.threads
    chains = {model: (calibration, model, str(work), str(out), cached.get(model, {}), made_by, threads,
                      show_bars and not parallel, progress is not None)
              for model in calibration.references}
    done = run_side_by_side(calibration.workers, _reference_chain, chains)
    # the set's files list the threat models in the file's order, whichever chain finished first
    order = list(calibration.references)
    ladders = {model: tuple(done[model]["ladder"]) for model in order}
    atomic_write_json(out / CALIBRATION_FILE, {
        "schema": "midbench.calibration/1", "name": calibration.name, "made_by": made_by,
        "grid": list(calibration.grid), "targets": list(calibration.targets),
        "split": "validation slice of the training split (the training loop's held-out examples)",
        "threat_models": {model: {**done[model]["grid"], "ladder": list(ladders[model])} for model in order}})
    atomic_write_text(out / LADDER_FILE, ladder_toml(calibration, ladders, made_by))
    # calibration.json now holds every grid curve: the per-reference files were only there to resume from
    shutil.rmtree(out / GRIDS_DIR, ignore_errors=True)
    document = reference_document(calibration, ladders, {model: Path(done[model]["result"]) for model in order},
                                  out, made_by,
                                  {model: done[model]["grid"].get("train_seconds_per_epoch") for model in order})
    for model, entry in document["threat_models"].items():
        if entry["models"][0]["flags"]:
            say(f"warning: the {model} reference is flagged ({', '.join(entry['models'][0]['flags'])}); a flagged "
                "model should not serve as a reference (docs/flags.md): change its recipe and rerun")
    atomic_write_json(out / REFERENCE_FILE, document)
    atomic_write_text(out / TABLE_FILE, reference_table(load_reference_set(out)))
    seconds = {"wall": time.perf_counter() - clock}
    for stage in ("train", "calibrate", "measure"):
        seconds[f"{stage} (compute)"] = sum(done[model]["seconds"][stage] for model in order)
    return CalibrationOutcome(out, [out / CALIBRATION_FILE, out / LADDER_FILE, out / REFERENCE_FILE, out / TABLE_FILE],
                              seconds)


def _reference_chain(calibration: Calibration, model: str, work_dir: str, out_dir: str, cached: dict[str, Any],
                     made_by: str, threads: int | None, show_bars: bool, verbose: bool) -> dict[str, Any]:
    """One reference from start to finish: train it, climb its grid, choose its ladder, measure it at that ladder
    on the test images. Each stage reuses what an earlier run finished. Also the job of a worker process.

    Returns: its grid curve (``calibration.json``'s entry), ladder, result file and each stage's seconds."""
    import torch

    from midbench.artifacts.loading import load_classifier
    from midbench.attacks.specs import load_registry
    from midbench.paths import MODEL_FILE

    def say(message: str) -> None:
        if verbose:  # printed by the worker itself: a line each, prefixed by the threat model
            print(f"[calibrate] {model}: {message}", flush=True)

    if threads is not None:
        torch.set_num_threads(threads)
    work, out = Path(work_dir), Path(out_dir)
    folder = work / model
    config = calibration.references[model]
    registry = load_registry()
    attacks = _attack_keys(_grid_plan(calibration, model, registry))
    trained_by = _training_settings(config)
    kept_path = out / GRIDS_DIR / f"{model}.json"
    kept = [(entry, source) for entry, source in (
        (cached, CALIBRATION_FILE),
        (json.loads(kept_path.read_text(encoding="utf-8")) if kept_path.is_file() else {},
         kept_path.relative_to(out).as_posix()))
        if entry.get("grid") == list(calibration.grid) and entry.get("attacks") == attacks]
    seconds = {"train": 0.0, "calibrate": 0.0, "measure": 0.0}

    def ladder_registry(ladder: tuple[float, ...]) -> tuple[str, Any]:
        # the measurement reads this reference's ladder as a registry file of its own (the set's ladders.toml
        # is written once every chain has finished)
        ladder_dir = ensure_writable_dir(folder / "ladder")
        atomic_write_text(ladder_dir / LADDER_FILE, ladder_toml(calibration, {model: ladder}, made_by))
        return str(ladder_dir), load_registry([ladder_dir])

    if not _finished(folder, config.epochs):
        # a chain finished on another machine (its grid curve and result committed, its checkpoint not) is done:
        # the checkpoint is only needed to climb or measure again
        for entry, source in kept:
            ladder = choose_ladder(calibration.grid, entry["accuracy"], entry["clean_accuracy"], calibration.targets)
            result = (_measured(calibration, model, entry["checkpoint_sha256"], ladder, ladder_registry(ladder)[1],
                                out) if entry.get("train") == trained_by else None)
            if result is not None:
                say(f"finished earlier ({source}, {result.name}); its checkpoint is not needed")
                return {"grid": {key: value for key, value in entry.items() if key != "ladder"},
                        "ladder": list(ladder), "result": str(result), "seconds": seconds}
        say(f"training: {config.method}, {config.train_attack}, {config.epochs} epochs")
        clock = time.perf_counter()
        _train_one(config, str(folder), show_bars)
        seconds["train"] = time.perf_counter() - clock
    else:
        say(f"trained earlier ({folder})")

    clock = time.perf_counter()
    checkpoint = folder / MODEL_FILE
    sha = load_classifier(str(checkpoint)).sha256
    for entry, source in kept:
        if entry.get("checkpoint_sha256") == sha:
            say(f"grid curve climbed earlier ({source})")
            grid = {key: value for key, value in entry.items() if key != "ladder"}
            # sets calibrated before training provenance was kept: the checkpoint is this command's
            grid.setdefault("train", trained_by)
            grid.setdefault("train_seconds_per_epoch", _seconds_per_epoch(folder))
            break
    else:
        say(f"climbing {len(calibration.grid)} strengths on the validation slice")
        grid = {**_grid_curve(calibration, model, str(checkpoint)), "train": trained_by,
                "train_seconds_per_epoch": _seconds_per_epoch(folder)}
        # kept in the set's folder, not beside the checkpoint: committed, it lets another machine finish the set
        atomic_write_json(ensure_writable_dir(kept_path.parent) / kept_path.name, grid)
    ladder = choose_ladder(calibration.grid, grid["accuracy"], grid["clean_accuracy"], calibration.targets)
    seconds["calibrate"] = time.perf_counter() - clock

    clock = time.perf_counter()
    ladder_dir, registry = ladder_registry(ladder)
    result = _measured(calibration, model, sha, ladder, registry, out)
    if result is not None:
        say(f"measured earlier ({result.name})")
    else:
        say(f"measuring its ladder on the first {calibration.n_examples} test examples")
        result = _measure_one(calibration, model, str(checkpoint), str(out), ladder_dir)
    seconds["measure"] = time.perf_counter() - clock
    say("done")
    return {"grid": grid, "ladder": list(ladder), "result": str(result), "seconds": seconds}


def _training_settings(config: TrainConfig) -> dict[str, Any]:
    """What must match for a reference trained elsewhere to count as this config's: ``--resume``'s fingerprint
    and the epochs (which it leaves free), as JSON, which is how ``calibration.json`` stores them."""
    return json.loads(json.dumps({**config.fingerprint(), "epochs": config.epochs}))


def _train_one(config: TrainConfig, folder: str, show_bars: bool) -> int:
    """Train (or resume) one reference; returns its epochs."""
    from midbench.paths import TRAIN_STATE_FILE
    from midbench.training import train

    return len(train(config, folder, resume=(Path(folder) / TRAIN_STATE_FILE).exists(), progress=show_bars).log)


def _finished(folder: Path, epochs: int) -> bool:
    from midbench.paths import MODEL_FILE

    log = folder / "log.jsonl"
    if not (folder / MODEL_FILE).is_file() or not log.is_file():
        return False
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    return len(records) >= epochs or any("stopped_early" in record for record in records)


def _grid_plan(calibration: Calibration, model: str, registry: Any) -> Any:
    """The profile plan of ``model``'s threat model alone, climbed over the candidate grid."""
    from midbench.attacks.plans import profile_plan
    from midbench.data.datasets import get_dataset

    (plan,) = profile_plan(registry, get_dataset(calibration.dataset).eps, {model}, calibration.suite,
                           only=(model,), ladders={model: calibration.grid})
    return plan


def _attack_keys(plan: Any) -> list[str]:
    """The ``id@version`` of a plan's attacks, as result files and ``calibration.json`` record them."""
    return [attack.key for attack in plan.rungs[0].attacks]


def _grid_curve(calibration: Calibration, model: str, checkpoint: str) -> dict[str, Any]:
    """Climb the grid on the validation slice of ``model``'s reference (and time it)."""
    from midbench.artifacts.loading import load_classifier
    from midbench.attacks.specs import load_registry
    from midbench.data.datasets import load_split
    from midbench.evaluation.engine import evaluate
    from midbench.runtime.device import resolve_device
    from midbench.training.loop import split_train_val

    config = calibration.references[model]
    loaded = load_classifier(checkpoint)
    clock = time.perf_counter()
    plan = _grid_plan(calibration, model, load_registry())
    _, validation = split_train_val(load_split(config.dataset, "train", config.data_dir, config.download),
                                    config.val_size, config.n_train)
    evaluation = evaluate(loaded.model, validation, [], device=resolve_device(calibration.device),
                          batch_size=calibration.batch_size, seed=calibration.seed, profile=[plan])
    robust = evaluation.curves[0].robust
    return {"checkpoint_sha256": loaded.sha256, "grid": list(calibration.grid),
            "attacks": _attack_keys(plan), "n_examples": int(robust.shape[0]),
            "clean_accuracy": float(evaluation.clean_correct.mean()),
            "accuracy": [float(value) for value in robust.mean(axis=0)],
            "forward_passes": evaluation.curves[0].forward_passes,
            "backward_passes": evaluation.curves[0].backward_passes,
            "seconds": round(time.perf_counter() - clock, 1)}


def ladder_toml(calibration: Calibration, ladders: dict[str, tuple[float, ...]], made_by: str) -> str:
    """``ladders.toml``: one ``[[ladder]]`` table per threat model (a registry file, threat_models.py)."""
    def numbers(values: tuple[float, ...]) -> str:
        return "[" + ", ".join(f"{value:g}" for value in values) + "]"

    lines = [f"# Calibrated ladders of the {calibration.name} reference set, written by `{made_by}`.",
             "# Each is where the threat model's reference keeps the targets' fractions of its clean accuracy on",
             "# the validation slice (docs/scoring.md). Do not edit: rerun the command.", ""]
    for model, strengths in ladders.items():
        lines += ["[[ladder]]", f'threat_model = "{model}"',
                  "datasets = [" + ", ".join(f'"{d}"' for d in calibration.datasets) + "]",
                  f"strengths = {numbers(strengths)}", f"targets = {numbers(calibration.targets)}",
                  f"made_by = {json.dumps(made_by)}", ""]
    return "\n".join(lines)


def _measured(calibration: Calibration, model: str, sha: str, ladder: tuple[float, ...], registry: Any,
              out: Path) -> Path | None:
    """An earlier result file of this reference (same checkpoint, ladder, attacks and examples), or None."""
    from midbench.attacks.plans import profile_plan
    from midbench.data.datasets import get_dataset
    from midbench.evaluation.documents import read_result

    (plan,) = profile_plan(registry, get_dataset(calibration.dataset).eps, {model}, calibration.suite,
                           dataset=calibration.dataset, only=(model,))
    attacks = _attack_keys(plan)
    existing = None
    for path in sorted((out / "runs" / calibration.dataset).glob(f"{reference_name(model)}__whitebox__*.json")):
        result = read_result(path)
        curves = (result.profile or {}).get("threat_models", []) if result is not None else []
        if (result is not None and result.checkpoint.sha256 == sha and len(curves) == 1
                and tuple(curves[0]["strengths"]) == ladder and curves[0]["attacks"] == attacks
                and result.data.n_examples == calibration.n_examples):
            existing = path
    return existing


def _measure_one(calibration: Calibration, model: str, checkpoint: str, out: str, ladder_dir: str) -> Path:
    """``midbench eval --unknown-attacks --profile-suite <suite> --threat-models <model>`` of one reference at the
    ladder of ``ladder_dir``, its result file in ``out``."""
    from midbench.evaluation.eval_config import EvalConfig
    from midbench.evaluation.runner import run_evaluation
    from midbench.evaluation.selection import AttackSelection

    config = EvalConfig(checkpoint=checkpoint, selection=AttackSelection(unknown=True,
                                                                     profile_suites=(calibration.suite,),
                                                                     threat_models=(model,)),
                        n_examples=calibration.n_examples, results_dir=out, name=reference_name(model),
                        seed=calibration.seed, device=calibration.device, registry_dirs=(ladder_dir,),
                        batch_size=calibration.batch_size, discard_other_settings=True)
    evaluated = run_evaluation(config)
    assert evaluated.path is not None  # one process always writes its result
    return evaluated.path


def reference_name(threat_model: str) -> str:
    """The name of a threat model's reference in result files and tables."""
    return f"reference-{threat_model}"


def reference_document(calibration: Calibration, ladders: dict[str, tuple[float, ...]],
                       measured: dict[str, Path], out: Path, made_by: str,
                       seconds_per_epoch: dict[str, float | None] | None = None) -> dict[str, Any]:
    """``reference.json`` from the references' result files (recomputable from them and ``calibration.json``: a
    test does), with each reference's training cost (median seconds per epoch of its training run, as
    ``calibration.json`` records it) when known."""
    from midbench.evaluation.documents import read_result

    curves: dict[str, Any] = {}
    n_examples = calibration.n_examples
    for model, path in measured.items():
        result = read_result(path)
        assert result is not None and result.profile is not None
        curve = result.profile["threat_models"][0]
        config = calibration.references[model]
        curves[model] = {
            "strengths": [float(s) for s in curve["strengths"]], "attacks": list(curve["attacks"]),
            "ata": [float(a) for a in curve["accuracy"]], "budgets": curve["budgets"],
            "clean_accuracy": result.clean_accuracy,
            "models": [{"name": result.checkpoint.name, "method": config.method,
                        "train_attack": result.checkpoint.train_attacks, "epochs": config.epochs,
                        "checkpoint_sha256": result.checkpoint.sha256, "flags": result.flag_codes,
                        "train_seconds_per_epoch": (seconds_per_epoch or {}).get(model),
                        "result": path.relative_to(out).as_posix()}]}
        if not math.isclose(tuple(curve["strengths"])[-1], ladders[model][-1]):
            raise UsageError(f"{path}: measured at another ladder than {LADDER_FILE}; rerun the command")
    return {"schema": SCHEMA, "name": calibration.name, "dataset": calibration.dataset,
            "datasets": list(calibration.datasets), "arch_family": calibration.arch_family,
            "archs": list(calibration.archs), "made_by": made_by, "n_examples": n_examples,
            "targets": list(calibration.targets), "threat_models": curves}


def _seconds_per_epoch(folder: Path | None) -> float | None:
    """The median seconds of a training run's epochs (its ``log.jsonl``, to the millisecond as there), or None.
    Milliseconds, not tenths: a tiny run's epoch can take under 50 ms, which tenths would record as no time."""
    log = folder / "log.jsonl" if folder is not None else None
    if log is None or not log.is_file():
        return None
    seconds = sorted(float(json.loads(line)["seconds"]) for line in log.read_text(encoding="utf-8").splitlines()
                     if line.strip())
    return round(seconds[len(seconds) // 2], 3) if seconds else None


def reference_table(reference: ReferenceSet) -> str:
    """``reference.md``: the reference table for people (one row per threat model)."""
    lines = [f"# Reference set {reference.name}", "",
             f"Made by `{reference.made_by}`. Datasets: {', '.join(reference.datasets)}; architectures: "
             f"{', '.join(reference.archs)} ({reference.arch_family} family). ATA = accuracy of the model "
             f"adversarially trained against the threat model, on the first {reference.n_examples} test examples, "
             "at each rung of the calibrated ladder (docs/scoring.md).", "",
             "| threat model | reference | training attack | train s/epoch | clean % | ladder (strengths) | "
             "ATA % per rung | attacks | flags |",
             "|---|---|---|---:|---:|---|---|---|---|"]
    for model, curve in reference.curves.items():
        entry = reference.document["threat_models"][model]
        info = curve.models[0] if curve.models else {}
        cost = info.get("train_seconds_per_epoch")
        lines.append(f"| {model} | {info.get('name', '')} | {', '.join(info.get('train_attack', []))} | "
                     f"{'—' if cost is None else f'{cost:g}'} | {100 * entry['clean_accuracy']:.1f} | "
                     f"{' '.join(f'{s:g}' for s in curve.strengths)} | "
                     f"{' '.join(f'{100 * a:.1f}' for a in curve.ata)} | {', '.join(curve.attacks)} | "
                     f"{', '.join(info.get('flags', [])) or '—'} |")
    lines += ["", "Train s/epoch: the median seconds per epoch of the reference's training run (its log.jsonl), "
              "on the machine and threads that trained it."]
    return "\n".join(lines) + "\n"
