"""The shape of the package at a git revision: the numbers of the before/after table in docs/architecture.md.

    python benchmarks/architecture_stats.py REV [REV ...]

For each revision (checked out into a temporary worktree, nothing in this checkout changes): the top-level modules
and sub-packages of ``midbench/``, the layers of the import-linter ``layers`` contract (``pyproject.toml``) and its
other contracts, the largest module (lines) and the longest function or method (lines, decorators included).
Duplicate pairs need a duplicate-code scanner and are not computed here (docs/architecture.md says which one).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI, a dependency there
    import tomli as tomllib


def stats(tree: Path) -> dict[str, object]:
    """The numbers of one checkout."""
    package = tree / "midbench"
    modules = sorted(p.name for p in package.iterdir() if p.suffix == ".py" and p.name != "__init__.py")
    packages = sorted(p.name for p in package.iterdir() if (p / "__init__.py").is_file())
    contracts = tomllib.loads((tree / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = contracts.get("tool", {}).get("importlinter", {}).get("contracts", [])
    layers = next((len(c["layers"]) for c in contracts if c.get("type") == "layers"), 0)
    largest_module, largest_function = ("", 0), ("", 0)
    for path in sorted(package.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = path.relative_to(tree).as_posix()
        lines = len(text.splitlines())
        if lines > largest_module[1]:
            largest_module = (name, lines)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = (node.end_lineno or node.lineno) - start + 1
                if length > largest_function[1]:
                    largest_function = (f"{name}:{node.name}", length)
    return {"top-level modules": len(modules), "sub-packages": len(packages), "layers in the contract": layers,
            "other contracts": len(contracts) - (1 if layers else 0),
            "largest module": f"{largest_module[0]} ({largest_module[1]} lines)",
            "longest function": f"{largest_function[0]} ({largest_function[1]} lines)"}


def main(revisions: list[str]) -> int:
    if not revisions:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    rows = {}
    for revision in revisions:
        with tempfile.TemporaryDirectory() as folder:
            work = Path(folder) / "tree"
            subprocess.run(["git", "worktree", "add", "--detach", "-q", str(work), revision], check=True)
            try:
                rows[revision] = stats(work)
            finally:
                subprocess.run(["git", "worktree", "remove", "--force", str(work)], check=True)
    keys = list(next(iter(rows.values())))
    print("| | " + " | ".join(revisions) + " |")
    print("|---|" + "---|" * len(revisions))
    for key in keys:
        print(f"| {key} | " + " | ".join(str(rows[r][key]) for r in revisions) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
