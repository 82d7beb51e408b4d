"""Project-level promises: the README's test command is what CI runs; the wheel ships the attack registry."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_the_readme_test_command() -> None:
    install_and_demo, install_and_test = _readme_commands()
    assert "midbench demo" in install_and_demo
    assert "pytest" in install_and_test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install_and_test in ci_lines


def test_changelog_has_an_unreleased_section() -> None:
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.slow
def test_wheel_ships_the_registry_and_works_from_another_directory(tmp_path: Path) -> None:
    """A non-editable install must find attacks_registry/ from any directory (it ships in the wheel)."""
    pytest.importorskip("setuptools", minversion="69")
    source = tmp_path / "source"  # build from a copy: setuptools leaves a build/ folder beside the sources
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in ("midbench", "attacks_registry"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("midbench-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        assert {f"midbench/attacks_registry/{Path(p).name}" for p in (ROOT / "attacks_registry").glob("*.toml")} \
            <= set(names)
        archive.extractall(tmp_path / "site")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("from midbench.attacks.specs import load_registry; import midbench; "
            "print(midbench.__file__); print(len(load_registry().attacks))")
    done = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, check=True,
                          env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    module_file, count = done.stdout.split()
    assert module_file.startswith(str(tmp_path / "site"))
    assert int(count) >= 6
