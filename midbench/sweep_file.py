"""The sweep file of ``midbench bench``: its format, checks and parsing into a :class:`Sweep` (the running is
:mod:`midbench.sweep`).

A sweep is a TOML file::

    [sweep]
    name = "mnist5k"                  # names the leaderboard files
    dataset = "mnist5k"
    seed = 0                          # training and evaluation seed of every run
    protocols = ["whitebox", "transfer"]
    transfer_source = "standard"      # the run whose model the transfer attacks are crafted on
    data_dir = "data"                 # torchvision datasets only: their root (`--data-dir` overrides it)

    [eval]                            # what every model is evaluated with (options of `midbench eval`)
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

Every model is attacked white-box; under ``transfer`` every model but the source itself is attacked through the
same source model, so the rows of the transfer table are comparable (the MID paper's protocol, evaluation.md).
A MID run's ``source`` (and ``teacher``) may name another run of the sweep; when omitted, MID's source model is
the transfer source, so its Attacker Pool and the transfer protocol use the same model, as in the paper.

A run's keys are those of ``midbench train --config`` (the shared keys and its method's own options, checked by
the method); an option a method marks as a run reference (MID's ``source`` and ``teacher``) may name another run.
"""


from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from midbench._toml import tomllib
from midbench.config import TrainConfig, check_types, merge_config
from midbench.errors import UsageError
from midbench.evaluation.selection import AttackSelection, parse_eps_overrides
from midbench.protocols import PROTOCOLS


@dataclass(frozen=True)
class SweepSection:
    """The keys of ``[sweep]`` and their TOML types (checked by :func:`midbench.config.check_types`)."""

    name: str | None = None
    dataset: str | None = None
    seed: int | None = None
    device: str | None = None
    threads: int | None = None
    protocols: list[str] | None = None
    transfer_source: str | None = None
    extra_transfer_sources: list[str] | None = None
    data_dir: str | None = None
    download: bool | None = None


@dataclass(frozen=True)
class EvalSection:
    """The keys of ``[eval]`` (options of ``midbench eval``) and their TOML types."""

    n_examples: int | None = None
    batch_size: int | None = None
    known_attacks: bool | None = None
    unknown_attacks: bool | None = None
    autoattack: bool | None = None
    attacks: list[str] | None = None
    suite: str | None = None
    eps: list[str | int | float] | None = None


#: sweep and run names become file and folder names: no path separators, no leading dot
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class SweepRun:
    """One training run of the sweep: its name (unique, also its folder) and its resolved config."""

    name: str
    config: TrainConfig


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
    #: further runs whose models craft transfer attacks (e.g. an independently trained source: the honest
    #: transfer test of a defense whose training attacks were crafted on ``transfer_source``)
    extra_transfer_sources: tuple[str, ...] = ()
    #: root of a torchvision dataset (relative to the working directory), and whether to download it there
    data_dir: str | None = None
    download: bool = False

    def run(self, name: str) -> SweepRun:
        """The run called ``name``."""
        return next(run for run in self.runs if run.name == name)


def _table(document: dict[str, Any], key: str, section: type | None, path: Path) -> dict[str, Any]:
    """Table ``[key]`` with kebab-case keys normalised, its keys and value types checked against the dataclass
    ``section`` (None: any keys, checked later)."""
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [{key}] must be a table")
    table = {name.replace("-", "_"): value for name, value in table.items()}
    if section is None:
        return table
    known = [field.name for field in fields(section)]
    if set(table) - set(known):
        raise UsageError(f"{path}: unknown key(s) {sorted(set(table) - set(known))} in [{key}]; known: "
                         f"{', '.join(sorted(known))}")
    try:
        check_types(table, section)
    except UsageError as error:
        raise UsageError(f"{path}: [{key}]: {error}") from error
    return table


def _check_name(name: str, what: str, path: Path) -> str:
    if not _NAME.match(name):
        raise UsageError(f"{path}: {what} {name!r} becomes a file name: use letters, digits, '-', '_' and '.', "
                         "starting with a letter or digit")
    return name


