"""The options of one evaluation, declared once (docs/architecture.md, "one definition per fact").

The attack selection (:data:`SELECTION_OPTIONS`): ``midbench eval`` takes each as ``--KEY`` and a sweep file's
``[eval]`` table as ``KEY``; :func:`midbench.evaluation.selection.parse_selection` reads them into an
``AttackSelection`` for both. The other options (:data:`RUN_OPTIONS`) are fields of ``EvalConfig``: their help text
and default live here, so that ``midbench eval``, ``EvalConfig`` and a sweep file's ``[eval]`` or ``[models.NAME]``
table cannot drift apart (a test checks all three). Kept free of torch so that the CLI can take its help texts at
import time (``midbench --help`` imports no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from midbench.paths import DEFAULT_RESULTS_DIR


@dataclass(frozen=True)
class SelectionOption:
    """One option of the attack selection: ``midbench eval``'s ``--KEY`` (``-`` for ``_``, or ``flag``) and the key
    of a sweep file's ``[eval]`` table. :data:`SELECTION_OPTIONS` is the one list of them: the sweep file's keys
    and types and the CLI's help text come from it, and a test checks the CLI takes each."""

    key: str
    #: the value's type in a TOML file (checked by :func:`midbench.config.check_types`)
    kind: Any
    help: str
    flag: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.key.replace("_", "-")


SELECTION_OPTIONS: tuple[SelectionOption, ...] = (
    SelectionOption("attacks", list[str], "Attack ids, comma-separated or repeated."),
    SelectionOption("suite", str, "A suite of the attack registry (see `midbench attacks list`)."),
    SelectionOption("known_attacks", bool, "The attacks the model was trained with."),
    SelectionOption("unknown_attacks", bool, "The unknown-attack profile: every threat model (suite unknown-profile) "
                    "over its ladder of strengths, climbed nested; the ones the model was trained on are marked "
                    "seen."),
    SelectionOption("threat_models", list[str], "With unknown attacks: climb only these threat models "
                    "(comma-separated or repeated; see `midbench attacks list`)."),
    SelectionOption("profile_suites", list[str], "With unknown attacks: the suites the profile climbs "
                    "(comma-separated or repeated; default unknown-profile). unknown-profile,unknown-profile-ua adds "
                    "the optimised corruptions (docs/unforeseen.md).", flag="--profile-suite"),
    SelectionOption("autoattack", bool, "Add AutoAttack standard at the dataset's L∞ ε."),
    SelectionOption("eps", list[str | int | float], "ε override: 0.1 or 8/255 (L∞), L2=1.5, L1=10; repeatable."),
    SelectionOption("target", str, "Target policy of every targeted registry attack: random (the entries' "
                    "default), least-likely or fixed:K (the MID release aimed at fixed:0); recorded as id@custom."),
)
#: each option's help text by key (the CLI's)
SELECTION_HELP = {option.key: option.help for option in SELECTION_OPTIONS}


@dataclass(frozen=True)
class RunOption:
    """An option of ``midbench eval`` that is a field of ``EvalConfig`` (``field``, default: ``key``) with this
    help text and default; ``table`` names the sweep file's table that takes it as ``key`` (``eval``, or
    ``models`` for the model options of ``[models.NAME]``), or None where a sweep sets it itself."""

    key: str
    kind: Any
    help: str
    default: Any = None
    table: str | None = None
    field: str | None = None
    #: ``midbench eval`` takes it as its argument, not as ``--KEY``
    positional: bool = False

    @property
    def cli_flag(self) -> str:
        return self.key if self.positional else "--" + self.key.replace("_", "-")

    @property
    def config_field(self) -> str:
        return self.field or self.key


_ZOO = "With --model robustbench:NAME: "
RUN_OPTIONS: tuple[RunOption, ...] = (
    RunOption("checkpoint", str, "A midbench .safetensors checkpoint, or a plain state dict with --arch (omit with "
              "--model).", table="models", positional=True),
    RunOption("arch", str, "Architecture of a plain PyTorch state dict.", table="models"),
    RunOption("model", str, "Your own classifier: module:factory returning an nn.Module (inputs in [0,1], logits "
              "out); needs --dataset. Imports and runs that module's code.", table="models", field="model_spec"),
    RunOption("weights", str, "With --model: a state dict to load into it (torch.save, loaded with "
              "weights_only=True, or .safetensors).", table="models"),
    RunOption("zoo_threat_model", str, _ZOO + "the RobustBench list the entry is from (Linf, L2, corruptions); not "
              "a threat model of midbench's registry.", default="Linf", table="models"),
    RunOption("model_dir", str, _ZOO + "RobustBench's weights folder, <model-dir>/<dataset>/<threat model>/<NAME>.pt "
              "(default ./models); --download fetches missing ones.", table="models"),
    RunOption("normalize", str, "For a model that expects normalised input: put (x - mean) / std in front of it, "
              "mean then std per channel, comma-separated (0.1307,0.3081 for one channel), or 'dataset' for the "
              "dataset's own; attacks still work in [0, 1] (docs/api.md, Adapters).", table="models"),
    RunOption("output", str, "For a model that returns a tuple, list or dict: the index or key of its logits "
              "(e.g. 0 or logits).", table="models"),
    RunOption("n_examples", int, "Evaluate the first N test examples.", table="eval"),
    RunOption("batch_size", int, "Attack batch size.", default=256, table="eval"),
    RunOption("results_dir", str, "Where result files go.", default=str(DEFAULT_RESULTS_DIR)),
    RunOption("name", str, "Name of the model in tables (default: from the checkpoint)."),
    RunOption("seed", int, "Evaluation seed.", default=0),
    RunOption("data_dir", str, "Root of torchvision datasets."),
    RunOption("download", bool, "Download a torchvision dataset into --data-dir.", default=False),
    RunOption("check_eps", bool, "Sanity sweep: PGD-L∞ at 0.25, 0.5 and 1 × ε on up to 256 examples; flags "
              "accuracy rising with ε.", default=False),
    RunOption("check_steps", bool, "Sanity sweep: PGD-L∞ with 10, 40 and 160 steps on up to 256 examples; flags "
              "accuracy rising with steps.", default=False),
    RunOption("transfer_cache", bool, "Under --protocol transfer: keep the adversarial images crafted on the source "
              "and reuse them in later evaluations through the same source (same numbers; docs/evaluation.md).",
              default=True),
    RunOption("transfer_cache_dir", str, "The transfer cache's folder (default RESULTS_DIR/transfer-cache)."),
    RunOption("restart", bool, "Discard an interrupted evaluation's state (of the same --name and --protocol) "
              "instead of resuming it.", default=False),
)
#: each run option's help text and default by key (the CLI's and ``EvalConfig``'s)
RUN_HELP = {option.key: option.help for option in RUN_OPTIONS}
RUN_DEFAULT = {option.key: option.default for option in RUN_OPTIONS}


def table_keys(table: str) -> list[tuple[str, Any]]:
    """The keys a sweep file's ``[eval]`` (``eval``) or ``[models.NAME]`` (``models``) table takes, with their
    TOML types: the run options of that table, then (for ``eval``) every attack-selection option."""
    keys = [(option.key, option.kind) for option in RUN_OPTIONS if option.table == table]
    return keys + ([(option.key, option.kind) for option in SELECTION_OPTIONS] if table == "eval" else [])


def cli_flag(key: str) -> str:
    """``midbench eval``'s flag of the option ``key`` (e.g. ``--profile-suite`` for ``profile_suites``)."""
    return next(option.cli_flag for option in SELECTION_OPTIONS if option.key == key)
