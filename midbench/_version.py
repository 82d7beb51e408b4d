"""The package version, in a module of its own so that any layer can read it (docs/architecture.md)."""

__version__ = "0.1.0"
