"""Training methods as defense tasks sharing one training loop (docs/architecture.md, "A training method is one
class")."""

from midbench.defenses.base import METHODS, DefenseTask, build_task

__all__ = ["METHODS", "DefenseTask", "build_task"]
