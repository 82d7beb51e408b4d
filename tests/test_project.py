"""Project-level promises: the README's test command is what CI runs (the wheel: test_packaging.py)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block.strip() for block in blocks[:2]]


def test_ci_runs_the_readme_test_command() -> None:
    install_and_demo, install_and_test = _readme_commands()
    assert "midbench demo" in install_and_demo
    assert "pytest" in install_and_test
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    # CI runs the command as written, in two lines: its install, then (once the background demo is done) its tests
    install, test = install_and_test.rsplit(" && ", 1)
    assert install in ci_lines and test in ci_lines and ci_lines.index(install) < ci_lines.index(test)


def test_changelog_has_an_unreleased_section() -> None:
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


#: where the repository explains itself: the package, its registry, benchmarks, docs and shipped results
EXPLAINED = ("midbench", "attacks_registry", "benchmarks", "docs", "results", "tests", "README.md", "CHANGELOG.md",
             "pyproject.toml", ".ci")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".sh", ".txt", ".json", ".csv", ".html", ""}
#: Markdown files midbench *writes* (tables, reference sets), which a docstring may name without their being docs
OUTPUT_NAMES = re.compile(r"(leaderboard[\w-]*|reference|tuning|board|report|README|CHANGELOG)")


def _explained_files() -> list[Path]:
    files: list[Path] = []
    for name in EXPLAINED:
        path = ROOT / name
        candidates = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files += [p for p in candidates if p.suffix in TEXT_SUFFIXES and "__pycache__" not in p.parts]
    return files


def test_every_doc_the_repository_cites_is_in_it() -> None:
    """A docstring, comment or page that cites ``docs/NAME.md`` (or a bare ``NAME.md`` that is not a file midbench
    writes) must find that page under docs/, so that every page a reader is sent to ships with the code."""
    docs = {path.name for path in (ROOT / "docs").glob("*.md")}
    missing = []
    for path in _explained_files():
        if path == Path(__file__).resolve():  # this file names the pattern, not a page
            continue
        if path.name in ("build_site.py", "test_docs_site.py"):  # they name the pages the site generates
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in re.finditer(r"(?<![\w./-])(docs/)?([\w-]+)\.md\b", text):
            prefixed, stem = match.group(1), match.group(2)
            if f"{stem}.md" not in docs and (prefixed or not OUTPUT_NAMES.fullmatch(stem)):
                missing.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not missing, f"cited but not under docs/: {sorted(set(missing))}"


def test_no_file_points_outside_the_repository() -> None:
    """The repository explains itself: no path of the team's workspace (the spec folder beside the checkout) and
    no absolute path of a machine in the package, its registry, benchmarks, tests, docs or shipped results."""
    outside = re.compile(r"\.\./shared|\bshared/(design|tools|mid-official|reference)"
                         r"|(?<![\w.])/(work|home|root|tmp/bash)/")
    hits = [f"{path.relative_to(ROOT)}:{number}"
            for path in _explained_files()
            for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if outside.search(line)]
    assert not hits, f"paths outside the repository: {hits}"
