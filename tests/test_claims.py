"""The shipped READMEs' claims about the MID ablation, recomputed from the committed result files with the
paired tests of ``benchmarks/mid_ablation_report.py``: a claim whose numbers no longer follow from the files fails
here."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
ABLATION = ROOT / "results" / "mnist5k-mid-ablation"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mid_ablation_report", ROOT / "benchmarks" / "mid_ablation_report.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _rung(report: ModuleType, label: str, run: str, model: str, strength: float) -> tuple[str, str, float]:
    """(MID's accuracy, ``run``'s accuracy, paired p) on one rung of the profile, as the README prints them."""
    rows = report.load_tables(ABLATION)[label]
    strengths, mid, _ = rows["mid"].curves[model]
    k = strengths.index(strength)
    other = rows[run].curves[model][1][:, k]
    return report._pct(mid[:, k]), report._pct(other), report.mcnemar_p(mid[:, k], other)


def test_the_ablation_readme_tables_are_what_the_result_files_give(report: ModuleType) -> None:
    readme = (ABLATION / "README.md").read_text(encoding="utf-8")
    blocks = report.render(ABLATION, "mid").split("### ")[1:]
    assert len(blocks) == 3
    for block in blocks:  # the README's headings add a word on each source; the tables are verbatim
        assert block.split("\n", 1)[1].strip() in readme


def test_mid_whitebox_cost_at_small_budgets_is_what_the_readmes_say(report: ModuleType) -> None:
    readmes = [(ABLATION / "README.md").read_text(encoding="utf-8"),
               (ROOT / "results" / "README.md").read_text(encoding="utf-8"),
               (ROOT / "docs" / "reproduce-mid.md").read_text(encoding="utf-8")]
    mid, no_lc, p = _rung(report, "whitebox", "mid-no-lc", "linf", 0.25)
    assert p < 1e-6 and float(mid) < float(no_lc)
    assert f"it keeps {mid}% against {no_lc}% without\n   LC (p = {p:.1g})" in readmes[0]
    _, standard, p = _rung(report, "whitebox", "standard", "linf", 0.25)
    assert float(mid) < float(standard) and f"{standard}% for the undefended `standard` (p = {p:.1g})" in readmes[0]
    assert all(f"{mid}% against {standard}%" in text and f"p = {p:.1g}" in text for text in readmes[1:])


def test_no_lc_is_better_on_flow_but_not_after_correction(report: ModuleType) -> None:
    """The README's example of LC not helping on an unseen threat model: flow at strength 0.5 from the
    independent source, p < 0.05 on its own, not significant over the 80 rungs tested."""
    mid, no_lc, p = _rung(report, "transfer from standard-b", "mid-no-lc", "flow", 0.5)
    assert float(no_lc) > float(mid) and 0.05 / 80 < p < 0.05
    assert f"({no_lc}% against {mid}%, p = {p:.2g}" in (ABLATION / "README.md").read_text(encoding="utf-8")
