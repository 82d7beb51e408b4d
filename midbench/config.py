"""The training run's configuration (``TrainConfig``, a frozen dataclass), configuration files (TOML loading, type
checks) and ``--method-option`` pairs. ε as users write it is parsed by :mod:`midbench.budgets`.

Precedence: command-line options > ``--config FILE.toml`` > the defaults below.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from pathlib import Path
from typing import Any

from midbench._toml import tomllib
from midbench.budgets import parse_eps
from midbench.errors import UsageError
from midbench.fileio import safe_file_name


class Optimizer(str, Enum):
    """``--optimizer``."""

    ADAM = "adam"
    SGD = "sgd"


class Schedule(str, Enum):
    """``--schedule``: learning-rate schedules of the training loop (midbench.training.loop.build_scheduler)."""

    CONSTANT = "constant"
    PIECEWISE = "piecewise"
    COSINE = "cosine"
    CYCLIC = "cyclic"


OPTIMIZERS = tuple(member.value for member in Optimizer)
SCHEDULES = tuple(member.value for member in Schedule)
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
    #: ε warm-up: epoch e of the first W trains against the training attacks at e/W of their budget (ε and any
    #: other budget parameter, step sizes with it), full from epoch W on; 0 = full from the first epoch. The
    #: checkpoint records the full-budget attacks (docs/baselines.md, "ε warm-up")
    eps_warmup: int = 0
    #: held-out slice of the training split for per-epoch clean/PGD accuracy (not trained on)
    val_size: int = 200
    val_pgd_steps: int = 10
    #: use only the first N training examples (after the held-out slice); None = all
    n_train: int | None = None
    seed: int = 0
    device: str = "auto"
    bf16: bool = False
    #: NHWC memory layout for the model and the batches: faster convolutions on tensor-core GPUs (with bf16)
    channels_last: bool = False
    data_dir: str | None = None
    download: bool = False
    #: the method's own options by name (fields of its ``Options`` dataclass, midbench.defenses.options), as
    #: given; the method checks and completes them when the run is built, and the training loop records them all
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, **values: Any) -> TrainConfig:
        """A config from flat values as a config file holds them: shared keys and the method's options side by
        side (``TrainConfig.of(method="trades", beta=3.0, epochs=10)``)."""
        return merge_config(cls(), values, {})

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
        if self.attack_steps is not None and self.attack_steps < 1:
            raise UsageError(f"--attack-steps must be at least 1, got {self.attack_steps}")
        if self.eps_warmup < 0 or self.eps_warmup > self.epochs:
            raise UsageError(f"--eps-warmup must be between 0 and --epochs ({self.epochs}), got {self.eps_warmup}")
        if self.val_size < 0 or (self.n_train is not None and self.n_train < 1):
            raise UsageError("--val-size must be ≥ 0 and --n-train ≥ 1")
        parse_betas(self.adam_betas, "--adam-betas")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(f"unknown optimizer {self.optimizer!r}; use {' or '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}; use {', '.join(SCHEDULES)}")
        if self.eps is not None:
            parse_eps(self.eps, norm="any")  # the training attack's own norm is checked when it is resolved
        return self

    def default_out(self) -> Path:
        """Where a run goes without ``--out``: ``runs/<method>-<arch>-<dataset>``, one file-name component (a
        ``folder:PATH`` dataset's slashes and colon become ``-``)."""
        return Path("runs") / safe_file_name(f"{self.method}-{self.arch}-{self.dataset}")

    def attack_scale(self, epoch: int) -> float:
        """The fraction of its training attacks' budget epoch ``epoch`` (from 1) trains against: ``epoch / W``
        during an ε warm-up of W epochs (``eps_warmup``), else 1."""
        return 1.0 if self.eps_warmup == 0 else min(1.0, epoch / self.eps_warmup)

    def to_dict(self) -> dict[str, Any]:
        """The config as one flat table, the method's options beside the shared keys (as in a config file)."""
        values = asdict(self)
        return {**{key: value for key, value in values.items() if key != "options"}, **values["options"]}

    def with_options(self, options: dict[str, Any]) -> TrainConfig:
        """This config with the method's options replaced (the training loop records the completed set)."""
        return replace(self, options=dict(options))

    def fingerprint(self) -> dict[str, Any]:
        """The fields that must match for ``--resume``: all but device and data location, and the epoch count
        unless a schedule depends on it (a constant-rate run may be extended)."""
        free = {"device", "data_dir", "download"} | ({"epochs"} if self.schedule == "constant" else set())
        return {k: v for k, v in self.to_dict().items() if k not in free}

    def may_resume(self, stored: dict[str, Any], option_defaults: dict[str, Any]) -> bool:
        """Whether a run whose state recorded the fingerprint ``stored`` may be resumed with this config.

        Every recorded key this config also has must match; a key the state does not record (added to midbench
        or to the method after the run started) must be at its default (``option_defaults`` for the method's
        options), so that upgrading midbench does not strand a half-finished run. Recorded keys this config
        does not have are other methods' options (states written before methods owned their options recorded
        every method's) and cannot have influenced this run.
        """
        current = self.fingerprint()
        defaults = {**TrainConfig().to_dict(), **option_defaults}
        return (all(current[key] == value for key, value in stored.items() if key in current)
                and all(current[key] == defaults.get(key) for key in set(current) - set(stored)))


class OptionText(str):
    """An option's value as text from ``--method-option NAME=VALUE``: the method converts it to the option's
    type (a value from a TOML file or a typed command-line option must already have that type)."""


#: the keys every method shares (all but ``options``)
SHARED_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name != "options")
#: a ``NAME=VALUE`` pair of ``--method-option`` begins at a comma followed by a name and "="
_OPTION_PAIR_START = re.compile(r",(?=\s*[A-Za-z_][\w-]*\s*=)")


