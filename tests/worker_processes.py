"""Finding a torchrun worker from a test, to kill it mid-run (Linux: through /proc)."""

from __future__ import annotations

from pathlib import Path


def process_with(tag: str, rank: int) -> int | None:
    """The pid of the worker of rank ``rank`` whose environment carries ``MIDBENCH_TEST_TAG=tag``."""
    wanted = {f"MIDBENCH_TEST_TAG={tag}".encode(), f"RANK={rank}".encode()}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            variables = set((entry / "environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if wanted <= variables:
            return int(entry.name)
    return None
