"""The sweep file of ``midbench bench``: its format, checks and parsing into a :class:`Sweep` (the running is
:mod:`midbench.bench.sweep`).

A sweep is a TOML file::

    [sweep]
    name = "mnist5k"                  # names the leaderboard files
    dataset = "mnist5k"
    seed = 0                          # training and evaluation seed of every run
    # seeds = [0, 1, 2]               # or: the whole sweep once per seed, tables with mean and spread
    protocols = ["whitebox", "transfer"]
    transfer_source = "standard"      # the run whose model the transfer attacks are crafted on
    data_dir = "data"                 # torchvision datasets only: their root (`--data-dir` overrides it)

    [eval]                            # what every model is evaluated with: n_examples, batch_size and every
                                      # attack-selection option of `midbench eval` by its key (attacks, suite,
                                      # known_attacks, unknown_attacks, threat_models, profile_suites,
                                      # autoattack, eps, target: midbench.evaluation.options)
    n_examples = 500
    known_attacks = true
    unknown_attacks = true
    autoattack = true

    [train]                           # defaults for every run (keys of `midbench train --config`)
    arch = "lenet"
    batch_size = 64

    [runs.standard]                   # one table per run, in order; `method` defaults to the run's name
    epochs = 3

    [runs.pgd-at]
    epochs = 5

    [models.Wong2020Fast]             # evaluate-only: a model the sweep does not train
    model = "robustbench:Wong2020Fast"  # a zoo entry (weights under [sweep] model_dir), or module:factory,
    zoo_threat_model = "Linf"         # or checkpoint = "FILE" (arch = "..." for a plain state dict)

Every model is attacked white-box; under ``transfer`` every model but the source itself is attacked through the
same source model, so the rows of the transfer table are comparable (the MID paper's protocol, docs/evaluation.md).
A MID run's ``source`` (and ``teacher``) may name another run of the sweep; when omitted, MID's source model is
the transfer source, so its Attacker Pool and the transfer protocol use the same model, as in the paper.

A ``[models.NAME]`` table adds a model that is evaluated but not trained — a RobustBench zoo entry
(:mod:`midbench.artifacts.zoo`), a user's ``module:factory`` or a checkpoint file — under the same protocols and
attacks,
so a sweep may hold no runs at all: a list of zoo entries profiled against unknown attacks in one command (the
MultiRobustBench use case). Such a model may be the transfer source when it is a checkpoint file or a zoo entry
(e.g. ``Standard``, the zoo's undefended model, for the MID paper's protocol).

With ``seeds = [..]`` instead of ``seed``, the sweep is replicated once per seed — every run trained, every model
evaluated, a MID run against its source of the same seed, transfer attacks crafted on that seed's source — each
replicate in ``<out>/seed-<s>/`` with its own results and tables, and the leaderboard reports each model's mean,
spread and 95% interval across seeds (:mod:`midbench.reporting.seeds`). Adding a seed to the list keeps the finished
replicates.

A run's keys are those of ``midbench train --config`` (the shared keys and its method's own options, checked by
the method); an option a method marks as a run reference (MID's ``source`` and ``teacher``) may name another run.
``seed_offset = K`` trains a run with the sweep's seed plus K (each replicate's seed plus K under ``seeds``): an
independent transfer source of the same recipe as the main one stays a different model in every replicate.
"""


from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, fields, make_dataclass, replace
from pathlib import Path
from typing import Any

from midbench._toml import tomllib
from midbench.attacks.plans import profile_plan, suite_attacks
from midbench.bench.executors import slurm_options
from midbench.config import TrainConfig, check_types, merge_config
from midbench.errors import UsageError
from midbench.evaluation.options import RUN_DEFAULT, SELECTION_HELP, table_keys
from midbench.evaluation.selection import AttackSelection, parse_selection
from midbench.protocols import PROTOCOLS


