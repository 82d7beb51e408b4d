"""``midbench tune``: choose a training recipe by a documented search over a few settings, on the held-out
validation slice of the training split, never on the test images.

A baseline that a paper compares with must be trained to its own paper's quality. Its recipe (learning rate,
epochs, batch size, a method's own weight...) is tuned here the way a reviewer can check: every combination of the
``[grid]`` values is trained (``midbench train`` with the ``[train]`` table as the base), each run is read back
from its ``log.jsonl``, and the recipe with the highest ``select`` metric on the validation slice wins among the
eligible ones. The test split is never touched, so the tables made later on the test images stay honest.

The file format (``tune.toml``)::

    [tune]
    name = "pgd-at-mnist5k"          # names the work folder (runs/tune-NAME by default)
    select = "val_pgd10_acc"          # the log key maximised (default: the held-out PGD accuracy)
    min_clean = 0.97                  # optional: a recipe below this held-out clean accuracy is not eligible
    workers = 2                       # runs trained side by side, one CPU thread each (threads = 1)

    [train]                           # the base of every run: any key of `midbench train --config`
    method = "pgd-at"
    dataset = "mnist5k"
    arch = "lenet"
    epochs = 20
    val_size = 1000                   # a larger validation slice: a less noisy choice

    [grid]                            # every combination of these values is one run
    lr = [1e-3, 3e-4]
    batch_size = [64, 128]

A run is read at the epoch whose weights it keeps in ``model.safetensors``: the last one, or the best one where
the method stopped early (fast-AT's catastrophic-overfitting stop). A recipe is not eligible when its held-out
clean accuracy is below ``min_clean`` or its last epoch raises the ``training-overfitting`` flag (docs/flags.md):
held-out PGD far below its own single-step training attack. Ties go to the higher clean accuracy, then to the
earlier combination of the grid.

Outputs, in the folder of the tune file by default: ``tuning.json`` (every run's settings and figures, the choice
and the command), ``tuning.md`` (the same as a table) and ``best.toml`` (the chosen recipe's ``[train]`` table,
ready for a sweep's ``[runs.NAME]``). Resumable: a rerun of the same command trains only the runs that did not
finish; a run is found again by its settings, so adding a value to the grid keeps the runs already trained.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from midbench._toml import read_tables
from midbench.config import TrainConfig, config_to_toml, merge_config
from midbench.errors import UsageError
from midbench.fileio import atomic_write_json, atomic_write_text, ensure_writable_dir
from midbench.runtime.processes import run_side_by_side

TUNING_FILE = "tuning.json"
TABLE_FILE = "tuning.md"
BEST_FILE = "best.toml"
SECTION_KEYS = {"name", "select", "min_clean", "workers", "threads", "device"}
#: keys that say where a run goes, not how it trains: a grid over them would tune nothing
NOT_TUNABLE = {"out", "resume", "device", "data_dir", "download", "dataset"}

ProgressFn = Callable[[str], None]


@dataclass(frozen=True)
class Tuning:
    """A parsed ``tune.toml``."""

    path: Path
    name: str
    select: str
    min_clean: float | None
    workers: int
    threads: int | None
    #: the grid's keys, in the file's order, and each run's settings (one value per key) with its config
    keys: tuple[str, ...]
    runs: list[tuple[dict[str, Any], TrainConfig]] = field(default_factory=list)


def load_tuning(path: str | Path, device: str | None = None) -> Tuning:
    """Read and check a tune file; every run's training task is built once so that a bad setting anywhere in the
    grid is refused before anything is trained.

    Raises:
        UsageError: a missing file, bad TOML, unknown tables or keys, a grid value that is not a non-empty list,
            a grid key that is not a training key (or only says where a run goes), ``min_clean`` outside (0, 1],
            or a combination the method refuses.
    """
    from midbench.data.datasets import get_dataset
    from midbench.defenses.base import build_task

    path = Path(path)
    document = read_tables(path, "tune", ("tune", "train", "grid"))
    section, base, grid = document.get("tune", {}), document.get("train"), document.get("grid")
    if not isinstance(section, dict) or not isinstance(base, dict) or not isinstance(grid, dict) or not grid:
        raise UsageError(f"{path}: a [train] table (the base recipe) and a [grid] table of at least one key with a "
                         "list of values are required")
    extra = set(section) - SECTION_KEYS
    if extra:
        raise UsageError(f"{path}: [tune] unknown key(s) {sorted(extra)}; allowed: {', '.join(sorted(SECTION_KEYS))}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UsageError(f"{path}: [grid] {key} must be a non-empty list of values, e.g. {key} = [1e-3, 3e-4]")
        if key in NOT_TUNABLE:
            raise UsageError(f"{path}: [grid] {key} says where or on what a run trains, not how; set it in [train]")
        if key in base:
            raise UsageError(f"{path}: {key} is both in [train] and in [grid]; keep it in one of them")
        if len({json.dumps(value, sort_keys=True) for value in values}) != len(values):
            raise UsageError(f"{path}: [grid] {key} lists a value twice")
    workers = section.get("workers", 1)
    threads = section.get("threads")
    for key, value in (("workers", workers), ("threads", threads)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise UsageError(f"{path}: [tune] {key} must be a positive integer, got {value!r}")
    min_clean = section.get("min_clean")
    if min_clean is not None and (not isinstance(min_clean, int | float) or isinstance(min_clean, bool)
                                  or not 0 < min_clean <= 1):
        raise UsageError(f"{path}: [tune] min_clean is a held-out clean accuracy in (0, 1], got {min_clean!r}")
    keys = tuple(grid)
    runs = []
    for values in itertools.product(*(grid[key] for key in keys)):
        settings = dict(zip(keys, values, strict=True))
        label = ", ".join(f"{key} = {value!r}" for key, value in settings.items())
        try:
            config = merge_config(TrainConfig(), {**base, **settings},
                                  {"device": device or section.get("device")}).validate()
            build_task(config, get_dataset(config.dataset))
        except UsageError as error:
            raise UsageError(f"{path}: [grid] {label}: {error}") from error
        runs.append((settings, config))
    name = section.get("name", path.stem)
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UsageError(f"{path}: [tune] name must be a file name (letters, digits, . _ -), got {name!r}")
    select = section.get("select", f"val_pgd{runs[0][1].val_pgd_steps}_acc")
    if not isinstance(select, str):
        raise UsageError(f"{path}: [tune] select must be the name of a log.jsonl key, got {select!r}")
    return Tuning(path, name, select, None if min_clean is None else float(min_clean), int(workers),
                  None if threads is None else int(threads), keys, runs)


def run_folder(settings: dict[str, Any]) -> str:
    """A run's folder name: its settings, readable and hashed (so a run is found again by what it trains)."""
    readable = "_".join(f"{key}-{value}" for key, value in settings.items())
    readable = re.sub(r"[^A-Za-z0-9.=-]+", "-", readable)[:60].strip("-")
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"{readable}-{digest}"


