"""Publishable comparison tables: per-example worst cases, unions across runs, every output format, compare and
RobustBench export. Result files are written by the real writer from constructed evaluations (no model runs)."""

from __future__ import annotations

import html
import io
import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from midbench.attacks.specs import load_registry
from midbench.cli.app import app
from midbench.errors import ArtifactError, UsageError
from midbench.evaluation.attacking import AttackOutcome
from midbench.evaluation.engine import Evaluation
from midbench.evaluation.metrics import wilson_interval
from midbench.evaluation.results import build_result, indices_sha256, make_run_id, write_result
from midbench.reporting.compare import render as render_compare
from midbench.reporting.export import export_robustbench
from midbench.reporting.leaderboard import render, tables
from midbench.reporting.rows import LeaderboardWarning

RUNNER = CliRunner()
EPS = {"Linf": 0.3, "L2": 2.0, "L1": 10.0}
START = datetime(2026, 11, 24, 21, 0, 0, tzinfo=timezone.utc)
T, F = True, False


def write_run(results: Path, attacks: dict[str, tuple[str, list[bool]]], *, clean: list[bool] | None = None,
              name: str = "model-a", sha: str = "a" * 64, method: str = "mid", protocol: str = "whitebox",
              source: str | None = None, indices: list[int] | None = None, minutes: int = 0,
              flags: list[dict[str, str]] | None = None, dataset: str = "mnist5k",
              eps: dict[str, float] | None = None) -> Path:
    """Write one result (JSON + npz) with the real writer. ``attacks``: registry id → (split, robust column)."""
    eps = eps or EPS
    registry = load_registry()
    n = len(next(iter(attacks.values()))[1]) if attacks else len(clean or [])
    clean_array = np.array(clean if clean is not None else [True] * n, dtype=bool)
    outcomes = [AttackOutcome(registry.get(attack_id).resolve(eps), split, np.array(column, dtype=bool),
                              seconds=0.1, forward_passes=n, backward_passes=n)
                for attack_id, (split, column) in attacks.items()]
    evaluation = Evaluation(clean_correct=clean_array, outcomes=outcomes, protocol=protocol)
    created = START + timedelta(minutes=minutes)
    index_array = np.array(indices if indices is not None else list(range(n)), dtype=np.int64)
    source_info = {"path": "src.safetensors", "sha256": "s" * 64, "name": source} if source else None
    result = build_result(
        evaluation, run_id=make_run_id(name, protocol, created), created=created,
        checkpoint={"path": f"{name}.safetensors", "sha256": sha, "name": name, "method": method,
                    "arch": "lenet", "dataset": dataset, "train_attacks": []},
        data={"dataset": dataset, "split": "test", "n_examples": n, "indices_sha256": indices_sha256(index_array),
              "eps": dict(eps)},
        protocol={"name": protocol, "source": source_info}, seed=0, device="cpu", flags=flags)
    return write_result(result, evaluation, results, index_array)


def csv_table(results: Path, *args: Any, **kwargs: Any) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(render(results, "csv", *args, **kwargs)))


NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e-?\d+)?")


def numbers(cell: str) -> list[float]:
    return [float(text) for text in NUMBER.findall(cell)]


