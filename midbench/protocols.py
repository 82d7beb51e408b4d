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