def parse_option_pairs(items: str | list[str] | None) -> dict[str, OptionText]:
    """``--method-option`` values (``NAME=VALUE``, several per item separated by commas; a value may itself
    contain commas, e.g. ``threat_models=pgd-linf,pgd-l2``) as a name-to-text mapping.

    Raises:
        UsageError: an item that is not ``NAME=VALUE``.
    """
    pairs: dict[str, str] = {}
    for item in [items] if isinstance(items, str) else items or []:
        for pair in _OPTION_PAIR_START.split(item):
            if not pair.strip():
                continue
            name, sep, value = pair.partition("=")
            if not sep or not name.strip():
                raise UsageError(f"--method-option {pair.strip()!r}: write NAME=VALUE, e.g. beta=6")
            pairs[name.strip().replace("-", "_")] = OptionText(value.strip())
    return pairs


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


def split_values(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split config values into the shared keys and the method's options: every key that is not shared is an
    option (checked against the method when the run is built), and ``method_options`` pairs are options too."""
    shared = {key: value for key, value in values.items() if key in SHARED_KEYS}
    options = {key: value for key, value in values.items()
               if key not in SHARED_KEYS and key not in ("options", "method_options")}
    options.update(parse_option_pairs(values.get("method_options")))
    options.update(values.get("options") or {})
    return shared, options


def merge_config(defaults: TrainConfig, file_values: dict[str, Any], cli_values: dict[str, Any]) -> TrainConfig:
    """Apply ``file_values`` then the non-None ``cli_values`` over ``defaults``; keys that are not shared by every
    method become the method's options."""
    file_shared, file_options = split_values(file_values)
    check_types(file_shared, type(defaults))
    cli_shared, cli_options = split_values({k: v for k, v in cli_values.items() if v is not None})
    cli_options = {k: v for k, v in cli_options.items() if v is not None}
    merged = replace(replace(defaults, **file_shared), **cli_shared)
    return merged.with_options({**defaults.options, **file_options, **cli_options})


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def check_types(values: dict[str, Any], config_class: type,
                label: Callable[[str], str] = lambda key: f"config key {key!r}") -> None:
    """Refuse values of the wrong type in a config file (``epochs = "10"``) with a usage error, instead of a
    crash later. An int is accepted where a float is expected; a bool is never taken for a number; a
    ``list[str]`` field takes a list of strings. ``label`` names a key in the message (a method's options are
    named by their flag, ``--beta``).

    Raises:
        UsageError: names the key, the expected type and the value.
    """
    hints = typing.get_type_hints(config_class)
    for key, value in values.items():
        kinds = _alternatives(hints[key])
        if value is None and type(None) in kinds:
            continue
        expected = tuple(kind for kind in kinds if kind is not type(None))
        if not any(_matches(value, kind) for kind in expected):
            names = " or ".join(type_name(kind) for kind in expected)
            raise UsageError(f"{label(key)} must be {names}, got {value!r}")


def _alternatives(hint: Any) -> tuple[Any, ...]:
    """The members of a union (``int | None`` → ``(int, NoneType)``), or the hint itself."""
    return typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)


def _matches(value: Any, kind: Any) -> bool:
    if typing.get_origin(kind) is list:
        items = _alternatives(typing.get_args(kind)[0])
        return isinstance(value, list) and all(any(_matches(item, k) for k in items) for item in value)
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, kind) or (kind is float and isinstance(value, int))


def type_name(kind: Any) -> str:
    """How a message names a type: ``an integer``, ``a number``, ``a list of strings``."""
    if typing.get_origin(kind) is list:
        return "a list of " + " or ".join(type_name(k).split(" ", 1)[-1] + "s" for k in
                                          _alternatives(typing.get_args(kind)[0]))
    return _TYPE_NAMES.get(kind, getattr(kind, "__name__", str(kind)))


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