def markdown_tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(headers, rows of cells) of every pipe table in ``text``."""
    found, lines = [], text.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].startswith("|"):
            block = []
            while index < len(lines) and lines[index].startswith("|"):
                block.append([cell.strip() for cell in lines[index].strip().strip("|").split("|")])
                index += 1
            found.append((block[0], block[2:]))
        index += 1
    return found


def latex_rows(text: str) -> list[list[list[str]]]:
    tables_found = []
    for body in re.findall(r"\\midrule\n(.*?)\\bottomrule", text, flags=re.S):
        tables_found.append([line.removesuffix(r" \\").split(" & ") for line in body.strip().splitlines()])
    return tables_found


def html_rows(text: str) -> list[list[list[str]]]:
    tables_found = []
    for body in re.findall(r"<tbody>(.*?)</tbody>", text, flags=re.S):
        rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, flags=re.S)
        tables_found.append([[html.unescape(cell.strip())
                              for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, flags=re.S)] for row in rows])
    return tables_found


# ------------------------------------------------------------------------------------------------- worst case

def test_worst_case_is_per_example_not_the_minimum_of_attack_accuracies(tmp_path: Path) -> None:
    """A breaks examples 0–1, B breaks 2–3: each attack leaves 50%, but no example survives both."""
    write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, T, T]), "fgsm-linf": ("unknown", [T, T, F, F])})
    row = csv_table(tmp_path).iloc[0]
    assert row["unknown_mean"] == 50.0
    assert row["unknown_worst"] == 0.0, "per-example AND, not min(50, 50)"
    assert pd.isna(row["known_worst"]) and pd.isna(row["autoattack"])


def test_runs_of_one_checkpoint_on_the_same_examples_are_united(tmp_path: Path) -> None:
    write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, T, T])}, minutes=0)
    write_run(tmp_path, {"fgsm-linf": ("unknown", [T, T, F, F])}, minutes=1)
    table = csv_table(tmp_path)
    assert len(table) == 1
    assert table.iloc[0]["unknown_mean"] == 50.0 and table.iloc[0]["unknown_worst"] == 0.0


def test_an_attack_in_two_runs_counts_once_the_newest(tmp_path: Path) -> None:
    write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, T, T])}, minutes=0)
    write_run(tmp_path, {"pgd-linf": ("unknown", [T, T, T, T]), "fgsm-linf": ("unknown", [T, T, F, F])}, minutes=5)
    row = csv_table(tmp_path, columns=["pgd-linf"]).iloc[0]
    assert row["pgd-linf"] == 100.0, "the newer run's PGD column replaces the older one"
    assert row["unknown_mean"] == 75.0 and row["unknown_worst"] == 50.0


def test_identical_attack_sets_keep_the_newest_run(tmp_path: Path) -> None:
    write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, F, T])}, minutes=0)
    write_run(tmp_path, {"pgd-linf": ("unknown", [T, T, F, T])}, minutes=1)
    table = csv_table(tmp_path)
    assert len(table) == 1 and table.iloc[0]["unknown_worst"] == 75.0


def test_different_examples_or_checkpoints_are_not_united(tmp_path: Path) -> None:
    write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, T, T])}, indices=[0, 1, 2, 3])
    write_run(tmp_path, {"fgsm-linf": ("unknown", [T, T, F, F])}, indices=[4, 5, 6, 7], minutes=1)
    write_run(tmp_path, {"fgsm-linf": ("unknown", [T, T, F, F])}, sha="b" * 64, name="model-b", minutes=2)
    table = csv_table(tmp_path)
    assert len(table) == 3
    assert sorted(table["unknown_worst"]) == [50.0, 50.0, 50.0]


def test_union_recomputes_known_unknown_all_worst_and_autoattack(tmp_path: Path) -> None:
    write_run(tmp_path, {"pgd-linf": ("known", [T, F, T, T, T])}, minutes=0)
    write_run(tmp_path, {"fgsm-linf": ("unknown", [T, T, F, T, T]),
                         "autoattack-linf": ("unknown", [T, T, T, F, F])}, minutes=1)
    frame = tables(tmp_path, ci=True)[("mnist5k", "whitebox")]
    row = frame.iloc[0]
    assert row["known_worst"] == 80.0 and row["known_mean"] == 80.0
    assert row["unknown_worst"] == 40.0 and row["unknown_mean"] == 70.0
    assert row["autoattack"] == 60.0
    low, high = wilson_interval(2, 5)
    assert (row["unknown_worst_lo"], row["unknown_worst_hi"]) == (round(100 * low, 2), round(100 * high, 2))
    low, high = wilson_interval(3, 5)
    assert (row["autoattack_lo"], row["autoattack_hi"]) == (round(100 * low, 2), round(100 * high, 2))


# ----------------------------------------------------------------------------------------------- protocols

def test_mixed_protocols_never_share_a_table(tmp_path: Path) -> None:
    write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, T, T])}, protocol="whitebox")
    write_run(tmp_path, {"fgsm-linf": ("unknown", [T, T, F, F])}, protocol="transfer", source="src", minutes=1)
    ranked = tables(tmp_path)
    assert set(ranked) == {("mnist5k", "whitebox"), ("mnist5k", "transfer (src)")}
    assert all(len(table) == 1 and set(table["protocol"]) == {protocol} for (_, protocol), table in ranked.items())
    document = json.loads(render(tmp_path, "json"))
    assert [(t["protocol"], [r["protocol"] for r in t["rows"]]) for t in document] == [
        ("transfer (src)", ["transfer (src)"]), ("whitebox", ["whitebox"])]
    markdown = render(tmp_path, "markdown")
    assert [headers for headers, _ in markdown_tables(markdown)][0].count("protocol") == 1
    assert "### mnist5k — whitebox" in markdown and "### mnist5k — transfer (src)" in markdown


# ------------------------------------------------------------------------------------------------- formats

def _board(results: Path) -> None:
    write_run(results, {"pgd-linf": ("known", [T, F, T, T, T, F, T, F]),
                        "fgsm-linf": ("unknown", [T, T, F, T, T, T, F, F]),
                        "autoattack-linf": ("unknown", [T, F, F, T, T, F, F, F])},
              clean=[T, T, T, T, T, T, T, F], name="mid_model", method="mid")
    write_run(results, {"pgd-linf": ("known", [T, T, T, T, F, F, F, F]),
                        "fgsm-linf": ("unknown", [T, T, T, F, F, F, F, F])},
              name="pgd-at-model", sha="b" * 64, method="pgd-at", minutes=1,
              flags=[{"code": "square-beats-whitebox", "message": "Square beats PGD by 3 points"}])
    write_run(results, {"fgsm-linf": ("unknown", [T, T, T, F])}, name="other 100%", sha="c" * 64,
              method="standard", protocol="transfer", source="src", minutes=2)


@pytest.mark.parametrize("ci", [False, True])
def test_every_format_carries_the_same_numbers(tmp_path: Path, ci: bool) -> None:
    _board(tmp_path)
    columns = ["pgd-linf", "fgsm-linf@1", "cw-l2"]
    csv = csv_table(tmp_path, columns=columns, ci=ci)
    document = json.loads(render(tmp_path, "json", columns=columns, ci=ci))
    markdown = markdown_tables(render(tmp_path, "markdown", columns=columns, ci=ci))
    latex = latex_rows(render(tmp_path, "latex", columns=columns, ci=ci))
    html_tables = html_rows(render(tmp_path, "html", columns=columns, ci=ci))
    assert len(markdown) == len(latex) == len(html_tables) == len(document) == 2
    json_records = [record for table in document for record in table["rows"]]
    md_rows = [(headers, row) for headers, rows in markdown for row in rows]
    assert len(json_records) == len(csv) == len(md_rows) == 3
    header_of = {"clean": "clean %", "known_mean": "known mean %", "known_worst": "known worst %",
                 "unknown_mean": "unknown mean %", "unknown_worst": "unknown worst %", "autoattack": "AutoAttack %",
                 "delta_unknown_worst_vs_at": "Δ unknown worst vs best AT", "n": "n", "eps_linf": "ε (L∞)",
                 **{column: f"{column} %" for column in columns}}
    with_ci = {"clean", "known_worst", "unknown_worst", "autoattack", *columns} if ci else set()
    for (headers, cells), record, (_, csv_row) in zip(md_rows, json_records, csv.iterrows(), strict=True):
        assert cells[headers.index("name")] == record["name"] == csv_row["name"]
        for column, title in header_of.items():
            expected = [record[column]] + ([record[f"{column}_lo"], record[f"{column}_hi"]]
                                           if column in with_ci else [])
            expected = [value for value in expected if value is not None]
            assert numbers(cells[headers.index(title)]) == expected, (column, cells)
            csv_values = [csv_row[column]] + ([csv_row[f"{column}_lo"], csv_row[f"{column}_hi"]]
                                              if column in with_ci else [])
            assert [value for value in csv_values if not pd.isna(value)] == expected
            if not expected:
                assert cells[headers.index(title)] == "—"
    for markdown_table_, latex_table_, html_table_ in zip(markdown, latex, html_tables, strict=True):
        for md_cells, tex_cells, html_cells in zip(markdown_table_[1], latex_table_, html_table_, strict=True):
            assert [numbers(cell) for cell in tex_cells] == [numbers(cell) for cell in md_cells]
            assert html_cells == md_cells
    assert all(isinstance(record["clean"], float) and isinstance(record["n"], int) for record in json_records)
    assert all(record["cw-l2"] is None for record in json_records)


def test_latex_and_html_escape_special_characters(tmp_path: Path) -> None:
    _board(tmp_path)
    latex = render(tmp_path, "latex")
    assert r"\toprule" in latex and r"\bottomrule" in latex
    assert r"other 100\%" in latex and r"mid\_model" in latex and r"clean \%" in latex
    assert "other 100%" not in latex.replace(r"100\%", "")
    assert latex.count(r"\begin{tabular}") == 2
    page = render(tmp_path, "html")
    assert "<h3>mnist5k — whitebox</h3>" in page and "<table" in page
    names = [html.unescape(name) for name in re.findall(r"<td[^>]*>([^<]*)</td>", page)]
    assert "other 100%" in names


def test_columns_add_per_attack_robust_accuracy(tmp_path: Path) -> None:
    _board(tmp_path)
    table = csv_table(tmp_path, columns=["pgd-linf", "fgsm-linf@1", "cw-l2"])
    rows = table.set_index("name")
    assert rows.loc["mid_model", "pgd-linf"] == 62.5 and rows.loc["mid_model", "fgsm-linf@1"] == 62.5
    assert rows.loc["pgd-at-model", "pgd-linf"] == 50.0 and rows.loc["pgd-at-model", "fgsm-linf@1"] == 37.5
    assert pd.isna(rows.loc["other 100%", "pgd-linf"]) and rows.loc["other 100%", "fgsm-linf@1"] == 75.0
    assert table["cw-l2"].isna().all()
    assert list(table.columns).index("pgd-linf") == list(table.columns).index("autoattack") + 1
    with pytest.raises(UsageError, match="--columns"):
        render(tmp_path, "csv", columns=["pgd linf"])


# ---------------------------------------------------------------------------------------- interrupted runs

def test_result_without_its_matrix_never_appears(tmp_path: Path) -> None:
    write_run(tmp_path, {"pgd-linf": ("unknown", [T, T, T, T])}, name="complete")
    missing = write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, T, T])}, name="interrupted", sha="b" * 64)
    missing.with_suffix(".npz").unlink()
    damaged = write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, T, T])}, name="damaged", sha="c" * 64)
    damaged.with_suffix(".npz").write_bytes(b"not a zip file")
    with pytest.warns(LeaderboardWarning, match="interrupted"):
        table = csv_table(tmp_path)
    assert list(table["name"]) == ["complete"]
    result = RUNNER.invoke(app, ["leaderboard", "--results-dir", str(tmp_path)])
    assert result.exit_code == 0
    assert "interrupted" not in result.stdout and "damaged" not in result.stdout
    assert result.stderr.count("midbench: warning: skipped") == 2


def test_a_missing_matrix_is_not_united_into_a_complete_run(tmp_path: Path) -> None:
    write_run(tmp_path, {"pgd-linf": ("unknown", [F, F, T, T])}, minutes=0)
    newer = write_run(tmp_path, {"fgsm-linf": ("unknown", [T, T, F, F])}, minutes=1)
    newer.with_suffix(".npz").unlink()
    with pytest.warns(LeaderboardWarning):
        row = csv_table(tmp_path).iloc[0]
    assert row["unknown_worst"] == 50.0


def test_only_interrupted_results_exit_2_with_the_warning(tmp_path: Path) -> None:
    path = write_run(tmp_path, {"pgd-linf": ("unknown", [T, T, T, T])})
    path.with_suffix(".npz").unlink()
    result = RUNNER.invoke(app, ["leaderboard", "--results-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "midbench: warning: skipped" in result.stderr and "midbench eval" in result.stderr


# ------------------------------------------------------------------------------------- compare and export

def test_compare_puts_runs_side_by_side(tmp_path: Path) -> None:
    white = write_run(tmp_path, {"pgd-linf": ("known", [T, F, T, T]), "fgsm-linf": ("unknown", [T, T, F, T])})
    transfer = write_run(tmp_path, {"fgsm-linf": ("unknown", [T, T, T, T]), "cw-l2": ("unknown", [T, T, T, F])},
                         protocol="transfer", source="src", minutes=1)
    document = json.loads(render_compare([white, transfer], "json"))
    labels = [run["label"] for run in document["runs"]]
    assert labels == ["model-a (whitebox)", "model-a (transfer from src)"]
    rows = {row["metric"]: row for row in document["rows"]}
    cw = f"cw-l2@{load_registry().get('cw-l2').version}"  # the registry's current version of the entry
    assert list(rows) == ["clean", "pgd-linf@1", "fgsm-linf@1", cw, "known_mean", "known_worst",
                          "unknown_mean", "unknown_worst", "all_worst", "autoattack"]
    assert rows["pgd-linf@1"] == {"metric": "pgd-linf@1", labels[0]: 75.0, labels[1]: None}
    assert rows[cw][labels[1]] == 75.0 and rows["all_worst"][labels[0]] == 50.0
    csv = pd.read_csv(io.StringIO(render_compare([white, transfer], "csv"))).set_index("metric")
    assert csv.loc["fgsm-linf@1", labels[0]] == 75.0 and csv.loc["fgsm-linf@1", labels[1]] == 100.0
    markdown = render_compare([white, transfer], "markdown")
    (headers, cells), = markdown_tables(markdown)
    assert headers == ["metric", f"{labels[0]} %", f"{labels[1]} %"]
    assert ["pgd-linf@1", "75", "—"] in cells
    result = RUNNER.invoke(app, ["compare", str(white), str(transfer), "--format", "json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == document


def test_compare_refuses_missing_or_torn_files(tmp_path: Path) -> None:
    torn = tmp_path / "torn.json"
    torn.write_text('{"schema": "midbench.result/1", "run_')
    with pytest.raises(ArtifactError):
        render_compare([torn])
    assert RUNNER.invoke(app, ["compare", str(tmp_path / "absent.json")]).exit_code == 3
    assert RUNNER.invoke(app, ["compare", str(torn)]).exit_code == 3


def test_export_robustbench_card(tmp_path: Path) -> None:
    path = write_run(tmp_path, {"pgd-linf": ("known", [T, F, T, T]), "autoattack-linf": ("unknown", [T, F, F, T])},
                     dataset="cifar10", eps={"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}, clean=[T, T, T, T])
    card = export_robustbench(path)
    assert list(card) == ["name", "dataset", "eps", "clean_acc", "autoattack_acc", "architecture",
                          "number_forward_passes", "additional_data", "unreliable", "footnote"]
    assert card["eps"] == "8/255" and card["clean_acc"] == "100.00" and card["autoattack_acc"] == "50.00"
    assert card["number_forward_passes"] == 1 and card["additional_data"] is False and card["unreliable"] is False
    assert (card["name"], card["dataset"], card["architecture"]) == ("model-a", "cifar10", "lenet")
    mnist = export_robustbench(write_run(tmp_path, {"autoattack-linf": ("unknown", [T, F, F, F])}, sha="b" * 64))
    assert mnist["eps"] == 0.3 and mnist["autoattack_acc"] == "25.00"
    out = tmp_path / "card.json"
    result = RUNNER.invoke(app, ["export", "robustbench", str(path), "--out", str(out)])
    assert result.exit_code == 0 and json.loads(out.read_text()) == card


def test_export_marks_transfer_and_flagged_results_unreliable(tmp_path: Path) -> None:
    transfer = export_robustbench(write_run(tmp_path, {"autoattack-linf": ("unknown", [T, F, T, T])},
                                            protocol="transfer", source="src"))
    assert transfer["unreliable"] is True and "transfer" in transfer["footnote"] and "src" in transfer["footnote"]
    flagged = export_robustbench(write_run(
        tmp_path, {"autoattack-linf": ("unknown", [T, F, T, T])}, sha="b" * 64,
        flags=[{"code": "square-beats-whitebox", "message": "Square beats the white-box attacks"}]))
    assert flagged["unreliable"] is True and "square-beats-whitebox" in flagged["footnote"]


def test_export_without_autoattack_is_refused(tmp_path: Path) -> None:
    path = write_run(tmp_path, {"pgd-linf": ("known", [T, F, T, T])})
    with pytest.raises(UsageError, match="--autoattack"):
        export_robustbench(path)
    result = RUNNER.invoke(app, ["export", "robustbench", str(path)])
    assert result.exit_code == 2
    assert "run midbench eval --autoattack first" in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------------- CLI

def test_leaderboard_cli_formats_and_exit_codes(tmp_path: Path) -> None:
    _board(tmp_path)
    base = ["leaderboard", "--results-dir", str(tmp_path)]
    for fmt in ("markdown", "csv", "latex", "html", "json"):
        assert RUNNER.invoke(app, [*base, "--format", fmt, "--ci", "--columns", "pgd-linf"]).exit_code == 0, fmt
    shown = RUNNER.invoke(app, [*base, "--format", "json", "--columns", "pgd-linf,fgsm-linf", "--ci"])
    rows = json.loads(shown.stdout)[0]["rows"]
    assert {"pgd-linf", "pgd-linf_lo", "fgsm-linf_hi", "clean_lo", "autoattack_hi"} <= set(rows[0])
    assert RUNNER.invoke(app, [*base, "--format", "xlsx"]).exit_code == 2
    assert RUNNER.invoke(app, [*base, "--columns", "pgd linf"]).exit_code == 2
    assert RUNNER.invoke(app, ["compare", "--help"]).exit_code == 0
    assert "Example" in RUNNER.invoke(app, ["export", "robustbench", "--help"]).output


COMMITTED_RESULTS = sorted((Path(__file__).resolve().parents[1] / "results").glob("**/runs/*/*.json"))


@pytest.mark.parametrize("path", COMMITTED_RESULTS, ids=[p.name for p in COMMITTED_RESULTS])
def test_result_documents_read_and_write_back_unchanged(path: Path) -> None:
    """One reader and one writer for the result document: every committed result file (written by several
    midbench versions) reads into a ResultDocument whose JSON form is the file's, key for key."""
    import json

    from midbench.evaluation.documents import ResultDocument

    raw = json.loads(path.read_text(encoding="utf-8"))
    document = ResultDocument.from_dict(raw)
    assert document is not None
    assert document.to_dict() == raw
    assert len(document.attacks) == len(raw["attacks"]) and document.data.n_examples == raw["data"]["n_examples"]


