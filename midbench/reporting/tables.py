"""Tables as text: the cells, headers and markdown, LaTeX, HTML, CSV and JSON renderings shared by the leaderboard,
its across-seed version, ``midbench compare`` and ``midbench export``. Values only: what the rows mean is the
callers' business."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from midbench.reporting.columns import TEXT_COLUMNS, header

#: the text of a missing value
MISSING = "—"
def percent(value: float | None) -> float | None:
    """A proportion as a percentage rounded to two decimals (``None`` stays ``None``)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(100.0 * float(value), 2)


def plain(value: Any) -> Any:
    """A cell as a JSON value: numpy scalars → Python numbers, NaN → ``None``."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def number_text(value: float) -> str:
    """The shortest text of a number that reads back to the same float (``56.17``, ``100``, ``-3.5``)."""
    if float(value).is_integer():
        return str(int(value))
    text = f"{value:g}"
    return text if float(text) == value else repr(float(value))


def cell_text(value: Any) -> str:
    """A cell as display text; missing values are ``—``."""
    value = plain(value)
    if value is None or value == "":
        return MISSING if value is None else ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return number_text(value)
    return str(value)


def display_frame(table: pd.DataFrame, ci: bool) -> pd.DataFrame:
    """All cells as text; a mean with a spread column (``<name>_sd``, across seeds) becomes ``mean ± sd``; with
    ``ci`` each proportion becomes ``value [low, high]``; the spread and bound columns go."""
    shown: dict[str, list[str]] = {}
    for name in table.columns:
        if name.endswith(("_lo", "_hi", "_sd")) and name[:-3] in table.columns:
            continue
        cells = [cell_text(value) for value in table[name]]
        if f"{name}_sd" in table.columns:
            cells = [text if text == MISSING or plain(sd) is None else f"{text} ± {cell_text(sd)}"
                     for text, sd in zip(cells, table[f"{name}_sd"], strict=True)]
        if ci and f"{name}_lo" in table.columns:
            cells = [text if text == MISSING or plain(low) is None else
                     f"{text} [{cell_text(low)}, {cell_text(high)}]"
                     for text, low, high in zip(cells, table[f"{name}_lo"], table[f"{name}_hi"], strict=True)]
        shown[name] = cells
    return pd.DataFrame(shown, columns=list(shown), dtype=object)


def markdown_table(shown: pd.DataFrame, headers: dict[str, str] | None = None) -> str:
    """A pipe table of display text; text columns left-aligned, numbers right-aligned."""
    align = ["left" if name in TEXT_COLUMNS else "right" for name in shown.columns]
    renamed = shown.rename(columns=headers or {name: header(name) for name in shown.columns})
    return renamed.to_markdown(index=False, disable_numparse=True, colalign=align)


_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "|": r"\textbar{}", "—": "---", "Δ": r"$\Delta$", "ε": r"$\varepsilon$",
          "∞": r"$\infty$"}


def latex_escape(text: str) -> str:
    """``text`` safe inside a LaTeX tabular (special characters escaped, ``--`` kept as two hyphens)."""
    out = []
    for index, char in enumerate(text):
        if char == "-" and text[index + 1:index + 2] == "-":
            out.append("-{}")
        else:
            out.append(_LATEX.get(char, char))
    return "".join(out)


def latex_table(shown: pd.DataFrame, caption: str) -> str:
    """A booktabs table (``\\usepackage{booktabs}``) of display text."""
    spec = "".join("l" if name in TEXT_COLUMNS else "r" for name in shown.columns)
    lines = [r"\begin{table}[ht]", r"\centering", rf"\caption{{{latex_escape(caption)}}}",
             rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(header(name)) for name in shown.columns)
             + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(cell) for cell in row) + r" \\" for row in shown.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def sort_key(value: Any) -> str | None:
    """A cell's ``data-sort``: the number of a numeric cell ("" when missing), None for text cells."""
    value = plain(value)
    if isinstance(value, bool | str):
        return None
    if value is None:
        return ""
    if isinstance(value, int | float):
        return "" if isinstance(value, float) and math.isnan(value) else repr(float(value))
    return None


