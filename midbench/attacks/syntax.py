"""The small grammar shared by the registry's TOML tables: kebab-case ids and values relative to the dataset's ε.

Kept apart from :mod:`midbench.attacks.specs` (attack entries) and :mod:`midbench.attacks.threat_models`
(threat-model tables) so both parsers use one definition without importing each other.
"""

from __future__ import annotations

import re

#: registry ids: kebab-case, ``<algorithm>-<norm>[-t]`` for attacks (``pgd-linf``), ``rot-trans`` for threat models
ID_PATTERN = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"  # non-negative decimal, optional exponent
#: a value relative to the dataset's ε: ``"eps"``, ``"0.5*eps"``, ``"eps/30"``, ``"2.5*eps/40"``
RELATIVE = re.compile(rf"^\s*(?:(?P<scale>{_NUMBER})\s*\*\s*)?eps(?:\s*/\s*(?P<divisor>{_NUMBER}))?\s*$")