def load_sweep(path: str | Path, device: str | None = None, data_dir: str | None = None,
               download: bool | None = None) -> Sweep:
    """Parse and check a sweep file, before anything is trained.

    Args:
        device: overrides ``[sweep] device``.
        data_dir: overrides ``[sweep] data_dir`` (where a torchvision dataset lies).
        download: overrides ``[sweep] download``.

    Raises:
        UsageError: missing file, invalid TOML, unknown keys, unknown methods or run references, bad values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise UsageError(f"sweep file not found: {path}") from error
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from error
    unknown_tables = set(document) - {"sweep", "eval", "train", "runs"}
    if unknown_tables:
        raise UsageError(f"{path}: unknown table(s) {sorted(unknown_tables)}; use [sweep], [eval], [train] and "
                         "[runs.NAME]")
    head = _table(document, "sweep", SweepSection, path)
    evaluation = _table(document, "eval", EvalSection, path)
    train_defaults = _table(document, "train", None, path)
    runs_table = document.get("runs")
    if not isinstance(runs_table, dict) or not runs_table:
        raise UsageError(f"{path}: no runs; add at least one [runs.NAME] table (e.g. [runs.standard])")

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
    runs = []
    for name, values in runs_table.items():
        _check_name(name, "run name", path)
        if not isinstance(values, dict):
            raise UsageError(f"{path}: runs.{name} must be a table")
        values = {key.replace("-", "_"): value for key, value in values.items()}
        if values.get("dataset", dataset) != dataset:
            raise UsageError(f"{path}: run {name!r} sets dataset {values['dataset']!r}, but a sweep has one "
                             f"dataset ({dataset!r}); make another sweep file for it")
        values.setdefault("method", name)
        try:
            config = merge_config(TrainConfig(), {**shared, **values}, {})
        except UsageError as error:
            raise UsageError(f"{path}: run {name!r}: {error}") from error
        runs.append(SweepRun(str(name), _checked(config.validate(), str(name), path)))
    names = [run.name for run in runs]

    protocols = tuple(head.get("protocols", ["whitebox"]))
    if not protocols or any(protocol not in PROTOCOLS for protocol in protocols):
        raise UsageError(f"{path}: protocols must be a non-empty list of {' and '.join(PROTOCOLS)}, got "
                         f"{list(protocols)}")
    transfer_source = head.get("transfer_source")
    if "transfer" in protocols and transfer_source is None:
        raise UsageError(f"{path}: the transfer protocol needs transfer_source = \"RUN\" in [sweep] (the run whose "
                         "model the attacks are crafted on, e.g. \"standard\")")
    if transfer_source is not None and transfer_source not in names:
        raise UsageError(f"{path}: transfer_source {transfer_source!r} is not a run of the sweep ({', '.join(names)})")
    extra_sources = tuple(head.get("extra_transfer_sources", ()))
    for extra in extra_sources:
        if extra not in names or extra == transfer_source:
            raise UsageError(f"{path}: extra_transfer_sources names {extra!r}, which is not another run of the "
                             f"sweep ({', '.join(names)})")
    if extra_sources and "transfer" not in protocols:
        raise UsageError(f"{path}: extra_transfer_sources needs \"transfer\" in protocols")

    runs = [_with_references(run, names, transfer_source) for run in runs]
    selection = AttackSelection(attacks=tuple(evaluation.get("attacks", ())), suite=evaluation.get("suite"),
                                known=evaluation.get("known_attacks", False),
                                unknown=evaluation.get("unknown_attacks", False),
                                autoattack=evaluation.get("autoattack", False),
                                eps=parse_eps_overrides([str(value) for value in evaluation.get("eps", [])]))
    _check_attacks(selection, dataset, path)
    n_examples = evaluation.get("n_examples")
    batch_size = evaluation.get("batch_size", 256)
    if (n_examples is not None and n_examples < 1) or batch_size < 1:
        raise UsageError(f"{path}: [eval] n_examples and batch_size must be at least 1")
    threads = head.get("threads")
    if threads is not None and threads < 1:
        raise UsageError(f"{path}: threads must be at least 1, got {threads}")
    # The state file guards the training runs, so [eval] stays out of it: a changed evaluation redoes the
    # evaluations (each is checked against its own settings) without retraining a model.
    training = {key: value for key, value in document.items() if key != "eval"}
    fingerprint = hashlib.sha256(json.dumps(training, sort_keys=True, default=str).encode()).hexdigest()
    return Sweep(name=sweep_name, dataset=dataset, runs=tuple(_ordered(runs)), protocols=protocols,
                 transfer_source=transfer_source, selection=selection, n_examples=n_examples,
                 eval_batch_size=batch_size, seed=seed, device=device, fingerprint=fingerprint, threads=threads,
                 data_dir=defaults.data_dir, download=defaults.download, extra_transfer_sources=extra_sources)


def _check_attacks(selection: AttackSelection, dataset: str, path: Path) -> None:
    """Resolve every attack id and suite of ``[eval]`` now, so a typo is refused before hours of training."""
    from midbench.attacks.specs import load_registry
    from midbench.data.datasets import get_dataset
    from midbench.evaluation.selection import select_attacks

    try:
        select_attacks(selection, load_registry([]), get_dataset(dataset).eps, [])
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
    return SweepRun(run.name, config.with_options(options))


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