# --------------------------------------------------------------------------------------- expected ranges

def _range_row(results: Path, name: str, sha: str, clean: float, autoattack: float, method: str = "pgd-at",
               protocol: str = "whitebox", eps: dict[str, float] | None = None) -> None:
    """A result of ``method`` with ``clean`` and ``autoattack`` accuracy on 200 examples (fractions)."""
    n = 200
    write_run(results, {"autoattack-linf": ("unknown", [i < autoattack * n for i in range(n)])},
              clean=[i < clean * n for i in range(n)], name=name, sha=sha, method=method, protocol=protocol,
              source="standard" if protocol == "transfer" else None, eps=eps)


def test_a_baseline_below_its_expected_range_is_flagged_in_every_table_and_is_not_best_at(tmp_path: Path) -> None:
    """The floors are a published figure less an allowance (midbench.evaluation.expected): a PGD-AT model far
    below both on mnist5k at ε 0.3 is flagged, white-box and (by its checkpoint) under transfer, and the Δ column
    is measured against the baseline within its range; one at another ε, or a method without figures, is not
    judged."""
    from midbench.evaluation.expected import BELOW_EXPECTED_RANGE, expected_range

    floors = expected_range("mnist5k", "pgd-at", 0.3)
    assert floors is not None and 90 < floors.clean < 100 and 0 < floors.autoattack < floors.clean
    results = tmp_path / "results"
    _range_row(results, "weak", "w" * 64, 0.70, 0.30)                       # the 70% clean PGD-AT
    _range_row(results, "good", "g" * 64, 0.99, 0.90, method="trades")
    _range_row(results, "weak", "w" * 64, 0.70, 0.60, protocol="transfer")  # transfer AA says nothing
    _range_row(results, "mid", "m" * 64, 0.70, 0.30, method="mid")
    boards = tables(results)
    white, transfer = boards[("mnist5k", "whitebox")], boards[("mnist5k", "transfer (standard)")]
    flags = {key: dict(zip(table["name"], table["flags"], strict=True))
             for key, table in (("whitebox", white), ("transfer", transfer))}
    assert BELOW_EXPECTED_RANGE in flags["whitebox"]["weak"].split(",")
    assert BELOW_EXPECTED_RANGE in flags["transfer"]["weak"].split(",")
    assert all(BELOW_EXPECTED_RANGE not in flags["whitebox"][name] for name in ("good", "mid"))
    assert white.attrs["excluded_from_best_at"] == ["weak"]
    other = tmp_path / "other-eps"
    _range_row(other, "weak", "w" * 64, 0.70, 0.30, eps={"Linf": 0.1, "L2": 2.0, "L1": 10.0})
    (table,) = tables(other).values()
    assert BELOW_EXPECTED_RANGE not in str(table["flags"].iloc[0])