@dataclass
class TuningOutcome:
    """What :func:`run_tuning` wrote, its rows and the chosen one (None when no recipe is eligible)."""

    files: list[Path]
    rows: list[dict[str, Any]]
    chosen: int | None


def run_tuning(tuning: Tuning, out_dir: str | Path, work_dir: str | Path, progress: ProgressFn | None = None,
               command: str = "") -> TuningOutcome:
    """Train every run of the grid that has not finished (``tuning.workers`` at once), read them back, choose,
    and write ``tuning.json``, ``tuning.md`` and ``best.toml``."""
    say = progress or (lambda _message: None)
    out = ensure_writable_dir(out_dir)
    work = ensure_writable_dir(work_dir)
    parallel = tuning.workers > 1 and len(tuning.runs) > 1
    threads = (tuning.threads or 1) if parallel else tuning.threads
    pending = {}
    for settings, config in tuning.runs:
        folder = work / run_folder(settings)
        if _finished(folder, config.epochs):
            say(f"{folder.name}: trained earlier")
        else:
            say(f"{folder.name}: training")
            pending[folder.name] = (config, str(folder), threads)
    run_side_by_side(tuning.workers, _train_one, pending)
    rows = [read_run(work / run_folder(settings), settings, tuning.select) for settings, _ in tuning.runs]
    chosen = choose(rows, tuning.min_clean)
    made_by = command or f"midbench tune --config {tuning.path.as_posix()}"
    document = {"schema": "midbench.tuning/1", "name": tuning.name, "made_by": made_by, "select": tuning.select,
                "min_clean": tuning.min_clean, "grid": list(tuning.keys), "split": "validation slice of the "
                "training split (the training loop's held-out examples); no test image is used",
                "runs": rows, "chosen": chosen}
    atomic_write_json(out / TUNING_FILE, document)
    atomic_write_text(out / TABLE_FILE, tuning_table(document))
    files = [out / TUNING_FILE, out / TABLE_FILE]
    if chosen is not None:
        recipe = tuning.runs[chosen][1].to_dict()
        recipe = {key: value for key, value in recipe.items() if key not in ("out", "resume")}
        atomic_write_text(out / BEST_FILE, f"# The recipe chosen by `{made_by}` ({tuning.select} on the "
                                           f"validation slice; {TUNING_FILE}).\n" + config_to_toml(recipe))
        files.append(out / BEST_FILE)
    elif (out / BEST_FILE).exists():
        (out / BEST_FILE).unlink()  # an earlier choice no longer holds
    return TuningOutcome(files, rows, chosen)


