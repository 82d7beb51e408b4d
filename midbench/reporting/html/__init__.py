"""``midbench report``: one self-contained HTML page of a results directory.

The page holds, per dataset and protocol, the leaderboard (the same numbers as ``midbench leaderboard --ci``,
sortable by clicking a header), the flags with their explanations, and the figures of :mod:`midbench.reporting.plots`
inlined as SVG; then one section per evaluated model (its provenance, every attack with its 95% interval, the
AutoAttack components) and the command lines that produced the results. Nothing is fetched from the network:
style, script and figures are in the file, so it opens offline and can be archived with a paper.

A result whose per-example matrix is missing or damaged is left out and named in a "skipped" list at the top.
"""

from __future__ import annotations

import html
import io
import json
import re
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from midbench.errors import UsageError
from midbench.evaluation.documents import ResultDocument, read_result
from midbench.fileio import atomic_write_text
from midbench.reporting.html.assets import CSS, SCRIPT
from midbench.reporting.leaderboard import profile_notes, tables
from midbench.reporting.plots import DrawnFigure, figures
from midbench.reporting.plots.data import Table, load_tables
from midbench.reporting.plots.draw import svg_text
from midbench.reporting.rows import LeaderboardWarning
from midbench.reporting.tables import display_frame, html_cells, plain

REPORT_FILE = "report.html"
SWEEP_FILE = "sweep.toml"


def build_report(results_dir: str | Path, title: str | None = None) -> tuple[str, list[str]]:
    """The report page of ``results_dir`` and the results it skipped (one line each).

    Raises:
        UsageError: the directory is missing or holds no complete result.
    """
    results = Path(results_dir)
    if not results.is_dir():
        raise UsageError(f"--results-dir {results} does not exist; run `midbench eval` or `midbench demo` first")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeaderboardWarning)
        ranked = tables(results, ci=True)
        plotted = load_tables(results) if ranked else []
    skipped = list(dict.fromkeys(str(warning.message) for warning in caught
                                 if issubclass(warning.category, LeaderboardWarning)))
    if not ranked:
        raise UsageError(f"no complete result files under {results / 'runs'}; run `midbench eval` first"
                         + (f" ({len(skipped)} skipped: {skipped[0]})" if skipped else ""))
    drawn = figures(plotted)
    # every result document read once: the flags, the model sections and the commands all come from them
    documents = {path: document for table in plotted for row in table.rows for path in row.get("paths") or []
                 if (document := read_result(path)) is not None}
    page = _Page(title or f"midbench report — {results.name or results.resolve().name}", documents)
    page.header(results, plotted, skipped)
    for (dataset, protocol), table in ranked.items():
        plotted_table = next(t for t in plotted if (t.dataset, t.protocol) == (dataset, protocol))
        page.table_section(dataset, protocol, table, plotted_table,
                           [item for item in drawn if (item.dataset, item.protocol) == (dataset, protocol)])
    for dataset in sorted({dataset for dataset, _ in ranked}):
        page.figures([item for item in drawn if item.dataset == dataset and not item.protocol],
                     f"{dataset}: white-box against transfer", f"protocols-{dataset}")
    page.models(plotted)
    page.commands(results)
    return page.render(), skipped


