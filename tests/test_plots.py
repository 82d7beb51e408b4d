"""``midbench plot``: every plotted point is the accuracy recomputed from the per-example matrices of the result
files, not a number copied from a summary.

The data is the shipped sweep ``results/mnist5k`` (real evaluations, white-box and transfer, with the
unknown-attack profile), plus one small evaluation with ``--check-eps``/``--check-steps`` for the sweeps figure.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from midbench.cli.app import app
from midbench.reporting.plots import KINDS, figures, load_tables
from midbench.reporting.plots.data import PROTOCOL_METRICS, tradeoff_metric

RESULTS = Path(__file__).resolve().parents[1] / "results" / "mnist5k"
RUNNER = CliRunner()


def shipped_runs() -> dict[tuple[str, str], tuple[dict, dict[str, np.ndarray]]]:
    """{(model name, protocol name): (result JSON, arrays of its .npz)}; one run each in the shipped sweep."""
    runs = {}
    for path in sorted((RESULTS / "runs" / "mnist5k").glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        with np.load(path.with_suffix(".npz")) as saved:
            arrays = {key: saved[key] for key in saved.files}
        key = (document["checkpoint"]["name"], document["protocol"]["name"])
        assert key not in runs, f"two runs of {key}: the recomputation below assumes one"
        runs[key] = (document, arrays)
    return runs


@pytest.fixture(scope="module")
def drawn() -> list:
    return figures(load_tables(RESULTS))


def protocol_name(label: str) -> str:
    return label.split(" ")[0]


def gids(figure: object, prefix: str) -> list:
    return [artist for artist in figure.findobj(lambda artist: str(artist.get_gid() or "").startswith(prefix))]


def test_every_kind_is_drawn_from_the_shipped_results(drawn: list) -> None:
    kinds = {item.kind for item in drawn}
    assert kinds == set(KINDS) - {"sweeps"}  # the shipped sweep ran no --check-eps/--check-steps
    tables = {(item.dataset, item.protocol) for item in drawn if item.kind == "curves"}
    assert len(tables) == 2  # white-box and transfer


def test_curve_points_are_the_profile_matrices(drawn: list) -> None:
    runs = shipped_runs()
    checked = 0
    for item in [item for item in drawn if item.kind == "curves"]:
        for line in gids(item.figure, "curve|"):
            _, threat_model, model = line.get_gid().split("|")
            document, arrays = runs[(model, protocol_name(item.protocol))]
            matrix = arrays[f"profile_{threat_model}"]
            entry = next(m for m in document["profile"]["threat_models"] if m["id"] == threat_model)
            np.testing.assert_allclose(line.get_xdata(), entry["strengths"])
            np.testing.assert_allclose(line.get_ydata(), 100.0 * matrix.mean(axis=0))
            assert (line.get_linestyle() == "--") == bool(entry["seen"])
            checked += 1
    assert checked == sum(len(doc["profile"]["threat_models"]) for doc, _ in runs.values() if "profile" in doc)


def test_heatmap_cells_are_the_attack_columns(drawn: list) -> None:
    runs = shipped_runs()
    for item in [item for item in drawn if item.kind == "heatmap"]:
        for image in gids(item.figure, "heatmap|"):
            split = image.get_gid().split("|")[1]
            axes = image.axes
            attacks = [label.get_text() for label in axes.get_xticklabels()]
            models = [label.get_text() for label in axes.get_yticklabels()]
            values = image.get_array()
            for i, model in enumerate(models):
                document, arrays = runs[(model, protocol_name(item.protocol))]
                ids = [row["id"] for row in document["attacks"]]
                for j, attack in enumerate(attacks):
                    row = next((r for r in document["attacks"] if r["id"] == attack and r["split"] == split), None)
                    if row is None:
                        assert values.mask[i, j], (model, attack)
                    else:
                        expected = 100.0 * arrays["robust"][:, ids.index(attack)].mean()
                        assert values[i, j] == pytest.approx(expected), (model, attack)


def test_protocol_bars_are_the_worst_cases_under_each_protocol(drawn: list) -> None:
    runs = shipped_runs()
    (item,) = [item for item in drawn if item.kind == "protocols"]
    bars = gids(item.figure, "protocol|")
    assert bars
    for bar in bars:
        _, metric, label, model = bar.get_gid().split("|")
        assert metric in PROTOCOL_METRICS
        document, arrays = runs[(model, protocol_name(label))]
        splits = np.array([row["split"] for row in document["attacks"]])
        if metric == "known_worst":
            columns = splits == "known"
        else:
            columns = np.array([row["id"].startswith("autoattack") for row in document["attacks"]])
        expected = 100.0 * arrays["robust"][:, columns].all(axis=1).mean()
        # the leaderboard rounds percentages to two decimals
        assert bar.get_height() == pytest.approx(expected, abs=0.005), (metric, label, model)


def test_tradeoff_points_are_clean_accuracy_against_the_ranking_score(drawn: list) -> None:
    runs = shipped_runs()
    tables = {(table.dataset, table.protocol): table for table in load_tables(RESULTS)}
    for item in [item for item in drawn if item.kind == "tradeoff"]:
        rows = {row["name"]: row for row in tables[(item.dataset, item.protocol)].rows}
        for line in gids(item.figure, "tradeoff|"):
            model = line.get_gid().split("|")[1]
            _, arrays = runs[(model, protocol_name(item.protocol))]
            (x,), (y,) = line.get_xdata(), line.get_ydata()
            assert y == pytest.approx(100.0 * arrays["clean"].mean(), abs=0.005)
            key, _ = tradeoff_metric(tables[(item.dataset, item.protocol)])  # the score, or the UA mean unscored
            assert x == rows[model][key]


def test_sweep_points_are_the_recorded_sanity_sweeps(pgd_at_checkpoint: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    outcome = RUNNER.invoke(app, ["eval", str(pgd_at_checkpoint), "--attacks", "fgsm-linf", "--n-examples", "16",
                                  "--check-eps", "--check-steps", "--results-dir", str(results), "--quiet"])
    assert outcome.exit_code == 0, outcome.output
    (document_path,) = (results / "runs" / "mnist5k").glob("*.json")
    sanity = json.loads(document_path.read_text(encoding="utf-8"))["sanity"]
    (item,) = figures(load_tables(results), ["sweeps"])
    lines = {line.get_gid().split("|")[1]: line for line in gids(item.figure, "sweep|")}
    assert sorted(lines) == ["eps", "steps"]
    for kind, line in lines.items():
        points = sanity[f"{kind}_sweep"]["points"]
        np.testing.assert_allclose(line.get_xdata(), [point[kind] for point in points])
        np.testing.assert_allclose(line.get_ydata(), [100.0 * point["robust_accuracy"] for point in points])


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_the_format_follows_the_suffix(suffix: str, magic: bytes, tmp_path: Path) -> None:
    out = tmp_path / f"figure{suffix}"
    outcome = RUNNER.invoke(app, ["plot", "protocols", "--results-dir", str(RESULTS), "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    assert out.read_bytes().startswith(magic)


def test_several_figures_share_the_stem_of_one_file_name(tmp_path: Path) -> None:
    outcome = RUNNER.invoke(app, ["plot", "curves", "--results-dir", str(RESULTS), "--out", str(tmp_path / "c.svg")])
    assert outcome.exit_code == 0, outcome.output
    assert sorted(path.name for path in tmp_path.iterdir()) == \
        ["c-curves-mnist5k-transfer_standard-lenet-mnist5k.svg", "c-curves-mnist5k-whitebox.svg"]


def test_the_same_results_give_the_same_svg_bytes(tmp_path: Path) -> None:
    for name in ("a.svg", "b.svg"):
        outcome = RUNNER.invoke(app, ["plot", "tradeoff", "--results-dir", str(RESULTS), "--protocol", "whitebox",
                                      "--out", str(tmp_path / name)])
        assert outcome.exit_code == 0, outcome.output
    assert (tmp_path / "a.svg").read_bytes() == (tmp_path / "b.svg").read_bytes()


def test_a_result_without_its_matrix_is_skipped_with_a_warning(tmp_path: Path) -> None:
    results = tmp_path / "results"
    shutil.copytree(RESULTS / "runs", results / "runs")
    (victim,) = (results / "runs" / "mnist5k").glob("mid__whitebox__*.npz")
    victim.unlink()
    outcome = RUNNER.invoke(app, ["plot", "heatmap", "--results-dir", str(results), "--protocol", "whitebox",
                                  "--out", str(tmp_path / "h.png")])
    assert outcome.exit_code == 0, outcome.output
    assert "midbench: warning: skipped" in outcome.output and victim.name in outcome.output
    assert (tmp_path / "h.png").exists()


@pytest.mark.parametrize(("arguments", "message"), [
    (["curves", "--results-dir", "{tmp}/none"], "no complete result files"),
    (["curves", "--out", "{tmp}/figure.gif"], "end the file name in .png, .svg, .pdf"),
    (["sweeps"], "nothing to draw as sweeps"),
    (["curves", "--format", "jpg", "--out", "{tmp}/folder"], "--format 'jpg'"),
    (["heatmap", "--out", "{tmp}/file.txt/figure.png"], "cannot create directory"),
])
def test_bad_input_is_one_line_with_exit_2(arguments: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    command = ["plot", *[part.replace("{tmp}", str(tmp_path)) for part in arguments]]
    if "--results-dir" not in command:
        command += ["--results-dir", str(RESULTS)]
    if "--out" not in command:
        command += ["--out", str(tmp_path / "figure.png")]
    outcome = RUNNER.invoke(app, command)
    assert outcome.exit_code == 2, outcome.output
    lines = [line for line in outcome.output.splitlines() if line.startswith("midbench: error:")]
    assert len(lines) == 1 and message in lines[0], outcome.output