@dataclass(frozen=True)
class SweepSection:
    """The keys of ``[sweep]`` and their TOML types (checked by :func:`midbench.config.check_types`)."""

    name: str | None = None
    dataset: str | None = None
    seed: int | None = None
    seeds: list[int] | None = None
    device: str | None = None
    threads: int | None = None
    nproc: int | None = None
    protocols: list[str] | None = None
    transfer_source: str | None = None
    extra_transfer_sources: list[str] | None = None
    data_dir: str | None = None
    download: bool | None = None
    model_dir: str | None = None


#: the keys of ``[models.NAME]`` (the model options of ``midbench eval``) and of ``[eval]`` (the examples, the batch
#: size and every attack-selection option), with their TOML types: declared in midbench.evaluation.options
ModelSection = make_dataclass(
    "ModelSection", [(key, kind | None, None) for key, kind in table_keys("models")], frozen=True)
EvalSection = make_dataclass(
    "EvalSection", [(key, kind | None, None) for key, kind in table_keys("eval")], frozen=True)


#: sweep and run names become file and folder names: no path separators, no leading dot
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SweepRun:
    """One training run of the sweep: its name (unique, also its folder) and its resolved config."""

    name: str
    config: TrainConfig
    #: ``seed_offset``: the run trains with the sweep's (or replicate's) seed plus this, so two runs of one recipe
    #: (a transfer source and an independent one) stay different models in every replicate
    seed_offset: int = 0


@dataclass(frozen=True)
class SweepModel:
    """One evaluate-only model of the sweep (``[models.NAME]``): exactly one of ``checkpoint`` (a file; ``arch``
    for a plain state dict) and ``model`` (``robustbench:NAME`` with ``zoo_threat_model`` and ``model_dir``, or a
    user's ``module:factory`` with optional ``weights``), as ``midbench eval`` takes them."""

    name: str
    checkpoint: str | None = None
    arch: str | None = None
    model: str | None = None
    weights: str | None = None
    zoo_threat_model: str = RUN_DEFAULT["zoo_threat_model"]
    model_dir: str | None = None
    #: the adapters around it (midbench.artifacts.adapters), as ``--normalize`` and ``--output``
    normalize: str | None = None
    output: str | None = None

    @property
    def is_zoo(self) -> bool:
        from midbench.artifacts.zoo import is_zoo_spec

        return is_zoo_spec(self.model)

    @property
    def zoo_name(self) -> str:
        """The entry's name in the zoo (``NAME`` of ``robustbench:NAME``)."""
        return str(self.model).split(":", 1)[1].strip()

    @property
    def can_be_source(self) -> bool:
        """Whether the transfer protocol can craft on it: a checkpoint or a zoo entry (a factory's module may not
        be importable where the source is loaded, and is not a file to record)."""
        return self.checkpoint is not None or self.is_zoo

    def describe(self) -> str:
        """How the plan and the leaderboard's header name it."""
        adapters = "".join(f", {name} {value}" for name, value in (("normalize", self.normalize),
                                                                  ("output", self.output)) if value is not None)
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}" + (f" ({self.arch})" if self.arch else "") + adapters
        if self.is_zoo:
            return f"RobustBench {self.zoo_name} ({self.zoo_threat_model})" + adapters
        return f"{self.model}" + (f" with weights {self.weights}" if self.weights else "") + adapters

    def files(self, dataset: str) -> list[Path]:
        """The files whose bytes are this model (a zoo entry's weights may not be downloaded yet)."""
        from midbench.artifacts.zoo import DEFAULT_MODEL_DIR, weights_path

        if self.checkpoint is not None:
            return [Path(self.checkpoint)]
        if self.is_zoo:
            return [weights_path(self.zoo_name, dataset, self.zoo_threat_model, self.model_dir or DEFAULT_MODEL_DIR)]
        return [Path(self.weights)] if self.weights else []


