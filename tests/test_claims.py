"""The shipped READMEs' claims about the MID ablation, recomputed from the committed result files with the
paired tests of ``benchmarks/mid_ablation_report.py``: a claim whose numbers no longer follow from the files fails
here."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
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


def _fake_result(folder: Path, run: str, clean: np.ndarray, pool: np.ndarray) -> None:
    """A result file and its matrix with one known attack, as load_row reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    document = {"checkpoint": {"name": run}, "protocol": {"name": "whitebox"}, "profile": None}
    (folder / f"{run}.json").write_text(json.dumps(document), encoding="utf-8")
    np.savez(folder / f"{run}.npz", robust=pool[:, None], attacks=np.array(["pgd-linf@1"]),
             splits=np.array(["known"]), clean=clean)


def test_the_seeded_reading_gives_each_seeds_gap_and_the_reference_seed_noise(report: ModuleType,
                                                                                tmp_path: Path) -> None:
    """Two seeds on 10 images: the variant keeps 2 and 4 examples fewer than MID of its seed, so Δ is −20 and −40
    points (mean −30 ± 14.1); MID of seed 1 keeps one more than MID of seed 0 (+10)."""
    clean = np.ones(10, dtype=bool)
    mid = {0: np.arange(10) < 6, 1: np.arange(10) < 7}
    variant = {0: np.arange(10) < 4, 1: np.arange(10) < 3}
    for seed in (0, 1):
        _fake_result(tmp_path / f"seed-{seed}" / "runs" / "mnist5k", "mid", clean, mid[seed])
        _fake_result(tmp_path / f"seed-{seed}" / "runs" / "mnist5k", "variant", clean, variant[seed])
    text = report.render_seeds(tmp_path, "mid")
    pool = text.split("### whitebox: pool worst")[1].split("###")[0]
    assert "| mid | 60.0 | 70.0 |" in pool
    assert "| variant | 40.0 (-20.0, p 0.5) | 30.0 (-40.0, p 0.12) | -30.0 ± 14.1 |" in pool
    assert "seed 1 − seed 0: +10.0 (p 1)" in pool
