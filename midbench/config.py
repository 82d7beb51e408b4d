"""Run configurations as frozen dataclasses, TOML loading, and parsing of user-given numbers.

Precedence: command-line options > ``--config FILE.toml`` > the defaults below.
"""

from __future__ import annotations

import math
import re
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from midbench._toml import tomllib
from midbench.errors import UsageError

#: learning-rate schedules of the training loop (midbench.training.loop.build_scheduler)
SCHEDULES = ("constant", "piecewise", "cosine", "cyclic")
_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+))?\s*$")


def parse_eps(text: str | float, norm: str = "Linf") -> float:
    """Parse an ε such as ``0.3``, ``8/255`` or ``2.0``.

    Raises:
        UsageError: not a number, negative, or an L∞ ε above 1 (ε on the 0–255 scale; use e.g. 8/255).
    """
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _FRACTION.match(str(text))
        if not match:
            raise UsageError(f"ε must be a non-negative number or a fraction like 8/255, got {text!r}")
        denominator = float(match[2]) if match[2] else 1.0
        if denominator == 0:
            raise UsageError(f"ε {text!r} divides by zero")
        value = float(match[1]) / denominator
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"ε must be a non-negative finite number, got {text!r}")
    if norm == "Linf" and value > 1:
        raise UsageError(f"L∞ ε {text} is larger than 1: inputs are in [0, 1], so give ε on that scale "
                         f"(e.g. 8/255 instead of 8)")
    return value


