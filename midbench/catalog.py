"""A catalogue of named components — training methods, architectures, datasets — with aliases and "did you mean"
suggestions.

Called a catalogue, not a registry, so that "registry" means one thing in midbench: the attack registry (the
TOML entries of ``attacks_registry/`` and ``--registry-dir``, :mod:`midbench.attacks.specs`)."""

from __future__ import annotations

import difflib
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from midbench.errors import UsageError

T = TypeVar("T")


def suggest(name: str, choices: list[str], kind: str) -> str:
    """Return the one-line message for an unknown ``name`` among ``choices``."""
    close = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown {kind} {name!r}.{hint} Available: {', '.join(sorted(choices))}."


class Catalog(Generic[T]):
    """Maps names (and aliases) to components; unknown names raise :class:`UsageError` with close matches.

    ``builtin_modules`` register the built-in components when imported, and so does every module of
    ``builtin_package`` (a new built-in component is then one new file); they are imported on the first lookup,
    not when the catalogue is created, so that importing midbench (and ``midbench --help``) stays cheap.

    A module may also register a *prefix* (:meth:`add_prefix`): a name that starts with it is built on lookup by
    the prefix's function from the rest of the name (``folder:PATH``, a dataset read from the folder PATH).
    """

    def __init__(self, kind: str, builtin_modules: tuple[str, ...] = (), builtin_package: str | None = None) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._aliases: dict[str, str] = {}
        self._pending_modules = list(builtin_modules)
        self._pending_package = builtin_package
        self._prefixes: dict[str, Callable[[str], T]] = {}

    def _load_builtin(self) -> None:
        if self._pending_package is not None:
            package, self._pending_package = importlib.import_module(self._pending_package), None
            self._pending_modules += [f"{package.__name__}.{module.name}"
                                      for module in pkgutil.iter_modules(package.__path__)
                                      if not module.name.startswith("_")]
        while self._pending_modules:
            importlib.import_module(self._pending_modules.pop(0))

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator that registers a component under ``name`` and optional aliases."""

        def decorate(item: T) -> T:
            self.add(name, item, *aliases)
            return item

        return decorate

    def add(self, name: str, item: T, *aliases: str) -> None:
        """Register ``item`` under ``name``; a name can be registered once."""
        if name in self._items or name in self._aliases:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        for alias in aliases:
            self._aliases[alias] = name

    def add_prefix(self, prefix: str, build: Callable[[str], T]) -> None:
        """Build the component of every name that starts with ``prefix`` as ``build(name)`` (never cached here:
        ``build`` decides what it may reuse)."""
        self._prefixes[prefix] = build

    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases."""
        self._load_builtin()
        if name in self._items:
            return name
        if name in self._aliases:
            return self._aliases[name]
        raise UsageError(suggest(name, list(self._items) + list(self._aliases), self.kind))

    def get(self, name: str) -> T:
        """The component registered as ``name``, or built for a registered prefix; raises :class:`UsageError` with
        suggestions."""
        self._load_builtin()
        for prefix, build in self._prefixes.items():
            if name.startswith(prefix):
                return build(name)
        return self._items[self.canonical(name)]

    def names(self) -> list[str]:
        """Registered names, sorted (aliases excluded)."""
        self._load_builtin()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_builtin()
        return name in self._items or name in self._aliases

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
