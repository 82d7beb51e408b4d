"""Which attacks an evaluation runs, and whether each is *known* or *unknown* to the model (evaluation.md).

A checkpoint records the attacks it was trained with, fully resolved. An attack is *known* when it equals one
of them by specification (implementation, family, norm, target policy, ε and hyper-parameters), whatever its
name; every other attack is *unknown*.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from midbench.attacks.specs import AttackRegistry, ResolvedAttack
from midbench.config import parse_eps
from midbench.errors import UsageError

UNKNOWN_SUITE = "default-unknown"


@dataclass(frozen=True)
class AttackSelection:
    """What the user asked to run (CLI options of ``midbench eval``)."""

    attacks: tuple[str, ...] = ()
    suite: str | None = None
    known: bool = False
    unknown: bool = False
    autoattack: bool = False
    eps: dict[str, float] = field(default_factory=dict)
    #: climb the unknown-attack profile (every threat model over its strength ladder; midbench.evaluation.profile)
    profile: bool = False

    @property
    def empty(self) -> bool:
        return not (self.attacks or self.suite or self.known or self.unknown or self.autoattack or self.profile)


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


def split_of(attack: ResolvedAttack, train_attacks: list[ResolvedAttack]) -> str:
    """``known`` if ``attack`` equals a training attack by specification, else ``unknown``."""
    signature = attack.equivalence()
    return "known" if any(signature == known.equivalence() for known in train_attacks) else "unknown"


def select_attacks(selection: AttackSelection, registry: AttackRegistry, dataset_eps: dict[str, float],
                   train_attacks: list[ResolvedAttack]) -> list[tuple[ResolvedAttack, str]]:
    """Resolve the selection into (attack, split) pairs, duplicates (by specification) removed.

    With nothing selected, runs the known attacks and the unknown suite. ``--eps`` overrides apply to
    registry attacks; known attacks run exactly as recorded in the checkpoint.
    """
    if selection.empty:
        selection = AttackSelection(known=True, unknown=True, eps=selection.eps)

    def resolve(attack_id: str) -> ResolvedAttack:
        spec = registry.get(attack_id)
        override = selection.eps.get(spec.norm.value) if spec.norm else None
        attack = spec.resolve(dataset_eps, override)
        default = spec.resolve(dataset_eps)
        # a changed ε is a changed configuration: record it as custom, never under the entry's id@version
        return attack if attack.equivalence() == default.equivalence() else replace(attack, version=0)

    chosen: list[ResolvedAttack] = []
    if selection.known:
        chosen.extend(train_attacks)
    chosen.extend(resolve(attack_id) for attack_id in selection.attacks)
    if selection.suite:
        chosen.extend(resolve(spec.id) for spec in registry.suite(selection.suite))
    if selection.unknown:
        chosen.extend(attack for attack in (resolve(spec.id) for spec in registry.suite(UNKNOWN_SUITE))
                      if split_of(attack, train_attacks) == "unknown")
    if selection.autoattack:
        chosen.append(resolve("autoattack-linf"))
    unique: dict[str, ResolvedAttack] = {}
    for attack in chosen:
        unique.setdefault(attack.equivalence(), attack)
    return [(attack, split_of(attack, train_attacks)) for attack in unique.values()]
