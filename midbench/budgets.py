"""Attack budgets as users give them: ε as a number or a fraction such as ``8/255``. One parser for ``--eps`` in
training and evaluation, configuration and sweep files, so every place accepts and refuses the same text."""

from __future__ import annotations

import math
import re

from midbench.errors import UsageError

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