@dataclass(frozen=True)
class Sweep:
    """A parsed sweep file."""

    name: str
    dataset: str
    runs: tuple[SweepRun, ...]
    protocols: tuple[str, ...]
    transfer_source: str | None
    selection: AttackSelection
    n_examples: int | None
    eval_batch_size: int
    seed: int
    device: str
    fingerprint: str
    #: CPU threads torch may use (None: torch's default). Pinned for exact reproducibility on the CPU, where a
    #: different number of threads may split floating-point reductions differently.
    threads: int | None = None
    #: processes per step: above 1, every training and evaluation runs under torchrun with this many processes
    #: (data-parallel training, sharded evaluation; :mod:`midbench.bench.step`). Training's sums then come in
    #: another order, so it is part of the fingerprint.
    nproc: int = 1
    #: further runs whose models craft transfer attacks (e.g. an independently trained source: the honest
    #: transfer test of a defense whose training attacks were crafted on ``transfer_source``)
    extra_transfer_sources: tuple[str, ...] = ()
    #: root of a torchvision dataset (relative to the working directory), and whether to download it there
    data_dir: str | None = None
    download: bool = False
    #: the evaluate-only models (``[models.NAME]``), after the runs in the plan and the tables
    models: tuple[SweepModel, ...] = ()
    #: ``seeds = [..]``: the seeds of the replicates (:meth:`replicate`); empty for a sweep of one seed
    seeds: tuple[int, ...] = ()
    #: the ``[slurm]`` table as written (:func:`midbench.bench.executors.slurm_options` reads it); it decides where
    #: the steps run, never what they compute, so it stays out of the fingerprint
    slurm: dict[str, Any] = field(default_factory=dict)

    def replicate(self, seed: int) -> Sweep:
        """The sweep of one seed of ``seeds``: every run trained and every model evaluated with ``seed``. Its
        fingerprint is the sweep's and the seed's, so adding a seed to the list keeps the finished replicates."""
        fingerprint = hashlib.sha256(f"{self.fingerprint}:seed={seed}".encode()).hexdigest()
        runs = tuple(replace(run, config=replace(run.config, seed=seed + run.seed_offset)) for run in self.runs)
        return replace(self, seed=seed, runs=runs, fingerprint=fingerprint, seeds=())

    def run(self, name: str) -> SweepRun:
        """The run called ``name``."""
        return next(run for run in self.runs if run.name == name)

    def model(self, name: str) -> SweepModel | None:
        """The evaluate-only model called ``name``; None when ``name`` is a training run."""
        return next((model for model in self.models if model.name == name), None)

    @property
    def names(self) -> list[str]:
        """Every run and model, in plan order."""
        return [run.name for run in self.runs] + [model.name for model in self.models]


def _table(document: dict[str, Any], key: str, section: type | None, path: Path, label: str | None = None
           ) -> dict[str, Any]:
    """Table ``[key]`` with kebab-case keys normalised, its keys and value types checked against the dataclass
    ``section`` (None: any keys, checked later). Errors name it ``[label]`` (default ``[key]``)."""
    label = label or key
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [{label}] must be a table")
    table = {name.replace("-", "_"): value for name, value in table.items()}
    if section is None:
        return table
    known = [field.name for field in fields(section)]
    if set(table) - set(known):
        raise UsageError(f"{path}: unknown key(s) {sorted(set(table) - set(known))} in [{label}]; known: "
                         f"{', '.join(sorted(known))}")
    try:
        check_types(table, section)
    except UsageError as error:
        raise UsageError(f"{path}: [{label}]: {error}") from error
    return table


def _check_name(name: str, what: str, path: Path) -> str:
    if not _NAME.match(name):
        raise UsageError(f"{path}: {what} {name!r} becomes a file name: use letters, digits, '-', '_' and '.', "
                         "starting with a letter or digit")
    return name