def html_cells(shown: pd.DataFrame, values: pd.DataFrame | None = None, flagged: list[bool] | None = None
               ) -> tuple[str, str]:
    """The header row and the body rows of an HTML table of display text, the one rendering that the leaderboard's
    ``html`` format and the report share: text columns left, numbers right; with ``values`` (the table behind
    ``shown``, same rows and columns) every numeric cell carries its number as ``data-sort`` for the report's
    sortable tables, and ``flagged`` rows get the class ``flagged``."""
    def escape(value: Any) -> str:
        return html.escape(str(value), quote=True)

    head = "".join(f'<th scope="col" class="{"text" if name in TEXT_COLUMNS else "number"}">{escape(header(name))}'
                   "</th>" for name in shown.columns)
    body = []
    for index, row in enumerate(shown.itertuples(index=False)):
        cells = []
        for name, text in zip(shown.columns, row, strict=True):
            key = sort_key(values[name].iloc[index]) if values is not None else None
            sort = "" if key is None else f' data-sort="{escape(key)}"'
            numeric = key is not None if values is not None else name not in TEXT_COLUMNS
            cells.append(f'<td class="{"number" if numeric and name not in TEXT_COLUMNS else "text"}"{sort}>'
                         f"{escape(text)}</td>")
        row_class = ' class="flagged"' if flagged is not None and flagged[index] else ""
        body.append(f"<tr{row_class}>{''.join(cells)}</tr>")
    return f"<tr>{head}</tr>", "".join(body)


def html_table(shown: pd.DataFrame, caption: str) -> str:
    """A leaderboard table as a standalone HTML fragment (the ``html`` format): a heading and the table."""
    head, body = html_cells(shown)
    return (f"<h3>{html.escape(caption)}</h3>\n<table class=\"midbench-leaderboard\"><thead>{head}</thead>"
            f"<tbody>{body}</tbody></table>\n")


def csv_text(table: pd.DataFrame) -> str:
    """A table's values as CSV (no index; missing values empty): the one CSV rendering of every command."""
    return table.to_csv(index=False)


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """A table's rows as JSON records: numbers as numbers, ``None`` for missing values."""
    return [{key: plain(value) for key, value in record.items()} for record in table.to_dict(orient="records")]


def json_text(document: Any) -> str:  # noqa: ANN401
    """A JSON document as every command writes it: indented, UTF-8 text kept, one final newline."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def tables_as_data(ranked: Mapping[tuple[str, str], pd.DataFrame], fmt: str, **fields: Any) -> str:  # noqa: ANN401
    """Tables keyed by (dataset, protocol) as CSV (one file, ``dataset`` first) or JSON (a list of
    ``{"dataset", "protocol", **fields, "rows": [records]}``, numbers as numbers, ``null`` for missing values)."""
    if fmt == "csv":
        parts = [table.assign(dataset=ds)[["dataset", *table.columns]] for (ds, _), table in ranked.items()]
        return csv_text(pd.concat(parts, ignore_index=True))
    return json_text([{"dataset": ds, "protocol": protocol, **fields, "rows": records(table)}
                      for (ds, protocol), table in ranked.items()])


def markdown_block(caption: str, detail: str, notes: Iterable[str], headline: str | None = None) -> str:
    """One table's markdown section: its caption, the headline table above the detail table if there is one,
    then its notes."""
    top = f"{headline}\n\nDetail:\n\n" if headline else ""
    return f"### {caption}\n\n{top}{detail}\n" + "".join(f"\n{note}\n" for note in notes)


def tables_as_text(blocks: list[str], fmt: str, what: str) -> str:
    """The sections of a markdown, LaTeX or HTML document joined; LaTeX gets a comment naming its package."""
    preamble = f"% midbench {what}; needs \\usepackage{{booktabs}}\n" if fmt == "latex" else ""
    return preamble + "\n".join(blocks)
