"""Which attacks an evaluation runs, and whether each is *known* or *unknown* to the model (docs/evaluation.md).

A checkpoint records the attacks it was trained with, fully resolved. An attack is *known* when it equals one
of them by specification (implementation, family, norm, target policy, ε and hyper-parameters), whatever its
name; every other attack is *unknown*.

``--unknown-attacks`` climbs the unknown-attack profile (every threat model over its ladder of strengths,
:mod:`midbench.evaluation.profile`) rather than adding attacks to the list; the broad single-strength suite it
used to run is ``--suite default-unknown``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from midbench.attacks.plans import PROFILE_SUITE
from midbench.attacks.specs import AttackRegistry, ResolvedAttack
from midbench.config import parse_eps
from midbench.errors import UsageError
from midbench.protocols import AUTOATTACK_ENTRY

#: the broad single-strength suite of unknown attacks (``--suite default-unknown``)
UNKNOWN_SUITE = "default-unknown"


@dataclass(frozen=True)
class AttackSelection:
    """What the user asked to run (CLI options of ``midbench eval``)."""

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

    @property
    def empty(self) -> bool:
        return not (self.attacks or self.suite or self.known or self.unknown or self.autoattack)


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