def load_sweep(path: str | Path, device: str | None = None, data_dir: str | None = None,
               download: bool | None = None, model_dir: str | None = None) -> Sweep:
    """Parse and check a sweep file, before anything is trained.

    Args:
        device: overrides ``[sweep] device``.
        data_dir: overrides ``[sweep] data_dir`` (where a torchvision dataset lies).
        download: overrides ``[sweep] download``.
        model_dir: overrides ``[sweep] model_dir`` (where the zoo entries' weights lie).

    Raises:
        UsageError: missing file, invalid TOML, unknown keys, unknown methods, run references or zoo entries,
            bad values.
    """
    path = Path(path)
    document = _read_document(path)
    unknown_tables = set(document) - {"sweep", "eval", "train", "runs", "models", "slurm"}
    if unknown_tables:
        raise UsageError(f"{path}: unknown table(s) {sorted(unknown_tables)}; use [sweep], [eval], [train], "
                         "[runs.NAME], [models.NAME] and [slurm]")
    slurm_table = document.get("slurm", {})
    if not isinstance(slurm_table, dict):
        raise UsageError(f"{path}: [slurm] must be a table")
    slurm_options(slurm_table, where=f"{path}: [slurm]")  # checked now; the CLI merges --slurm-option over it
    head = _table(document, "sweep", SweepSection, path)
    evaluation = _table(document, "eval", EvalSection, path)
    train_defaults = _table(document, "train", None, path)
    runs_table = document.get("runs", {})
    if not isinstance(runs_table, dict) or not (runs_table or document.get("models")):
        raise UsageError(f"{path}: nothing to evaluate; add a [runs.NAME] table (e.g. [runs.standard]) or a "
                         "[models.NAME] table (e.g. model = \"robustbench:Standard\")")

    seeds = _seeds(head, path)
    # each replicate trains every run with its own seed: a seed of a run's would be silently overridden
    seeded = ["[train]"] * ("seed" in train_defaults) + [
        f"[runs.{name}]" for name, values in runs_table.items() if isinstance(values, dict) and "seed" in values]
    if seeds and seeded:
        raise UsageError(f"{path}: {', '.join(seeded)} set seed, but [sweep] seeds = [..] gives every run each seed "
                         "in turn; remove it there")
    if seeds:  # parsed with the first seed; each replicate replaces it (Sweep.replicate)
        head["seed"] = seeds[0]
    shared = {**train_defaults,
              **{key: head[key] for key in ("dataset", "seed", "device", "data_dir", "download") if key in head}}
    if device is not None:
        shared["device"] = device
    if data_dir is not None:
        shared["data_dir"] = data_dir
    if download is not None:
        shared["download"] = download
    try:  # the [train] defaults are checked once, so a bad value is blamed on [train], not on a run
        defaults = merge_config(TrainConfig(), shared, {})
    except UsageError as error:
        raise UsageError(f"{path}: [train]/[sweep]: {error}") from error
    dataset, seed, device = defaults.dataset, defaults.seed, defaults.device
    sweep_name = _check_name(head.get("name", path.stem), "sweep name", path)
    runs = [_run(name, values, shared, dataset, seed, path) for name, values in runs_table.items()]
    models = _models(document, path, dataset, model_dir if model_dir is not None else head.get("model_dir"))
    clash = {run.name for run in runs} & {model.name for model in models}
    if clash:
        raise UsageError(f"{path}: {sorted(clash)} name both a run and a model; give each its own name")
    run_names = [run.name for run in runs]

    protocols, transfer_source, extra_sources = _protocols(
        head, run_names + [model.name for model in models if model.can_be_source], path)
    runs = [_with_references(run, run_names, transfer_source) for run in runs]
    try:
        selection = parse_selection({key: value for key, value in evaluation.items() if key in SELECTION_HELP})
    except UsageError as error:
        raise UsageError(f"{path}: [eval]: {error}") from error
    _check_attacks(selection, dataset, path)
    n_examples = evaluation.get("n_examples")
    batch_size = evaluation.get("batch_size", RUN_DEFAULT["batch_size"])
    if (n_examples is not None and n_examples < 1) or batch_size < 1:
        raise UsageError(f"{path}: [eval] n_examples and batch_size must be at least 1")
    threads = head.get("threads")
    if threads is not None and threads < 1:
        raise UsageError(f"{path}: threads must be at least 1, got {threads}")
    nproc = head.get("nproc", 1)
    if nproc < 1:
        raise UsageError(f"{path}: nproc must be at least 1, got {nproc}")
    if n_examples is not None and nproc > n_examples:
        raise UsageError(f"{path}: nproc {nproc} is more processes than the {n_examples} examples of [eval]; use at "
                         f"most {n_examples}")
    # The state file guards the training runs, so [eval] and [models] stay out of it: a changed evaluation redoes
    # the evaluations (each is checked against its own settings and model) without retraining a model, and a model
    # added to the list is evaluated next to the finished ones.
    training = {key: value for key, value in document.items() if key not in ("eval", "models", "slurm")}
    # the seeds stay out too: each replicate's fingerprint adds its own seed (Sweep.replicate)
    left_out = {"model_dir", "seeds", "seed"} if seeds else {"model_dir"}
    training["sweep"] = {key: value for key, value in head.items() if key not in left_out}
    fingerprint = hashlib.sha256(json.dumps(training, sort_keys=True, default=str).encode()).hexdigest()
    return Sweep(name=sweep_name, dataset=dataset, runs=tuple(_ordered(runs)), protocols=protocols,
                 transfer_source=transfer_source, selection=selection, n_examples=n_examples,
                 eval_batch_size=batch_size, seed=seed, device=device, fingerprint=fingerprint, threads=threads,
                 nproc=nproc, data_dir=defaults.data_dir, download=defaults.download,
                 extra_transfer_sources=extra_sources, models=tuple(models), seeds=tuple(seeds),
                 slurm=dict(slurm_table))