def write_report(results_dir: str | Path, out: str | Path | None = None, title: str | None = None
                 ) -> tuple[Path, list[str]]:
    """Write the report (default ``<results_dir>/report.html``) atomically; returns its path and what was
    skipped."""
    text, skipped = build_report(results_dir, title)
    path = Path(out) if out is not None else Path(results_dir) / REPORT_FILE
    atomic_write_text(path, text)
    return path, skipped


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _anchor(*parts: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


class _Page:
    """The page under construction: a table of contents and the sections, in order."""

    def __init__(self, title: str, documents: dict[str, ResultDocument]) -> None:
        self.title = title
        self.documents = documents
        self.contents: list[tuple[str, str]] = []
        self.parts: list[str] = []

    def section(self, anchor: str, heading: str, level: int = 2) -> None:
        if level == 2:
            self.contents.append((anchor, heading))
        self.parts.append(f'<h{level} id="{_e(anchor)}">{_e(heading)}</h{level}>')

    def header(self, results: Path, plotted: list[Table], skipped: list[str]) -> None:
        rows = [row for table in plotted for row in table.rows]
        newest = max((str(row.get("created") or "") for row in rows), default="")
        models = len({row.get("name") for row in rows})
        self.parts.append(f"<p class=\"muted\">{models} models, {len(rows)} rows in {len(plotted)} tables (one "
                          f"per dataset and protocol) from "
                          f"<code>{_e(results)}</code>; newest result {_e(newest)}. Every accuracy is recomputed "
                          "from the per-example matrices; intervals are 95% Wilson intervals.</p>")
        if skipped:
            items = "".join(f"<li>{_e(line)}</li>" for line in skipped)
            self.parts.append(f'<div class="skipped"><p><strong>Skipped {len(skipped)} result(s)</strong> — not '
                              f'in any table or figure:</p><ul>{items}</ul></div>')

    def table_section(self, dataset: str, protocol: str, table: pd.DataFrame, plotted: Table,
                      drawn: list[DrawnFigure]) -> None:
        anchor = _anchor("table", dataset, protocol)
        self.section(anchor, f"{dataset} — {protocol}")
        headline = pd.DataFrame(table.attrs.get("headline") or [])
        if "common_unknown_score" in headline:  # what a paper quotes first; the detail table has the rest
            self.parts.append(_leaderboard_html(headline, f"Headline: {dataset}, {protocol}"))
        self.parts.append(_leaderboard_html(table, f"Leaderboard: {dataset}, {protocol}"))
        for note in profile_notes(table):
            self.parts.append(f'<p class="note">{_e(note)}</p>')
        self.parts.append(_flags_html(plotted, self.documents_of))
        self.figures(drawn, None, anchor)

    def figures(self, drawn: list[DrawnFigure], heading: str | None, anchor: str) -> None:
        if not drawn:
            return
        if heading:
            self.section(anchor, heading)
        for item in drawn:
            self.parts.append(f'<figure id="{_e(_anchor("figure", item.file_stem()))}" class="plot" '
                              f'data-kind="{_e(item.kind)}">{_inline_svg(svg_text(item.figure))}'
                              f"<figcaption>{_e(_CAPTIONS[item.kind])}</figcaption></figure>")

    def documents_of(self, row: dict[str, Any]) -> list[ResultDocument]:
        """The result documents united into a leaderboard row, oldest first."""
        return [self.documents[path] for path in row.get("paths") or [] if path in self.documents]

    def models(self, plotted: list[Table]) -> None:
        self.section("models", "Models")
        for table in plotted:
            for row in table.rows:
                if documents := self.documents_of(row):
                    self.parts.append(_model_html(table, row, documents, _examples_html(row, documents)))

    def commands(self, results: Path) -> None:
        self.section("commands", "How these results were made")
        commands = {document.run_id: document.command for document in self.documents.values()}
        recorded = [f"<li><code>{_e(command)}</code></li>" for command in dict.fromkeys(commands.values())
                    if command]
        if recorded:
            self.parts.append(f"<p>The commands that wrote the result files:</p><ul>{''.join(recorded)}</ul>")
        missing = sorted(run_id for run_id, command in commands.items() if not command)
        if missing:
            self.parts.append(f'<p class="note">{len(missing)} result file(s) do not record their command line '
                              "(written by a version of midbench before 0.2, or from Python).</p>")
        sweep = results / SWEEP_FILE
        if sweep.is_file():
            self.parts.append(f"<p>This folder is the output of a sweep: <code>midbench bench --config "
                              f"{_e(sweep)} --results-dir {_e(results)}</code>, with this file:</p>"
                              f"<pre>{_e(sweep.read_text(encoding='utf-8'))}</pre>")

    def render(self) -> str:
        contents = "".join(f'<li><a href="#{_e(anchor)}">{_e(heading)}</a></li>' for anchor, heading in self.contents)
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                f"<title>{_e(self.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
                f"<h1>{_e(self.title)}</h1>\n<nav><ul>{contents}</ul></nav>\n" + "\n".join(self.parts)
                + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n")


_CAPTIONS = {
    "curves": "Robust accuracy against the strength of each threat model (fraction of its full budget); nested "
              "worst case per example, 95% bands; dashed with hollow markers where the model was trained against "
              "the threat model.",
    "heatmap": "Robust accuracy per model and attack: the model's own training attacks (known) on the left, the "
               "others (unknown) on the right; blank where the model was not evaluated so.",
    "tradeoff": "Clean accuracy against robustness to unknown attacks; bars are 95% intervals of the clean "
                "accuracy.",
    "sweeps": "PGD accuracy along ε and along the number of steps; it must not rise (a rise means a weak attack "
              "or masked gradients).",
    "protocols": "Each model's accuracy when the attacks are crafted on the model itself (white-box) and on the "
                 "transfer source, 95% intervals.",
}


def _inline_svg(svg: str) -> str:
    """matplotlib's SVG made fit for inlining in HTML: no RDF metadata block (it names external vocabularies) and
    no namespace declarations (the HTML parser supplies the SVG and XLink namespaces)."""
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.DOTALL)
    return re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", svg)