def parse_betas(text: str, option: str = "--adam-betas") -> tuple[float, float]:
    """Adam's ``"b1,b2"``, each in [0, 1).

    Raises:
        UsageError: not two numbers, or one outside [0, 1).
    """
    parts = [part.strip() for part in str(text).split(",")]
    try:
        betas = tuple(float(part) for part in parts)
    except ValueError:
        betas = ()
    if len(betas) != 2 or not all(math.isfinite(b) and 0 <= b < 1 for b in betas):
        raise UsageError(f"{option} must be two numbers in [0, 1) such as 0.9,0.999, got {text!r}")
    return betas[0], betas[1]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (recorded in the checkpoint and ``config.toml``)."""

    method: str = "standard"
    #: the method's own options, ``NAME=VALUE`` pairs separated by commas (a task's ``Options`` dataclass; e.g.
    #: a user's ``--method module:Class``)
    method_options: str | None = None
    dataset: str = "mnist5k"
    arch: str = "lenet"
    epochs: int = 5
    batch_size: int = 128
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    #: Adam's (β1, β2), as "b1,b2" (torch's default; the MID release's teacher used 0.9,0.99)
    adam_betas: str = "0.9,0.999"
    schedule: str = "constant"
    #: extra attack-registry folders (comma-separated), as ``midbench eval --registry-dir``: training attacks,
    #: threat models and MID's pool may be defined there
    registry_dirs: str | None = None
    #: training attack of adversarial methods: a registry id, plus optional overrides
    train_attack: str = "pgd-linf"
    #: a number or a fraction such as "8/255" (parsed with the training attack's norm)
    eps: float | str | None = None
    attack_steps: int | None = None
    attack_step_size: float | None = None
    #: held-out slice of the training split for per-epoch clean/PGD accuracy (not trained on)
    val_size: int = 200
    val_pgd_steps: int = 10
    #: use only the first N training examples (after the held-out slice); None = all
    n_train: int | None = None
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    data_dir: str | None = None
    download: bool = False
    # --- MID (method "mid"; see midbench.defenses.mid and the design page mid.md) ---
    #: Attacker Pool: a suite name or comma-separated registry ids (default: the mid-mnist-known suite)
    pool: str | None = None
    #: which model the pool attacks: "source" (paper), "teacher", or "student" (online, adaptive)
    attack_source: str = "source"
    #: regenerate the cached pool examples every N epochs (fixed attack source only)
    refresh_every: int = 1
    first_order: bool = False
    #: ablation: plain multi-attack distillation, no held-out task and no inner step
    no_meta: bool = False
    lc_weight: float = 1.0
    ac_weight: float = 1.5
    cc_weight: float = 0.8
    #: step size α of the functional inner update
    inner_lr: float = 1e-4
    #: reuse a trained source model / teacher checkpoint instead of training them in <out>/source, <out>/teacher
    source: str | None = None
    teacher: str | None = None
    #: epochs of the source and teacher stages (fixed, so extending --epochs on --resume leaves them alone)
    source_epochs: int = 10
    teacher_epochs: int = 10
    #: per-stage settings of the source and teacher stages; None = the run's own --lr, --batch-size, --adam-betas
    #: (the release trained the source at lr 1e-3, the teacher at lr 1e-4 with betas 0.9,0.99, both at batch 256)
    source_lr: float | None = None
    teacher_lr: float | None = None
    source_batch_size: int | None = None
    teacher_batch_size: int | None = None
    source_adam_betas: str | None = None
    teacher_adam_betas: str | None = None
    #: student encoder initialisation: "random" (paper) or "teacher"
    student_init: str = "random"
    #: draw the held-out meta-test task from the clean task too (as the release may); default: attacks only
    meta_test_clean: bool = False
    #: run the meta-train tasks through each module as one batch (same losses; faster where per-call overhead
    #: dominates, e.g. a GPU; measured slower on a CPU, docs/performance.md P6); never with BatchNorm in training
    batch_tasks: bool = False
    #: target policy of the pool's targeted attacks (e.g. "fixed:0", the release's); None = the registry's (random)
    pool_target: str | None = None
    #: λ_rec, the weight of the teacher's reconstruction loss
    rec_weight: float = 1.0
    # --- adversarial-training baselines (trades, mart, fast-at, msd/avg/max; midbench.defenses) ---
    #: β, the weight of the robustness (KL) term of TRADES and MART
    beta: float = 6.0
    #: msd/avg/max: comma-separated registry ids of the threat models, each at the dataset's ε for its norm
    threat_models: str = "pgd-linf,pgd-l2,pgd-l1"
    #: fast-at: the FGSM step size α (absolute); None = 1.25ε (Wong, Rice & Kolter 2020)
    fast_at_step: float | None = None
    #: fast-at: stop when the held-out PGD accuracy falls more than this (absolute) below its best so far
    overfit_drop: float = 0.2

    def validate(self) -> TrainConfig:
        """Check numeric ranges early, before any data is loaded."""
        if self.epochs < 1:
            raise UsageError(f"--epochs must be at least 1, got {self.epochs}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise UsageError(f"--lr must be positive, got {self.lr}")
        # torch's optimisers reject these with a bare ValueError (an internal error, exit 1) after data loading
        for name in ("weight_decay", "momentum"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"--{name.replace('_', '-')} must be a non-negative number, got {value}")
        if self.val_pgd_steps < 1:
            raise UsageError(f"val_pgd_steps must be at least 1, got {self.val_pgd_steps}")
        if self.pool is not None and not [name for name in self.pool.split(",") if name.strip()]:
            raise UsageError("--pool is empty; give a suite (e.g. mid-mnist-known) or comma-separated attack ids, "
                             "or leave it out for the default pool")
        if self.attack_steps is not None and self.attack_steps < 1:
            raise UsageError(f"--attack-steps must be at least 1, got {self.attack_steps}")
        if self.val_size < 0 or (self.n_train is not None and self.n_train < 1):
            raise UsageError("--val-size must be ≥ 0 and --n-train ≥ 1")
        for name in ("adam_betas", "source_adam_betas", "teacher_adam_betas"):
            if getattr(self, name) is not None:
                parse_betas(getattr(self, name), "--" + name.replace("_", "-"))
        for name in ("source_lr", "teacher_lr"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
        for name in ("source_batch_size", "teacher_batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if self.pool_target is not None:
            from midbench.attacks.base import check_target_policy

            check_target_policy(self.pool_target)
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown optimizer {self.optimizer!r}; use sgd or adam")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}; use constant, piecewise, cosine or cyclic")
        if self.attack_source not in ("source", "teacher", "student"):
            raise UsageError(f"unknown --attack-source {self.attack_source!r}; use source, teacher or student")
        if self.student_init not in ("random", "teacher"):
            raise UsageError(f"unknown --student-init {self.student_init!r}; use random or teacher")
        if self.refresh_every < 1:
            raise UsageError(f"--refresh-every must be at least 1, got {self.refresh_every}")
        for name in ("lc_weight", "ac_weight", "cc_weight", "inner_lr", "rec_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"--{name.replace('_', '-')} must be a non-negative number, got {value}")
        for name in ("source_epochs", "teacher_epochs"):
            value = getattr(self, name)
            if value < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        if not (math.isfinite(self.beta) and self.beta >= 0):
            raise UsageError(f"--beta must be a non-negative number, got {self.beta}")
        if not [name for name in self.threat_models.split(",") if name.strip()]:
            raise UsageError("--threat-models needs at least one attack id, e.g. pgd-linf,pgd-l2,pgd-l1")
        if self.fast_at_step is not None and not (math.isfinite(self.fast_at_step) and self.fast_at_step > 0):
            raise UsageError(f"--fast-at-step must be a positive number, got {self.fast_at_step}")
        if not (math.isfinite(self.overfit_drop) and 0 < self.overfit_drop <= 1):
            raise UsageError(f"--overfit-drop is an accuracy drop in (0, 1], got {self.overfit_drop}")
        if self.eps is not None:
            parse_eps(self.eps, norm="any")  # the training attack's own norm is checked when it is resolved
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fingerprint(self) -> dict[str, Any]:
        """The fields that must match for ``--resume``: all but device and data location, and the epoch count
        unless a schedule depends on it (a constant-rate run may be extended)."""
        free = {"device", "data_dir", "download"} | ({"epochs"} if self.schedule == "constant" else set())
        return {k: v for k, v in asdict(self).items() if k not in free}

    def may_resume(self, stored: dict[str, Any]) -> bool:
        """Whether a run whose state recorded the fingerprint ``stored`` may be resumed with this config: every
        recorded field must match, and a field the state does not record (added to midbench after the run
        started) must be at its default — so that upgrading midbench does not strand a half-finished run."""
        current = self.fingerprint()
        defaults = asdict(TrainConfig())
        return (set(stored) <= set(current)
                and all(current[key] == value for key, value in stored.items())
                and all(current[key] == defaults[key] for key in set(current) - set(stored)))


def load_config_file(path: str | Path, section: str) -> dict[str, Any]:
    """Read table ``[section]`` (or the top level) of a TOML file, with kebab-case keys normalised."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise UsageError(f"config file not found: {path}") from error
    except tomllib.TOMLDecodeError as error:
        raise UsageError(f"{path}: not valid TOML ({error})") from error
    table = document.get(section, document)
    return {key.replace("-", "_"): value for key, value in table.items() if not isinstance(value, dict)}


