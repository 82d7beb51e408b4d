"""Training methods as defense tasks sharing one training loop (architecture.md, "Defenses and training")."""

from midbench.defenses.base import METHODS, DefenseTask, build_task

__all__ = ["METHODS", "DefenseTask", "build_task"]
