"""The package's layers hold: the import-linter contracts of ``pyproject.toml`` (``[tool.importlinter]``) pass,
and they do catch a forbidden import, function-level ones included (where a cycle would otherwise hide)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the contracts of ``root/pyproject.toml`` on the ``midbench`` package in ``root``."""
    executable = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or "lint-imports"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([executable, "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          check=False)


def test_the_import_contracts_hold() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "forbidden"), [
    ("evaluation/metrics.py", "from midbench.training import train"),        # evaluation reaching training
    ("defenses/base.py", "from midbench.training.loop import train"),        # a method importing the loop
    ("reporting/leaderboard.py", "from midbench.evaluation.engine import evaluate"),  # a table and the engine
    ("reporting/plots/draw.py", "from midbench.artifacts.loading import load_classifier"),  # a figure, a model
    ("artifacts/checkpoint.py", "from midbench.evaluation.documents import read_result"),  # a layer upwards
])
def test_a_forbidden_import_breaks_a_contract(tmp_path: Path, module: str, forbidden: str) -> None:
    """A copy of the package with one forbidden import added inside a function fails the check."""
    shutil.copytree(REPO / "midbench", tmp_path / "midbench", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / "midbench" / module
    target.write_text(target.read_text(encoding="utf-8") +
                      f"\n\ndef _hidden() -> None:\n    {forbidden}  # noqa: F401\n", encoding="utf-8")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0 and "BROKEN" in result.stdout, result.stdout + result.stderr


def test_a_built_in_method_is_one_file_in_the_defenses_package(tmp_path: Path) -> None:
    """A module dropped into midbench/defenses registers its method with no other change: the command line
    offers its options, and the sweep and leaderboard learn what they need from its class."""
    package = tmp_path / "midbench"
    shutil.copytree(REPO / "midbench", package, ignore=shutil.ignore_patterns("__pycache__"))
    (package / "defenses" / "noise_at.py").write_text(
        "from dataclasses import dataclass\n\n"
        "from midbench.defenses.base import METHODS, DefenseTask\n"
        "from midbench.defenses.options import option\n\n\n"
        "@METHODS.register('noise-at')\n"
        "class NoiseTraining(DefenseTask):\n"
        "    name = 'noise-at'\n"
        "    adversarial_training_baseline = True\n\n"
        "    @dataclass(frozen=True)\n"
        "    class Options:\n"
        "        noise_sigma: float = option(0.1, 'noise-at: standard deviation of the noise.')\n\n"
        "    def summary(self) -> str:\n"
        "        return f'σ = {self.options.noise_sigma:g}'\n", encoding="utf-8")
    script = ("from midbench.config import TrainConfig\n"
              "from midbench.data import get_dataset\n"
              "from midbench.defenses.base import METHODS, build_task\n"
              "from midbench.cli.train import method_option_params\n"
              "task = build_task(TrainConfig.of(method='noise-at', noise_sigma=0.3), get_dataset('mnist5k'))\n"
              "flags = [p.opts[0] for p in method_option_params()]\n"
              "print('noise-at' in METHODS.names(), task.summary(), '--noise-sigma' in flags)\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "σ", "=", "0.3", "True"]


def _module_graph(root: Path) -> dict[str, set[str]]:
    """midbench's import graph, module by module: every ``import`` and ``from … import`` of a midbench module,
    wherever it stands (module level, inside functions, under ``if TYPE_CHECKING:``)."""
    import ast

    package = root / "midbench"
    modules = {".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): path
               for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("midbench"):
                targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                           for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names if alias.name.startswith("midbench")]
            else:
                continue
            graph[name] |= {target for target in targets if target in modules and target != name}
    return graph


def test_no_module_imports_itself_through_others() -> None:
    """No import cycle between modules, not even one hidden under ``TYPE_CHECKING`` or inside a function (those
    import-linter's layers cannot see inside a package): each module can be read after the ones it imports."""
    graph = _module_graph(REPO)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"
