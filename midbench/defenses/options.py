"""A training method's own options: declared once, as a dataclass on the method, and read from there by the
command line (``midbench train --beta 6``), config and sweep files (``beta = 6``) and ``--method-option
beta=6``.

A method declares ``Options``, a dataclass whose fields all have defaults, each made with :func:`option` (its
help text, and for a closed set its choices). Values arrive as a mapping of field name to value — typed from a
TOML file or the command line, or text from ``--method-option`` — and :func:`build_options` converts and checks
them into an ``Options`` instance; the dataclass's ``__post_init__`` checks ranges.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from collections.abc import Mapping
from typing import Any

from midbench.config import OptionText, check_types, type_name
from midbench.errors import UsageError

#: metadata keys of an option field
HELP, CHOICES, RUN_REFERENCE = "help", "choices", "run_reference"


def option(default: Any, help: str, choices: tuple[str, ...] | None = None,  # noqa: A002 - argparse's name
           run_reference: bool = False) -> Any:
    """A field of a method's ``Options``: its default, one-line help (shown by ``midbench train --help``),
    the allowed values of a closed set, and whether the value is a checkpoint that a sweep may give as the
    name of another of its runs (MID's ``source`` and ``teacher``)."""
    return dataclasses.field(default=default, metadata={HELP: help, CHOICES: choices, RUN_REFERENCE: run_reference})


def option_fields(options_class: type | None) -> list[dataclasses.Field[Any]]:
    """The fields of an ``Options`` dataclass (none for a method without options)."""
    return list(dataclasses.fields(options_class)) if options_class is not None else []


def option_types(options_class: type) -> dict[str, tuple[type, ...]]:
    """Each field's accepted types, ``None`` left out (an ``int | None`` field accepts ints)."""
    hints = typing.get_type_hints(options_class)
    return {name: tuple(t for t in typing.get_args(kind) or (kind,) if t is not type(None))
            for name, kind in hints.items()}


def option_defaults(options_class: type | None) -> dict[str, Any]:
    """The default value of every option."""
    return {field.name: field.default for field in option_fields(options_class)}


def build_options(options_class: type | None, method: str, values: Mapping[str, Any], shared: tuple[str, ...] = ()
                  ) -> Any:
    """``options_class`` filled from ``values`` (missing fields at their defaults), or None for a method without
    options.

    Text from ``--method-option NAME=VALUE`` (:class:`~midbench.config.OptionText`) is converted to the field's
    type; other values (a TOML file, a typed command-line option) must already have it — an int is accepted
    for a float, a bool never for a number.

    Raises:
        UsageError: a name the method does not declare (with close matches among its options and the
            ``shared`` config keys), a value of the wrong type or outside a closed set, or a range the
            dataclass refuses.
    """
    fields = option_fields(options_class)
    names = [field.name for field in fields]
    clashes = sorted(set(names) & set(shared))
    if clashes:  # a file's or the command line's value would go to the shared key, never to the option
        raise UsageError(f"method {method} declares option(s) {', '.join(clashes)}, which every method already "
                         "has; rename them in its Options")
    for name in values:
        if name not in names:
            known = f"its options are {', '.join(names)}" if names else "it has no options of its own"
            close = difflib.get_close_matches(name, names + list(shared), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise UsageError(f"method {method} has no option {name!r} ({known}){hint}")
    if options_class is None:
        return None
    types = option_types(options_class)
    converted: dict[str, Any] = {}
    for field in fields:
        if field.name not in values:
            continue
        value = values[field.name]
        flag = _flag(field.name)
        if isinstance(value, OptionText) and str not in types[field.name]:
            value = _from_text(value, types[field.name], flag)
        check_types({field.name: value}, options_class, label=_flag)
        choices = field.metadata.get(CHOICES)
        if choices and value not in choices:
            raise UsageError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
        converted[field.name] = value
    return options_class(**converted)


def _from_text(raw: str, kinds: tuple[type, ...], flag: str) -> Any:
    for kind in kinds:
        if kind is bool:
            if raw.lower() in ("true", "1", "yes", "false", "0", "no"):
                return raw.lower() in ("true", "1", "yes")
            continue
        try:
            return kind(raw)
        except (TypeError, ValueError):
            continue
    raise UsageError(f"{flag} must be {' or '.join(type_name(kind) for kind in kinds)}, got {raw!r}")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def as_values(options: Any) -> dict[str, Any]:
    """An ``Options`` instance as a plain mapping (empty for None), as recorded in the config and checkpoint."""
    return dataclasses.asdict(options) if options is not None else {}


def check_non_negative(options: Any, *names: str) -> None:
    """Refuse a negative or non-finite value of the named float options (one-line usage error)."""
    for name in names:
        value = getattr(options, name)
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"{_flag(name)} must be a non-negative number, got {value}")


def check_positive(options: Any, *names: str, allow_none: bool = True) -> None:
    """Refuse a value ≤ 0 (or non-finite) of the named options; ``None`` passes when ``allow_none``."""
    for name in names:
        value = getattr(options, name)
        if value is None and allow_none:
            continue
        if value is None or not (math.isfinite(value) and value > 0):
            raise UsageError(f"{_flag(name)} must be positive, got {value}")