def _leaderboard_html(table: pd.DataFrame, caption: str) -> str:
    shown = display_frame(table.drop(columns=[c for c in table.columns if c.startswith("curve_")]), ci=True)
    head, body = html_cells(shown, values=table[shown.columns], flagged=[bool(plain(v)) for v in table["flags"]])
    return (f'<div class="scroll"><table class="sortable leaderboard"><caption>{_e(caption)} — click a header '
            f"to sort</caption><thead>{head}</thead><tbody>{body}</tbody></table></div>")


def _flags_html(table: Table, documents_of: Callable[[dict[str, Any]], list[ResultDocument]]) -> str:
    """Every flag raised on the table's results, with the message that explains it, per model."""
    items = []
    for row in table.rows:
        for document in documents_of(row):
            for flag in document.flags:
                items.append(f"<li><strong>{_e(row['name'])}</strong>: <code>{_e(flag.get('code'))}</code> — "
                             f"{_e(flag.get('message'))}</li>")
    if not items:
        return '<p class="note">No sanity flag was raised on these results.</p>'
    return (f'<p>Flags (highlighted rows; a flag never changes a number, it says why one may be too high):</p>'
            f'<ul class="flag-list">{"".join(dict.fromkeys(items))}</ul>')


def _examples_html(row: dict[str, Any], documents: list[ResultDocument]) -> str:
    """The pictures of what each threat model of the profile did to a few test images, from the newest result
    file that kept them (``examples_<id>`` in its per-example file; older files have none)."""
    import numpy as np

    for path, document in reversed(list(zip(row.get("paths") or [], documents, strict=False))):
        if not document.profile or not document.per_example:
            continue
        try:
            with np.load(Path(path).with_name(document.per_example)) as stored:
                examples = {key.removeprefix("examples_"): stored[key] for key in stored.files
                            if key.startswith("examples_")}
        except Exception:  # noqa: BLE001 - numpy's header parser raises SyntaxError or TokenError on a corrupt header
            continue
        strengths = {entry["id"]: entry.get("strengths", []) for entry in document.profile.get("threat_models", [])}
        figures = []
        for model, images in examples.items():
            labels = ["clean"] + [f"{s:g}" for s in strengths.get(model, [])][:images.shape[0] - 1]
            figures.append(_examples_grid(images, labels, model))
        if figures:
            return ('<details class="examples"><summary>Illustrations: each threat model of the profile on the '
                    f"first {next(iter(examples.values())).shape[1]} test images, by strength</summary>"
                    "<p>Made by each threat model's first profile attack with its effort capped (a few steps, one "
                    "run), crafted on the model the protocol attacks; an image already misclassified keeps its "
                    "fooling version at the stronger rungs. The curves come from the full attacks.</p>"
                    f'{"".join(figures)}</details>')
    return ""


def _examples_grid(images: Any, row_labels: list[str], threat_model: str) -> str:
    """One threat model's pictures as an HTML table: a row per strength, a column per test image, each cell an
    inline PNG of the stored pixels (rows × columns × H × W × C, uint8), enlarged by the style sheet with crisp
    pixels. A matplotlib figure of one axes per image looked the same and took most of the report's time."""
    rows = []
    for label, row in zip(row_labels, images, strict=False):
        cells = "".join(f'<td><img src="{_png_data_uri(picture)}" alt="{_e(threat_model)} at {_e(label)}"></td>'
                        for picture in row)
        rows.append(f'<tr><th scope="row">{_e(label)}</th>{cells}</tr>')
    return (f'<figure class="examples" data-threat-model="{_e(threat_model)}"><figcaption>{_e(threat_model)}'
            f'</figcaption><table class="example-grid">{"".join(rows)}</table></figure>')