def _read_document(path: Path) -> dict[str, Any]:
    """The sweep file's TOML document.

    Raises:
        UsageError: the file is missing or not valid TOML.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise UsageError(f"sweep file not found: {path}") from error
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from error


def _run(name: str, values: Any, shared: dict[str, Any], dataset: str, seed: int, path: Path  # noqa: ANN401
         ) -> SweepRun:
    """``[runs.NAME]`` over the ``[train]`` and ``[sweep]`` values ``shared``, checked as ``midbench train``
    checks its options; ``seed_offset`` moves the run's seed off the sweep's.

    Raises:
        UsageError: a bad name, another dataset, a bad ``seed_offset`` or a bad training option.
    """
    _check_name(name, "run name", path)
    if not isinstance(values, dict):
        raise UsageError(f"{path}: runs.{name} must be a table")
    values = {key.replace("-", "_"): value for key, value in values.items()}
    if values.get("dataset", dataset) != dataset:
        raise UsageError(f"{path}: run {name!r} sets dataset {values['dataset']!r}, but a sweep has one "
                         f"dataset ({dataset!r}); make another sweep file for it")
    values.setdefault("method", name)
    offset = values.pop("seed_offset", 0)
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0 or "seed" in values and offset:
        raise UsageError(f"{path}: run {name!r}: seed_offset must be a non-negative integer, without seed, "
                         f"e.g. seed_offset = 1; got {offset!r}")
    if offset:
        values["seed"] = seed + offset
    try:
        config = merge_config(TrainConfig(), {**shared, **values}, {})
    except UsageError as error:
        raise UsageError(f"{path}: run {name!r}: {error}") from error
    return SweepRun(str(name), _checked(config.validate(), str(name), path), offset)


def _protocols(head: dict[str, Any], sources: list[str], path: Path
               ) -> tuple[tuple[str, ...], str | None, tuple[str, ...]]:
    """``[sweep]``'s protocols, transfer source and extra transfer sources, each source one of ``sources`` (the
    runs, and the models that can be one).

    Raises:
        UsageError: an unknown protocol, a transfer protocol without a source, or a source that is not in the
            sweep.
    """
    protocols = tuple(head.get("protocols", ["whitebox"]))
    if not protocols or any(protocol not in PROTOCOLS for protocol in protocols):
        raise UsageError(f"{path}: protocols must be a non-empty list of {' and '.join(PROTOCOLS)}, got "
                         f"{list(protocols)}")
    transfer_source = head.get("transfer_source")
    if "transfer" in protocols and transfer_source is None:
        raise UsageError(f"{path}: the transfer protocol needs transfer_source = \"RUN\" in [sweep] (the run whose "
                         "model the attacks are crafted on, e.g. \"standard\")")
    if transfer_source is not None and transfer_source not in sources:
        raise UsageError(f"{path}: transfer_source {transfer_source!r} is not a run of the sweep, a checkpoint model "
                         f"or a zoo entry ({', '.join(sources) or 'there is none'})")
    extra_sources = tuple(head.get("extra_transfer_sources", ()))
    for extra in extra_sources:
        if extra not in sources or extra == transfer_source:
            raise UsageError(f"{path}: extra_transfer_sources names {extra!r}, which is not another run, "
                             f"checkpoint model or zoo entry of the sweep ({', '.join(sources)})")
    if extra_sources and "transfer" not in protocols:
        raise UsageError(f"{path}: extra_transfer_sources needs \"transfer\" in protocols")
    return protocols, transfer_source, extra_sources


def _seeds(head: dict[str, Any], path: Path) -> list[int]:
    """``[sweep] seeds``: distinct non-negative integers, not given with ``seed`` (its type is checked already)."""
    seeds = head.get("seeds")
    if seeds is None:
        return []
    if "seed" in head:
        raise UsageError(f"{path}: [sweep] sets both seed and seeds; keep seeds = [..] (one seed: seeds = [0])")
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UsageError(f"{path}: [sweep] seeds must be distinct non-negative integers, e.g. seeds = [0, 1, 2]; "
                         f"got {seeds}")
    return list(seeds)


def _models(document: dict[str, Any], path: Path, dataset: str, model_dir: str | None) -> list[SweepModel]:
    """The ``[models.NAME]`` tables, each checked as ``midbench eval`` checks its options, and a zoo entry's name
    looked up in the zoo now (with close matches), so a typo is refused before anything runs."""
    from midbench.artifacts.usermodel import parse_model_spec
    from midbench.artifacts.zoo import ZOO_THREAT_MODELS, check_zoo_name, is_zoo_spec

    table = document.get("models", {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [models] must hold one [models.NAME] table per model")
    models = []
    for name, values in table.items():
        _check_name(name, "model name", path)
        if not isinstance(values, dict):
            raise UsageError(f"{path}: models.{name} must be a table (e.g. model = \"robustbench:Standard\")")
        where = f"{path}: models.{name}"
        values = _table({"model": values}, "model", ModelSection, path, f"models.{name}")
        checkpoint, spec = values.get("checkpoint"), values.get("model")
        if (checkpoint is None) == (spec is None):
            raise UsageError(f"{where}: give exactly one of checkpoint = \"FILE\" and model = \"robustbench:NAME\" "
                             "(or \"module:factory\")")
        zoo = is_zoo_spec(spec)
        if not zoo and ("zoo_threat_model" in values or "model_dir" in values):
            raise UsageError(f"{where}: zoo_threat_model and model_dir go with model = \"robustbench:NAME\"")
        if values.get("weights") is not None and (checkpoint is not None or zoo):
            raise UsageError(f"{where}: weights goes with model = \"module:factory\"; a checkpoint is its own "
                             "weights and a zoo entry's lie under model_dir")
        if values.get("arch") is not None and checkpoint is None:
            raise UsageError(f"{where}: arch applies to a plain state dict checkpoint; a factory builds its own")
        model = SweepModel(str(name), checkpoint=checkpoint, arch=values.get("arch"), model=spec,
                           weights=values.get("weights"),
                           zoo_threat_model=values.get("zoo_threat_model", RUN_DEFAULT["zoo_threat_model"]),
                           model_dir=(values.get("model_dir") or model_dir) if zoo else None,
                           normalize=values.get("normalize"), output=values.get("output"))
        try:
            if zoo:
                if model.zoo_threat_model not in ZOO_THREAT_MODELS:
                    raise UsageError(f"zoo_threat_model {model.zoo_threat_model!r}: use one of "
                                     f"{', '.join(ZOO_THREAT_MODELS)}")
                check_zoo_name(str(spec), dataset, model.zoo_threat_model)
            elif spec is not None:
                parse_model_spec(spec, "model")
            if checkpoint is not None and not Path(checkpoint).is_file():
                raise UsageError(f"checkpoint {checkpoint} not found (relative to the working directory)")
        except UsageError as error:
            raise UsageError(f"{where}: {error}") from error
        models.append(model)
    return models


def _check_attacks(selection: AttackSelection, dataset: str, path: Path) -> None:
    """Resolve every attack id and suite of ``[eval]`` now, so a typo is refused before hours of training."""
    from midbench.attacks.specs import load_registry
    from midbench.data.datasets import get_dataset
    from midbench.evaluation.selection import check_profile_options, select_attacks

    try:
        check_profile_options(selection, spelled=lambda key: key)
        registry = load_registry([])
        spec = get_dataset(dataset)
        select_attacks(selection, registry, spec.eps, [])
        suite_attacks(registry, selection.profile_suites)
        if selection.threat_models:  # names the suites do not climb, or colour ones on grey data
            profile_plan(registry, spec.eps, set(), suite=selection.profile_suites, dataset=dataset,
                         only=selection.threat_models, channels=spec.input_shape[0])
    except UsageError as error:
        raise UsageError(f"{path}: [eval]: {error}") from error


def _checked(config: TrainConfig, run: str, path: Path) -> TrainConfig:
    """Build the run's training task once, so a bad method or option combination is refused before anything is
    trained (not an hour into the sweep)."""
    from midbench.data.datasets import get_dataset
    from midbench.defenses.base import build_task

    try:
        build_task(config, get_dataset(config.dataset))
    except UsageError as error:
        raise UsageError(f"{path}: run {run!r}: {error}") from error
    return config


def _with_references(run: SweepRun, names: list[str], transfer_source: str | None) -> SweepRun:
    """Mark the options that name another run (``@run`` until :func:`run_sweep` knows the folder), and give a
    method that crafts its training attacks on a source model (MID) the sweep's transfer source by default."""
    from midbench.defenses.base import resolve_method

    config, task_class = run.config, resolve_method(run.config.method)
    options = dict(config.options)
    source_option = getattr(task_class, "transfer_source_option", None)
    if source_option and options.get(source_option) is None and transfer_source is not None:
        options[source_option] = transfer_source
    for option_name in _reference_options(config):
        value = options.get(option_name)
        if value is not None and value in names:
            if value == run.name:
                raise UsageError(f"run {run.name!r} names itself as its {option_name}")
            options[option_name] = f"@{value}"
    return replace(run, config=config.with_options(options))


