"""Which attacks an evaluation runs, and whether each is *known* or *unknown* to the model (docs/evaluation.md).

A checkpoint records the attacks it was trained with, fully resolved. An attack is *known* when it equals one
of them by specification (implementation, family, norm, target policy, ε and hyper-parameters), whatever its
name; every other attack is *unknown*.

``--unknown-attacks`` climbs the unknown-attack profile (every threat model over its ladder of strengths,
:mod:`midbench.evaluation.profile`) rather than adding attacks to the list; the broad single-strength suite it
used to run is ``--suite default-unknown``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from midbench.attacks.plans import PROFILE_SUITE
from midbench.attacks.specs import AttackRegistry, ResolvedAttack
from midbench.budgets import parse_eps
from midbench.errors import UsageError
from midbench.evaluation.options import SELECTION_HELP, cli_flag
from midbench.protocols import AUTOATTACK_ENTRY

#: the broad single-strength suite of unknown attacks (``--suite default-unknown``)
UNKNOWN_SUITE = "default-unknown"


@dataclass(frozen=True)
class AttackSelection:
    """What the user asked to run (:data:`SELECTION_OPTIONS`, read by :func:`parse_selection`)."""

    attacks: tuple[str, ...] = ()
    suite: str | None = None
    known: bool = False
    #: climb the unknown-attack profile (every threat model over its strength ladder; midbench.evaluation.profile)
    unknown: bool = False
    autoattack: bool = False
    eps: dict[str, float] = field(default_factory=dict)
    #: target policy of every targeted registry attack (``--target``, e.g. ``fixed:0``); None = the entry's own
    target: str | None = None
    #: the suites whose attacks the profile climbs (``--profile-suite``): the ranked ``unknown-profile`` by
    #: default, ``unknown-profile-ua`` adds the optimised corruptions (docs/unforeseen.md)
    profile_suites: tuple[str, ...] = (PROFILE_SUITE,)
    #: climb only these threat models of the profile (``--threat-models``); empty: every one of the suites'
    threat_models: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.attacks or self.suite or self.known or self.unknown or self.autoattack)


def parse_selection(values: Mapping[str, Any]) -> AttackSelection:
    """The selection from option values keyed as :data:`SELECTION_OPTIONS` (absent or None: the default), as
    ``midbench eval`` and a sweep's ``[eval]`` give them: a list may hold comma-separated text, ε values are
    parsed, the target policy is checked.

    Raises:
        UsageError: an unknown key, a bad ε or target policy.
    """
    from midbench.attacks.base import check_target_policy

    unknown = set(values) - set(SELECTION_HELP)
    if unknown:
        raise UsageError(f"unknown attack-selection option(s) {sorted(unknown)}")

    def names(key: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(part.strip() for value in values.get(key) or () for part in str(value).split(",")
                                   if part.strip()))

    target = values.get("target")
    return AttackSelection(attacks=names("attacks"), suite=values.get("suite"),
                           known=bool(values.get("known_attacks")), unknown=bool(values.get("unknown_attacks")),
                           autoattack=bool(values.get("autoattack")), eps=parse_eps_overrides(list(names("eps"))),
                           target=check_target_policy(target) if target is not None else None,
                           profile_suites=names("profile_suites") or (PROFILE_SUITE,),
                           threat_models=names("threat_models"))


def check_profile_options(selection: AttackSelection, spelled: Callable[[str], str] = cli_flag) -> None:
    """Refuse profile options without the profile: ``threat_models`` and ``profile_suites`` choose what the
    unknown-attack profile climbs. ``spelled`` names an option by its key as the caller's user wrote it (the CLI's
    flag by default; a sweep file's key).

    Raises:
        UsageError: such an option without unknown attacks.
    """
    if with_defaults(selection).unknown:
        return
    for key, given in (("threat_models", bool(selection.threat_models)),
                       ("profile_suites", selection.profile_suites != (PROFILE_SUITE,))):
        if given:
            raise UsageError(f"{spelled(key)} chooses what the unknown-attack profile climbs; add "
                             f"{spelled('unknown_attacks')}")


def parse_eps_overrides(values: list[str]) -> dict[str, float]:
    """``["0.1", "L2=1.5"]`` → ``{"Linf": 0.1, "L2": 1.5}`` (a bare value is the L∞ ε)."""
    from midbench.attacks.norms import parse_norm

    overrides: dict[str, float] = {}
    for value in values:
        norm_text, _, number = value.rpartition("=")
        try:
            norm = parse_norm(norm_text).value if norm_text else "Linf"
        except ValueError as error:
            raise UsageError(f"--eps {value!r}: {error}") from error
        overrides[norm] = parse_eps(number, norm)
    return overrides


def with_defaults(selection: AttackSelection) -> AttackSelection:
    """What an empty selection means: the known attacks and the unknown-attack profile."""
    return replace(selection, known=True, unknown=True) if selection.empty else selection


def split_of(attack: ResolvedAttack, train_attacks: list[ResolvedAttack]) -> str:
    """``known`` if ``attack`` equals a training attack by specification, else ``unknown``."""
    signature = attack.equivalence()
    return "known" if any(signature == known.equivalence() for known in train_attacks) else "unknown"


def select_attacks(selection: AttackSelection, registry: AttackRegistry, dataset_eps: dict[str, float],
                   train_attacks: list[ResolvedAttack]) -> list[tuple[ResolvedAttack, str]]:
    """Resolve the selection into (attack, split) pairs, duplicates (by specification) removed.

    With nothing selected, runs the known attacks (and the profile: :func:`with_defaults`). ``--eps`` and
    ``--target`` overrides apply to registry attacks; known attacks run exactly as recorded in the checkpoint.
    The profile's attacks are not in this list: they run strength by strength
    (:func:`midbench.attacks.plans.profile_plan`).
    """
    selection = with_defaults(selection)

    def resolve(attack_id: str) -> ResolvedAttack:
        spec = registry.get(attack_id)
        override = selection.eps.get(spec.norm.value) if spec.norm else None
        attack = spec.resolve(dataset_eps, override)
        if selection.target is not None and attack.target is not None:
            attack = replace(attack, target=selection.target)
        default = spec.resolve(dataset_eps)
        # a changed ε or target is a changed configuration: record it as custom, never under the entry's id@version
        return attack if attack.equivalence() == default.equivalence() else replace(attack, version=0)

    chosen: list[ResolvedAttack] = []
    if selection.known:
        chosen.extend(train_attacks)
    chosen.extend(resolve(attack_id) for attack_id in selection.attacks)
    if selection.suite:
        chosen.extend(resolve(spec.id) for spec in registry.suite(selection.suite))
    if selection.autoattack:
        chosen.append(resolve(AUTOATTACK_ENTRY))
    unique: dict[str, ResolvedAttack] = {}
    for attack in chosen:
        unique.setdefault(attack.equivalence(), attack)
    return [(attack, split_of(attack, train_attacks)) for attack in unique.values()]
