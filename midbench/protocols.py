"""The evaluation protocols, one closed set for every module that names them.

- ``whitebox``: every attack differentiates through (or queries) the evaluated model itself — the adaptive
  attacker RobustBench and Carlini et al. (2019) require.
- ``transfer``: every attack is crafted on a *source* model and the adversarial images are classified by the
  evaluated model — the protocol of the MID paper (Zhang et al., TPAMI 2024), whose pool is crafted on a fixed
  source model.
"""

from __future__ import annotations

from enum import Enum


class Protocol(str, Enum):
    WHITEBOX = "whitebox"
    TRANSFER = "transfer"


#: the protocol names, white-box first
PROTOCOLS: tuple[str, ...] = tuple(protocol.value for protocol in Protocol)


#: the registry entry of the AutoAttack figure (``--autoattack``, the leaderboard's AutoAttack column):
#: AutoAttack standard (Croce & Hein, ICML 2020) at the dataset's L∞ ε; an L2 run of it is a row of its own
AUTOATTACK_ENTRY = "autoattack-linf"
AUTOATTACK_IMPLEMENTATION = "autoattack:standard"


def is_autoattack_figure(implementation: str | None, norm: str | None) -> bool:
    """Whether an attack with this implementation target and norm (``"Linf"``…) gives the AutoAttack figure."""
    return implementation == AUTOATTACK_IMPLEMENTATION and norm == "Linf"