def _reference_options(config: TrainConfig) -> list[str]:
    """The options of the run's method whose value may name another run (MID's source and teacher)."""
    from midbench.defenses.base import resolve_method
    from midbench.defenses.options import RUN_REFERENCE, option_fields

    task_class = resolve_method(config.method)
    return [field.name for field in option_fields(getattr(task_class, "Options", None))
            if field.metadata.get(RUN_REFERENCE)]


def _ordered(runs: list[SweepRun]) -> list[SweepRun]:
    """The runs in file order, except that a run named as another's source or teacher comes before it."""
    by_name = {run.name: run for run in runs}
    ordered: list[SweepRun] = []

    def visit(run: SweepRun, chain: tuple[str, ...]) -> None:
        if run in ordered:
            return
        if run.name in chain:
            raise UsageError(f"runs {' → '.join((*chain, run.name))} name each other in a cycle")
        for other in run_references(run.config).values():
            visit(by_name[other], (*chain, run.name))
        ordered.append(run)

    for run in runs:
        visit(run, ())
    return ordered


def run_references(config: TrainConfig) -> dict[str, str]:
    """The options of ``config`` that name another run (marked ``@run``): option → run name."""
    return {option_name: value[1:] for option_name in _reference_options(config)
            if isinstance(value := config.options.get(option_name), str) and value.startswith("@")}


def config_label(path: str | Path) -> str:
    """How a sweep file is named in its leaderboard: relative to the working directory when it lies below it,
    else by its file name, so no path of the machine that ran it ends up in a published table."""
    path = Path(path)
    if not path.is_absolute():
        return path.as_posix()
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return path.name
