"""``midbench report``: one self-contained HTML page, checked as text and in a real browser.

The browser test drives the system's headless Chromium (Debian's ``chromium`` and ``chromium-driver``, which
``.ci/run`` installs) through Selenium: no console error, every figure drawn with a size, a click on a header
sorts the rows. Outside CI it is skipped when the browser is missing; in CI (``CI`` set) that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from midbench.cli.app import app
from midbench.reporting.html import build_report
from midbench.reporting.leaderboard import render

RESULTS = Path(__file__).resolve().parents[1] / "results" / "mnist5k"
RUNNER = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture(scope="module")
def page() -> str:
    text, skipped = build_report(RESULTS)
    assert skipped == []
    return text


def test_the_page_loads_nothing_from_outside(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    references = re.findall(r"""\b(?:src|href|xlink:href)\s*=\s*["']([^"']*)["']""", page)
    # in-page anchors, and the heatmaps' pixels, which matplotlib embeds as data: URIs
    assert references and all(reference.startswith(("#", "data:image/png;base64,")) for reference in references)
    assert "@import" not in page and not re.search(r"url\((?!#)", page)


def test_every_table_and_model_has_its_section(page: str) -> None:
    tables = json.loads(render(RESULTS, "json", ci=True))
    for table in tables:
        assert f"{table['dataset']} — {table['protocol']}" in page
        for row in table["rows"]:
            assert f'id="model-{table["dataset"]}-' in page
            assert f">{row['name']} — {table['protocol']} " in page
    # a profiled table is preceded by its headline (rank, name, clean, AutoAttack, scores, flags)
    headlines = sum(1 for table in tables if any("common_unknown_score" in row for row in table["rows"]))
    assert page.count('<table class="sortable leaderboard">') == len(tables) + headlines


def test_the_leaderboard_cells_are_the_leaderboard_command_s(page: str) -> None:
    """The same numbers as `midbench leaderboard --ci`, with the value itself as the sort key."""
    for table in json.loads(render(RESULTS, "json", ci=True)):
        for row in table["rows"]:
            clean = row["clean"]
            assert f'data-sort="{float(clean)!r}">{clean:g} [{row["clean_lo"]:g}, {row["clean_hi"]:g}]</td>' in page


def test_every_figure_is_inlined_as_svg(page: str) -> None:
    figures = re.findall(r'<figure id="[^"]+" class="plot" data-kind="(\w+)"><svg', page)
    assert sorted(set(figures)) == ["curves", "heatmap", "protocols", "tradeoff"]
    assert len(figures) == 7  # curves, heatmap and trade-off per protocol, and the protocol bars


def test_the_commands_section_shows_the_sweep_that_made_the_results(page: str) -> None:
    assert "midbench bench --config" in page and "[sweep]" in page


def test_a_partial_directory_renders_what_is_valid_and_says_what_was_skipped(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS / "runs", results / "runs")
    (victim,) = (results / "runs" / "mnist5k").glob("mart__transfer__*.npz")
    victim.unlink()
    outcome = RUNNER.invoke(app, ["report", "--results-dir", str(results)])
    assert outcome.exit_code == 0, outcome.output
    text = (results / "report.html").read_text(encoding="utf-8")
    assert "Skipped 1 result(s)" in text and victim.name in text
    assert "midbench: warning: skipped" in outcome.output and "report: " in outcome.output


def test_the_command_line_is_recorded_and_shown(pgd_at_checkpoint: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    results = tmp_path / "results"
    command = [sys.executable, "-m", "midbench", "eval", str(pgd_at_checkpoint), "--attacks", "fgsm-linf",
               "--n-examples", "8", "--results-dir", str(results), "--quiet"]
    subprocess.run(command, check=True, capture_output=True)
    (document,) = (results / "runs" / "mnist5k").glob("*.json")
    recorded = json.loads(document.read_text(encoding="utf-8"))["command"]
    assert recorded.startswith("midbench eval ") and "--n-examples 8" in recorded
    text, _ = build_report(results)
    assert recorded in text


@pytest.mark.parametrize(("arguments", "code", "message"), [
    (["--results-dir", "{tmp}/missing"], 2, "does not exist"),
    (["--results-dir", "{tmp}/empty"], 2, "no complete result files"),
    (["--results-dir", str(RESULTS), "--out", "{tmp}/file.txt/report.html"], 2, "cannot create directory"),
])
def test_bad_input_is_one_line_with_its_exit_code(arguments: list[str], code: int, message: str,
                                                  tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("x")
    outcome = RUNNER.invoke(app, ["report", *[part.replace("{tmp}", str(tmp_path)) for part in arguments]])
    assert outcome.exit_code == code, outcome.output
    lines = [line for line in outcome.output.splitlines() if line.startswith("midbench: error:")]
    assert len(lines) == 1 and message in lines[0], outcome.output


@pytest.fixture
def browser():  # noqa: ANN201 - a Selenium driver
    if CHROMIUM is None or CHROMEDRIVER is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have chromium and chromium-driver (.ci/run installs them)")
        pytest.skip("needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1400,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_the_report_in_a_real_browser(browser, tmp_path: Path) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    outcome = RUNNER.invoke(app, ["report", "--results-dir", str(RESULTS), "--out", str(tmp_path / "report.html")])
    assert outcome.exit_code == 0, outcome.output
    browser.get((tmp_path / "report.html").as_uri())
    def console_errors() -> list[dict]:  # each call drains the browser's log since the previous one
        return [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]

    assert console_errors() == []

    figures = browser.find_elements(By.CSS_SELECTOR, "figure.plot svg")
    assert len(figures) == 7
    for figure in figures:
        size = figure.size
        assert size["width"] > 100 and size["height"] > 100, size

    table = browser.find_elements(By.CSS_SELECTOR, "table.leaderboard")[0]
    headers = table.find_elements(By.CSS_SELECTOR, "thead th")
    names = [header.text for header in headers]

    def column(name: str) -> list[str]:
        index = names.index(name)
        return [row.find_elements(By.TAG_NAME, "td")[index].text
                for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")]

    ranked = column("name")
    headers[names.index("name")].click()
    assert column("name") == sorted(ranked)
    assert column("name") != ranked  # the click changed the order
    headers[names.index("clean %")].click()
    clean = [float(cell.split(" ")[0]) for cell in column("clean %")]
    assert clean == sorted(clean)
    headers[names.index("clean %")].click()  # again: descending
    assert [float(cell.split(" ")[0]) for cell in column("clean %")] == sorted(clean, reverse=True)
    assert console_errors() == []  # sorting raised nothing either
    assert browser.save_screenshot(str(tmp_path / "report.png"))
    assert (tmp_path / "report.png").stat().st_size > 10_000
