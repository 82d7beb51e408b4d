"""``midbench bench``: train a list of methods on one dataset, evaluate each under the chosen protocols and write
the leaderboard — the one command that produces a paper table.

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

Nothing is lost on a crash: training runs resume from their last finished epoch, and finished evaluations are
recorded in ``<out>/sweep-state.json`` with the checkpoint hash and evaluation settings, so a rerun of the same
command skips them and continues with the first unfinished step.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from midbench._toml import tomllib
from midbench.config import TrainConfig, merge_config
from midbench.errors import UsageError
from midbench.evaluation.selection import AttackSelection, parse_eps_overrides
from midbench.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from midbench.protocols import PROTOCOLS

STATE_FILE = "sweep-state.json"
#: the keys of [sweep] and [eval] with their TOML types (a list means a list of strings; eps may hold numbers)
_SWEEP_KEYS: dict[str, type] = {"name": str, "dataset": str, "seed": int, "device": str, "threads": int,
                                "protocols": list, "transfer_source": str, "extra_transfer_sources": list,
                                "data_dir": str, "download": bool}
_EVAL_KEYS: dict[str, type] = {"n_examples": int, "batch_size": int, "known_attacks": bool,
                               "unknown_attacks": bool, "autoattack": bool, "attacks": list, "suite": str,
                               "eps": list}
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


def _table(document: dict[str, Any], key: str, schema: dict[str, type] | None, path: Path) -> dict[str, Any]:
    """Table ``[key]`` with kebab-case keys normalised, its keys and value types checked against ``schema``."""
    table = document.get(key, {})
    if not isinstance(table, dict):
        raise UsageError(f"{path}: [{key}] must be a table")
    table = {name.replace("-", "_"): value for name, value in table.items()}
    if schema is None:
        return table
    if set(table) - set(schema):
        raise UsageError(f"{path}: unknown key(s) {sorted(set(table) - set(schema))} in [{key}]; known: "
                         f"{', '.join(sorted(schema))}")
    for name, value in table.items():
        expected = schema[name]
        if expected is list:
            allowed = (str, int, float) if name == "eps" else (str,)
            valid = isinstance(value, list) and all(isinstance(item, allowed) and not isinstance(item, bool)
                                                    for item in value)
            wanted = "a list of strings" + (" or numbers" if name == "eps" else "")
        else:
            valid = isinstance(value, expected) and (expected is bool or not isinstance(value, bool))
            wanted = {int: "an integer", str: "a string", bool: "true or false"}[expected]
        if not valid:
            raise UsageError(f"{path}: {name} in [{key}] must be {wanted}, got {value!r}")
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
    head = _table(document, "sweep", _SWEEP_KEYS, path)
    evaluation = _table(document, "eval", _EVAL_KEYS, path)
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
    from midbench.data.registry import get_dataset
    from midbench.evaluation.selection import select_attacks

    try:
        select_attacks(selection, load_registry([]), get_dataset(dataset).eps, [])
    except UsageError as error:
        raise UsageError(f"{path}: [eval]: {error}") from error


def _checked(config: TrainConfig, run: str, path: Path) -> TrainConfig:
    """Build the run's training task once, so a bad method or option combination is refused before anything is
    trained (not an hour into the sweep)."""
    from midbench.data.registry import get_dataset
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
        for other in _references(run.config).values():
            visit(by_name[other], (*chain, run.name))
        ordered.append(run)

    for run in runs:
        visit(run, ())
    return ordered


@dataclass
class SweepOutcome:
    """What :func:`run_sweep` produced."""

    board: str
    board_paths: list[Path]
    results_dir: Path
    seconds: dict[str, float]


def model_path(out: Path, run: str) -> Path:
    """The final model file of sweep run ``run`` under the sweep folder ``out``."""
    from midbench.training.loop import MODEL_FILE

    return out / run / MODEL_FILE


def _references(config: TrainConfig) -> dict[str, str]:
    """The options of ``config`` that name another run (marked ``@run``): option → run name."""
    return {option_name: value[1:] for option_name in _reference_options(config)
            if isinstance(value := config.options.get(option_name), str) and value.startswith("@")}


def _resolved(run: SweepRun, out: Path) -> TrainConfig:
    """The run's config with references to other runs replaced by their model files."""
    paths = {option_name: str(model_path(out, other)) for option_name, other in _references(run.config).items()}
    return run.config.with_options({**run.config.options, **paths})