def test_the_documented_floors_are_the_ones_the_flag_uses() -> None:
    """docs/baselines.md's table of expected ranges lists exactly midbench.evaluation.expected's floors."""
    from midbench.evaluation.expected import EXPECTED_RANGES

    text = (Path(__file__).resolve().parents[1] / "docs" / "baselines.md").read_text(encoding="utf-8")
    section = text.split("## Expected ranges", 1)[1].split("\n## ", 1)[0]
    rows = {(cells[0], cells[1]): (float(cells[3]), float(cells[4]))
            for line in section.splitlines() if line.startswith("| ") and not line.startswith("| dataset")
            for cells in [[cell.strip() for cell in line.strip("|").split("|")]]}
    assert rows == {key: (floor.clean, floor.autoattack) for key, floor in EXPECTED_RANGES.items()}


def test_the_column_list_and_the_shipped_tables_agree() -> None:
    """Each column a shipped table shows is listed in midbench.reporting.columns (header, kind, interval) or is one
    of the generated kinds (a score or curve per threat model, an interval bound), and each listed column of the
    ranked tables is shown by them: no column ships with a header or alignment of its own, and no listed column
    is dead. (The Δ of a table ranked by the common-unknown score replaces the unknown-worst Δ; the shipped tables
    rank by unknown worst, so only one of the two is shown.)"""
    from midbench.reporting.columns import COLUMNS

    listed = {column.key for column in COLUMNS}
    assert len(listed) == len(COLUMNS), "a column key is listed twice"
    shipped = Path(__file__).resolve().parents[1] / "results" / "mnist5k"
    shown: set[str] = set()
    for table in tables(shipped, ci=True).values():
        shown |= set(table.columns)
    assert shown
    for name in shown:
        base = name[:-3] if name.endswith(("_lo", "_hi")) else name
        assert base in listed or base.startswith(("score_", "curve_")), name
    ranked = {column.key for column in COLUMNS if column.group in ("base", "score")}
    assert ranked - shown == {"delta_common_unknown_vs_at"}