def _train_one(config: TrainConfig, folder: str, threads: int | None) -> None:
    """Train (or resume) one run of the grid. Also the job of a worker process."""
    import torch

    from midbench.paths import TRAIN_STATE_FILE
    from midbench.training import train

    if threads is not None:
        torch.set_num_threads(threads)
    train(config, folder, resume=(Path(folder) / TRAIN_STATE_FILE).exists(), progress=False)


def _finished(folder: Path, epochs: int) -> bool:
    records = _records(folder)
    return (folder / "model.safetensors").is_file() and (
        len(records) >= epochs or any("stopped_early" in record for record in records))


def _records(folder: Path) -> list[dict[str, Any]]:
    log = folder / "log.jsonl"
    if not log.is_file():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]


def read_run(folder: Path, settings: dict[str, Any], select: str) -> dict[str, Any]:
    """One row of the table: a finished run's figures at the epoch whose weights ``model.safetensors`` holds.

    Raises:
        UsageError: ``select`` is not a key of the run's log (the message lists the keys there are).
    """
    from midbench.evaluation.sanity import training_flags

    records = _records(folder)
    stopped = next((record["stopped_early"] for record in records if "stopped_early" in record), None)
    kept = stopped["best_epoch"] if stopped else records[-1]["epoch"]
    record = next(record for record in records if record["epoch"] == kept)
    if select not in record:
        available = sorted(key for key, value in record.items() if isinstance(value, int | float))
        raise UsageError(f"[tune] select = {select!r} is not in {folder / 'log.jsonl'}; use one of "
                         f"{', '.join(available)}")
    seconds = sorted(float(r["seconds"]) for r in records if "seconds" in r)
    return {"settings": settings, "folder": folder.name, "epoch": kept, "epochs_trained": len(records),
            "stopped_early": stopped is not None, "val_clean_acc": record.get("val_clean_acc"),
            "select": record[select],
            "flags": [flag["code"] for flag in training_flags(records[-1])],
            "seconds_per_epoch": round(seconds[len(seconds) // 2], 1) if seconds else None}


def choose(rows: list[dict[str, Any]], min_clean: float | None) -> int | None:
    """The index of the chosen row: the highest ``select`` among eligible rows (no flag, held-out clean accuracy
    at least ``min_clean``), ties to the higher clean accuracy, then to the earlier row; None if none is
    eligible."""
    eligible = [index for index, row in enumerate(rows)
                if not row["flags"] and isinstance(row["select"], int | float) and math.isfinite(row["select"])
                and (min_clean is None or (row["val_clean_acc"] or 0.0) >= min_clean)]
    if not eligible:
        return None
    return max(eligible, key=lambda index: (rows[index]["select"], rows[index]["val_clean_acc"] or 0.0, -index))


def tuning_table(document: dict[str, Any]) -> str:
    """``tuning.md``: one row per run, the chosen one marked."""
    keys = document["grid"]
    select = document["select"]
    floor = document["min_clean"]
    lines = [f"# Tuning {document['name']}", "",
             f"Made by `{document['made_by']}`. Chosen: the highest `{select}` on the validation slice of the "
             "training split (no test image is used)" + (f", among runs with held-out clean accuracy ≥ "
                                                         f"{100 * floor:g}%" if floor is not None else "")
             + ", no training flag; ties to the higher clean accuracy.", "",
             "| " + " | ".join([*keys, "epoch kept", f"{select} %", "val clean %", "s/epoch", "flags", "chosen"])
             + " |",
             "|" + "---|" * len(keys) + "---:|---:|---:|---:|---|---|"]
    for index, row in enumerate(document["runs"]):
        clean = row["val_clean_acc"]
        kept = f"{row['epoch']}/{row['epochs_trained']}" + (" (stopped early)" if row["stopped_early"] else "")
        cells = [*(f"{row['settings'][key]!r}" for key in keys), kept, f"{100 * row['select']:.1f}",
                 "—" if clean is None else f"{100 * clean:.1f}",
                 "—" if row["seconds_per_epoch"] is None else f"{row['seconds_per_epoch']:g}",
                 ", ".join(row["flags"]) or "—", "★" if index == document["chosen"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    if document["chosen"] is None:
        lines += ["", "No run is eligible: widen the grid, or lower `min_clean` and say so where the recipe is used."]
    return "\n".join(lines) + "\n"