def merge_config(defaults: TrainConfig, file_values: dict[str, Any], cli_values: dict[str, Any]) -> TrainConfig:
    """Apply ``file_values`` then the non-None ``cli_values`` over ``defaults``."""
    known = {f.name for f in fields(defaults)}
    unknown = set(file_values) - known
    if unknown:
        raise UsageError(f"unknown config key(s) {sorted(unknown)}; known: {', '.join(sorted(known))}")
    check_types(file_values, type(defaults))
    merged = replace(defaults, **file_values)
    return replace(merged, **{k: v for k, v in cli_values.items() if v is not None})


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_types(values: dict[str, Any], config_class: type) -> None:
    """Refuse values of the wrong type in a config file (``epochs = "10"``) with a usage error, instead of a
    crash later. An int is accepted where a float is expected; a bool is never taken for a number.

    Raises:
        UsageError: names the key, the expected type and the value.
    """
    hints = typing.get_type_hints(config_class)
    for key, value in values.items():
        expected = tuple(t for t in typing.get_args(hints[key]) or (hints[key],) if t is not type(None))
        if value is None and len(expected) < len(typing.get_args(hints[key]) or (hints[key],)):
            continue
        if float in expected and isinstance(value, int) and not isinstance(value, bool):
            continue
        if isinstance(value, bool) != (bool in expected) or not isinstance(value, expected):
            names = " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in expected)
            raise UsageError(f"config key {key!r} must be {names}, got {value!r}")


def config_to_toml(config: dict[str, Any], section: str = "train") -> str:
    """Render a flat config dict as TOML (None values are omitted: TOML has no null)."""
    lines = [f"[{section}]"]
    for key, value in config.items():
        if value is None:
            continue
        if isinstance(value, bool):
            rendered = "true" if value else "false"
        elif isinstance(value, int | float):
            rendered = repr(value)
        else:
            rendered = '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
        lines.append(f"{key} = {rendered}")
    return "\n".join(lines) + "\n"