def _png_data_uri(picture: Any) -> str:
    """A data URI of the PNG of one H × W × C uint8 image (C = 1 or 3). PIL writes no time stamp, so the same
    pixels give the same bytes and the report stays reproducible."""
    import base64

    from PIL import Image

    pixels = picture[..., 0] if picture.shape[-1] == 1 else picture
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _model_html(table: Table, row: dict[str, Any], documents: list[ResultDocument], examples: str = "") -> str:
    newest = documents[-1]
    checkpoint, data = newest.checkpoint, newest.data
    anchor = _anchor("model", table.dataset, table.protocol, str(row["name"]))
    provenance = {
        "protocol": newest.protocol.label,
        "checkpoint": checkpoint.path, "sha256": checkpoint.sha256, "method": checkpoint.method,
        "architecture": checkpoint.arch, "training attacks": ", ".join(checkpoint.train_attacks) or "none",
        "source (transfer)": json.dumps(newest.protocol.source) if newest.protocol.source else None,
        "examples": f"{data.n_examples} of {data.dataset} ({data.split}), indices sha256 {data.indices_sha256}",
        "ε": ", ".join(f"{norm} {value:g}" for norm, value in data.eps.items()),
        "seed / device": f"{newest.seed} / {newest.device}",
        "software": ", ".join(f"{name} {version}" for name, version in newest.versions.items() if version),
        "result files": ", ".join(Path(path).name for path in row.get("paths") or []),
    }
    facts = "".join(f"<dt>{_e(key)}</dt><dd>{_e(value)}</dd>" for key, value in provenance.items() if value)
    attack_rows = []
    for document in documents:
        for attack in document.attacks:
            interval = f"[{100 * attack.ci95[0]:.2f}, {100 * attack.ci95[1]:.2f}]" if attack.ci95 else ""
            value = "" if attack.robust_accuracy is None else f"{100 * attack.robust_accuracy:.2f}"
            eps = "" if attack.eps is None else f"{attack.eps:g}"
            seconds = "" if attack.seconds is None else f"{attack.seconds:.1f}"
            attack_rows.append(
                f'<tr><td class="text">{_e(attack.id)}</td><td class="text">{_e(attack.split)}</td>'
                f'<td class="text">{_e(attack.norm or "")}</td><td data-sort="{_e(eps)}">{_e(eps)}</td>'
                f'<td data-sort="{_e(value)}">{_e(value)} {_e(interval)}</td>'
                f'<td data-sort="{_e(seconds)}">{_e(seconds)}</td>'
                f"<td>{_e(attack.forward_passes or '')}</td><td>{_e(attack.backward_passes or '')}</td></tr>")
    components = _components_html(documents)
    clean = row.get("clean")
    return (f'<section class="model" id="{_e(anchor)}"><h3>{_e(row["name"])} — {_e(table.protocol)} '
            f'<span class="muted">({_e(table.dataset)})</span></h3>'
            f'<p>Clean accuracy {_e(clean)}%, rank {_e(row.get("rank"))} of {len(table.rows)}.</p>'
            f'<dl class="provenance">{facts}</dl>'
            '<div class="scroll"><table class="sortable attacks"><caption>Attacks (robust accuracy %, 95% '
            'interval)</caption><thead><tr><th class="text">attack</th><th class="text">split</th>'
            '<th class="text">norm</th><th>ε</th><th>robust %</th><th>seconds</th><th>forward</th>'
            f'<th>backward</th></tr></thead><tbody>{"".join(attack_rows)}</tbody></table></div>'
            f"{components}{examples}</section>")


def _components_html(documents: Iterable[ResultDocument]) -> str:
    """AutoAttack's components: how many examples each one took (robust accuracy after it)."""
    parts = []
    for document in documents:
        for attack in document.attacks:
            components = attack.extra.get("components")
            if not isinstance(components, dict) or not components:
                continue
            cells = "".join(f"<tr><td class=\"text\">{_e(name)}</td><td>{_e(_component_text(value))}</td></tr>"
                            for name, value in components.items())
            parts.append(f'<table class="components"><caption>{_e(attack.id)}: robust accuracy after each '
                         f'component</caption><thead><tr><th class="text">component</th><th>after it</th></tr>'
                         f"</thead><tbody>{cells}</tbody></table>")
    return "".join(parts)


def _component_text(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {number:.4g}" if isinstance(number, float) else f"{key} {number}"
                         for key, number in value.items())
    if isinstance(value, float):
        return f"{100 * value:.2f}%"
    return str(value)


__all__ = ["REPORT_FILE", "build_report", "write_report"]
