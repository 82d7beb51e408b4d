"""The wheel a user gets from ``pip install .`` ships the whole package and works outside the checkout.

CI installs midbench in editable mode, where every module is importable from the checkout whatever the wheel
holds; these tests build the real wheel (offline, from a copy of the sources) and use it the way a
non-editable install does, from a directory that is not the checkout.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _package_modules() -> dict[str, str]:
    """Every module of the checkout's ``midbench/``, ``attacks_registry/`` and ``results/references/``: {wheel
    path: module name}."""
    modules = {}
    for folder, package in (("midbench", "midbench"), ("attacks_registry", "midbench.attacks_registry"),
                            ("results/references", "midbench.reference_sets")):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "__pycache__" in path.parts or "runs" in path.relative_to(ROOT / folder).parts:
                continue
            relative = path.relative_to(ROOT / folder)
            parts = [package, *relative.with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules["/".join([*package.split("."), *relative.parts])] = ".".join(parts)
    return modules


def _registry_files() -> set[str]:
    """Every registry file of the checkout, and the files of every reference set that ship (docs/scoring.md:
    calibrated ladders, reference table, calibration curves and config), as their paths inside the wheel."""
    registry = {"midbench/attacks_registry/" + path.relative_to(ROOT / "attacks_registry").as_posix()
                for path in (ROOT / "attacks_registry").rglob("*.toml")}
    references = ROOT / "results" / "references"
    shipped = {"midbench/reference_sets/" + path.relative_to(references).as_posix()
               for name in ("ladders.toml", "reference.json", "calibration.json", "calibrate.toml")
               for path in references.glob(f"*/{name}")}
    return registry | shipped


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory: pytest.TempPathFactory) -> tuple[set[str], Path]:
    """Build the wheel from a copy of the sources (setuptools leaves a build/ folder beside them) without
    build isolation (no network), and unpack it as an installer would: (names in the wheel, unpacked folder)."""
    pytest.importorskip("setuptools", minversion="69")
    tmp_path = tmp_path_factory.mktemp("wheel")
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("midbench", "attacks_registry", "results/references"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "runs"))
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                            str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("midbench-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    return names, site


#: Run first in every subprocess: drop the finders of an editable install of midbench (setuptools names their
#: modules ``__editable___<name>_finder``), which would otherwise supply any module the wheel lacks from the
#: checkout; what is left is what a non-editable install sees.
_WITHOUT_EDITABLE_FINDERS = (
    "import sys\n"
    "sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, '__module__', '').startswith('__editable__')]\n"
    "sys.path_hooks[:] = [h for h in sys.path_hooks if not getattr(h, '__module__', '').startswith('__editable__')]\n"
    "sys.path_importer_cache.clear()\n"
)


def _run_outside_checkout(site: Path, tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` from an empty folder with the unpacked wheel first on the path, as a non-editable
    install would (the dependencies come from the test environment; one torch thread, as beside other tests)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    env = {"PYTHONPATH": str(site), "PATH": os.defpath, "HOME": str(tmp_path), "MIDBENCH_CACHE": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", _WITHOUT_EDITABLE_FINDERS + code], cwd=elsewhere,
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_wheel_holds_every_module_and_registry_file(unpacked_wheel: tuple[set[str], Path]) -> None:
    names, _ = unpacked_wheel
    missing = (set(_package_modules()) | _registry_files()) - names
    assert not missing, f"the wheel leaves out {sorted(missing)}: check [tool.setuptools] in pyproject.toml"


@pytest.mark.slow
def test_every_module_imports_from_the_unpacked_wheel(unpacked_wheel: tuple[set[str], Path], tmp_path: Path) -> None:
    _, site = unpacked_wheel
    modules = sorted(set(_package_modules().values()))
    code = ("import importlib\n"
            f"for name in {modules!r}:\n"
            "    module = importlib.import_module(name)\n"
            "    print(name, module.__file__)\n"
            "from midbench.attacks.specs import load_registry\n"
            "print('registry', len(load_registry().attacks))\n")
    done = _run_outside_checkout(site, tmp_path, code)
    assert done.returncode == 0, done.stderr
    lines = [line.split() for line in done.stdout.splitlines()]
    imported = {name: Path(file) for name, file in lines[:-1]}
    assert sorted(imported) == modules
    outside = {name: str(file) for name, file in imported.items() if site not in file.parents}
    assert not outside, f"imported from outside the wheel: {outside}"
    from midbench.attacks.specs import load_registry

    assert lines[-1] == ["registry", str(len(load_registry().attacks))]  # the same entries as the checkout's


@pytest.mark.slow
@pytest.mark.parametrize(("command", "expected"), [
    ("methods list", "mid"), ("attacks list", "pgd-linf"), ("datasets list", "mnist5k"), ("--version", None)])
def test_cli_runs_from_the_unpacked_wheel(unpacked_wheel: tuple[set[str], Path], tmp_path: Path, command: str,
                                          expected: str | None) -> None:
    from midbench import __version__

    _, site = unpacked_wheel
    done = _run_outside_checkout(site, tmp_path, f"sys.argv = ['midbench', *{command.split()!r}]\n"
                                                     "from midbench.cli.app import main\nmain()\n")
    assert done.returncode == 0, done.stderr
    assert (expected or f"midbench {__version__}") in done.stdout


def _readme_python() -> str:
    """The README's Python example (the only ```python block of its "From Python" section)."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = text.split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.slow
def test_the_readme_python_example_runs_from_the_wheel(unpacked_wheel: tuple[set[str], Path],
                                                       tmp_path: Path) -> None:
    """The notebook example as a user pastes it, with midbench from the wheel, from an empty folder: it prints the
    attack and profile tables and keeps nothing on disk (no results_dir)."""
    _, site = unpacked_wheel
    done = _run_outside_checkout(site, tmp_path, _readme_python())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "fgsm-linf" in done.stdout and "pgd-l2" in done.stdout
    assert "threat_model" in done.stdout and "linf" in done.stdout
    assert not list((tmp_path / "elsewhere").iterdir())


@pytest.mark.slow
def test_the_wheel_and_the_checkout_have_the_same_code_digest(unpacked_wheel: tuple[set[str], Path],
                                                               tmp_path: Path) -> None:
    """The same code installed either way is the same code: a finished evaluation made with one install counts as
    made by the other (the digest is part of every evaluation's settings)."""
    from midbench.evaluation.digests import code_digest

    _, site = unpacked_wheel
    done = _run_outside_checkout(site, tmp_path, "from midbench.evaluation.digests import code_digest\n"
                                                 "print(code_digest())\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == code_digest()
