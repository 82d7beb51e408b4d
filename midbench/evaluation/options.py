"""The options of the attack selection, declared once (docs/architecture.md, "one definition per fact").

``midbench eval`` takes each as ``--KEY`` and a sweep file's ``[eval]`` table as ``KEY``;
:func:`midbench.evaluation.selection.parse_selection` reads them into an ``AttackSelection`` for both. Kept free of
torch so that the CLI can take its help texts at import time (``midbench --help`` imports no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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


def cli_flag(key: str) -> str:
    """``midbench eval``'s flag of the option ``key`` (e.g. ``--profile-suite`` for ``profile_suites``)."""
    return next(option.cli_flag for option in SELECTION_OPTIONS if option.key == key)