def _load_state(path: Path, fingerprint: str) -> dict[str, Any]:
    if not path.exists():
        return {"fingerprint": fingerprint, "training": {}, "evaluations": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UsageError(f"{path} is unreadable ({error}); delete it to redo the sweep's evaluations") from error
    if state.get("fingerprint") != fingerprint:
        raise UsageError(f"{path} belongs to a different sweep (its [sweep], [train] or [runs] changed since); use "
                         "another --out or delete that folder to start over")
    return state


def evaluation_plan(sweep: Sweep) -> list[tuple[str, str, str | None]]:
    """(run, protocol, transfer source) in order: every run white-box (source None); under transfer, every run but
    the source itself, once per source (``transfer_source``, then each of ``extra_transfer_sources``)."""
    sources = (sweep.transfer_source, *sweep.extra_transfer_sources)
    plan: list[tuple[str, str, str | None]] = []
    for run in sweep.runs:
        for protocol in sweep.protocols:
            if protocol == "whitebox":
                plan.append((run.name, protocol, None))
                continue
            # attacking a source through itself is its white-box row
            plan.extend((run.name, protocol, source) for source in sources if source != run.name)
    return plan


def describe_plan(sweep: Sweep) -> list[str]:
    """One line per step, for ``--dry-run`` and the log."""
    lines = [f"train {run.name}: {run.config.method}, {run.config.arch}, {run.config.epochs} epochs" +
             (f", {run.config.attack_steps} attack steps" if run.config.attack_steps else "") for run in sweep.runs]
    n = sweep.n_examples if sweep.n_examples is not None else "all"
    for name, protocol, source in evaluation_plan(sweep):
        via = f" (attacks crafted on {source})" if source else ""
        lines.append(f"evaluate {name} {protocol}{via} on {n} test examples")
    return lines


def run_sweep(sweep: Sweep, out_dir: str | Path, results_dir: str | Path | None = None, *,
              config_label: str = "sweep.toml", say: Callable[[str], None] = lambda line: None,
              progress: bool = False, restart: bool = False) -> SweepOutcome:
    """Train every run, evaluate it under every protocol, and write ``leaderboard-<name>.md`` and ``.csv`` into
    ``results_dir`` (default ``<out_dir>/results``). A rerun continues where a crash stopped.

    Args:
        config_label: how the sweep file is named in the leaderboard's header (the command that made it).
        say: receives one line per step (the CLI prints them).
        progress: show training progress bars.
        restart: discard interrupted evaluation states instead of resuming them (``--restart``).
    """
    from midbench.evaluation.runner import EvalConfig, run_evaluation
    from midbench.training import train
    from midbench.training.loop import STATE_FILE as TRAIN_STATE

    if sweep.threads is not None:
        import torch

        torch.set_num_threads(sweep.threads)
    out = ensure_writable_dir(out_dir)
    results = ensure_writable_dir(results_dir if results_dir is not None else out / "results")
    state_path = out / STATE_FILE
    state = _load_state(state_path, sweep.fingerprint)
    started = time.perf_counter()

    for run in sweep.runs:
        folder = out / run.name
        say(f"[bench] training {run.name} ({run.config.method}, {run.config.epochs} epochs) -> {folder}")
        clock = time.perf_counter()
        result = train(_resolved(run, out), folder, resume=(folder / TRAIN_STATE).exists(), progress=progress)
        record = state["training"].setdefault(run.name, {"seconds": 0.0})
        record["seconds"] = round(record["seconds"] + time.perf_counter() - clock, 1)
        record["epochs"] = len(result.log)
        atomic_write_json(state_path, state)

    from midbench.evaluation.results import software_versions

    shared_settings = {"n_examples": sweep.n_examples, "batch_size": sweep.eval_batch_size, "seed": sweep.seed,
                       "selection": repr(sweep.selection), "device": sweep.device, "versions": software_versions(),
                       "registry": registry_digest()}
    # each model's hash, read once: an evaluation is redone only when its model (or source) changed
    hashes = {run.name: _checkpoint_sha(model_path(out, run.name)) for run in sweep.runs}
    for name, protocol, source_run in evaluation_plan(sweep):
        checkpoint = model_path(out, name)
        sha256 = hashes[name]
        # a transfer row depends on the source model too: a retrained source makes it stale
        source_sha = hashes[source_run] if source_run else None
        settings = {**shared_settings, "source_sha256": source_sha}
        extra = source_run is not None and source_run != sweep.transfer_source
        key = f"{name}/{protocol}" + (f"@{source_run}" if extra else "")
        done = state["evaluations"].get(key)
        if done and done["checkpoint_sha256"] == sha256 and done["settings"] == settings and \
                (results / done["result"]).exists():
            say(f"[bench] {key}: already evaluated ({done['result']})")
            continue
        if done:  # a stale result of a since-retrained model must not share the table with the new one
            for suffix in (".json", ".npz"):
                (results / done["result"]).with_suffix(suffix).unlink(missing_ok=True)
        say(f"[bench] evaluating {key}")
        clock = time.perf_counter()
        source = str(model_path(out, source_run)) if source_run else None
        evaluated = run_evaluation(EvalConfig(
            checkpoint=str(checkpoint), selection=sweep.selection, protocol=protocol, source=source,
            # the extra sources are named by run, so their tables stay apart from the main source's
            source_name=source_run if extra else None,
            n_examples=sweep.n_examples, batch_size=sweep.eval_batch_size, results_dir=str(results), name=name,
            seed=sweep.seed, device=sweep.device, restart=restart, data_dir=sweep.data_dir,
            download=sweep.download))
        state["evaluations"][key] = {"checkpoint_sha256": sha256, "settings": settings,
                                     "result": str(evaluated.path.relative_to(results)),
                                     "seconds": round(time.perf_counter() - clock, 1)}
        atomic_write_json(state_path, state)
        say(f"[bench]   result: {evaluated.path}")

    board, paths = write_leaderboards(sweep, results, config_label)
    seconds = {f"train {name}": record["seconds"] for name, record in state["training"].items()}
    seconds.update({f"eval {key}": record["seconds"] for key, record in state["evaluations"].items()})
    state["last_run_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(state_path, state)
    return SweepOutcome(board, paths, results, seconds)


def registry_digest() -> str:
    """SHA-256 of the shipped attack registry's files: an edited entry, suite or ladder redoes the evaluations."""
    from midbench.paths import shipped_registry_dir

    digest = hashlib.sha256()
    for path in sorted(Path(shipped_registry_dir()).glob("*.toml")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _checkpoint_sha(path: Path) -> str:
    from midbench.checkpoint import load_checkpoint

    return load_checkpoint(path).sha256


def leaderboard_header(sweep: Sweep, config_label: str) -> str:
    """The markdown preamble: what made the tables, with the settings a reader needs to interpret them.
    Deterministic (no times, no paths of this machine), so a rerun reproduces the file byte for byte."""
    from midbench.data.registry import get_dataset
    from midbench.defenses.base import build_task

    selection = sweep.selection
    labels = ((selection.known, "known attacks"), (selection.unknown, "the unknown-attack profile"),
              (selection.autoattack, "AutoAttack"))
    attacks = [label for flag, label in labels if flag]
    attacks += list(selection.attacks) + ([f"suite {selection.suite}"] if selection.suite else [])
    pinned = f", {sweep.threads} CPU thread{'s' if sweep.threads > 1 else ''}" if sweep.threads else ""
    lines = [f"# {sweep.name}: leaderboard of the sweep", "",
             f"Made by `midbench bench --config {config_label}` (seed {sweep.seed}{pinned}). Every model is "
             f"evaluated on the first {sweep.n_examples if sweep.n_examples is not None else 'all'} test examples of "
             f"`{sweep.dataset}` against {', '.join(attacks) or 'the default attacks'}; worst cases are per "
             "example. Columns: `results/README.md`.", ""]
    if "transfer" in sweep.protocols:
        lines += [f"Transfer protocol: every attack is crafted on the `{sweep.transfer_source}` run's model and "
                  "classified by the evaluated model."]
        if sweep.extra_transfer_sources:
            extra = ", ".join(f"`{source}`" for source in sweep.extra_transfer_sources)
            lines += [f"Also under transfer from {extra} (a model no defense was trained against; tables named "
                      "after the run)."]
        lines += [""]
    lines += ["| run | method | arch | epochs | batch | training attack steps | notes |",
              "|---|---|---|---|---|---|---|"]
    for run in sweep.runs:
        c = run.config
        task = build_task(c, get_dataset(c.dataset))
        lines.append(f"| {run.name} | {c.method} | {c.arch} | {c.epochs} | {c.batch_size} | "
                     f"{task.training_steps()} | {task.summary()} |")
    return "\n".join(lines) + "\n\n"


def write_leaderboards(sweep: Sweep, results: Path, config_label: str, write: bool = True
                       ) -> tuple[str, list[Path]]:
    """``leaderboard-<name>.md`` (header + one table per protocol) and ``.csv`` in ``results``, from every result
    file there; with ``write=False`` only returns the markdown (to check a committed table)."""
    from midbench.leaderboard import render

    board = leaderboard_header(sweep, config_label) + render(results, "markdown", dataset=sweep.dataset)
    markdown, csv = results / f"leaderboard-{sweep.name}.md", results / f"leaderboard-{sweep.name}.csv"
    if write:
        atomic_write_text(markdown, board)
        atomic_write_text(csv, render(results, "csv", dataset=sweep.dataset))
    return board, [markdown, csv]



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
