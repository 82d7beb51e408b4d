"""The documentation site (docs/build_site.py): it builds offline in strict mode, holds every page and the three
generated references, and a broken link fails the build."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _builder():  # noqa: ANN202 - the script as a module
    spec = importlib.util.spec_from_file_location("build_site", REPO / "docs" / "build_site.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["build_site"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    _builder().build(out)
    return out


def test_every_page_and_reference_is_built(site: Path) -> None:
    from typer.main import get_command

    from midbench.attacks.specs import load_registry
    from midbench.cli.app import app

    pages = {path.name for path in site.glob("*.html")}
    guide = {path.stem + ".html" for path in (REPO / "docs").glob("*.md")}
    assert guide <= pages
    assert {"index.html", "cli.html", "attacks.html", "api-reference.html", "results.html"} <= pages
    cli = (site / "cli.html").read_text(encoding="utf-8")
    for name in get_command(app).commands:
        assert f"midbench {name}" in cli, name
    catalogue = (site / "attacks.html").read_text(encoding="utf-8")
    registry = load_registry()
    for threat_model in registry.threat_models:
        assert f"<code>{threat_model}</code>" in catalogue, threat_model
    for spec in registry.attacks.values():
        assert f"<code>{spec.key}</code>" in catalogue, spec.key
    reference = (site / "api-reference.html").read_text(encoding="utf-8")
    for name in ("evaluate", "load_model", "load_result", "train", "EvaluationResult", "to_pandas"):
        assert name in reference, name


def test_a_broken_link_fails_the_build(tmp_path: Path) -> None:
    """The same extra page builds with a link that resolves (so the link, not the page, fails the other)."""
    _builder().build(tmp_path / "fine", extra={"fine.md": "# Fine\n\nSee [the API](api.md).\n"})
    with pytest.raises(SystemExit, match="did not build"):
        _builder().build(tmp_path / "site", extra={"broken.md": "# Broken\n\nSee [nowhere](no-such-page.md).\n"})
