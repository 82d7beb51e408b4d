"""The columns of midbench's tables, each defined once: its key, displayed header, kind (text or number), interval
and the tables that show it (docs/evaluation.md, "Leaderboards"; docs/scoring.md).

Every rendering (markdown, LaTeX, HTML, CSV, JSON) and every table (leaderboard, its across-seed version, compare,
the report) reads these facts from :data:`COLUMNS`; the lists the leaderboard works with (its base columns, the
proportions with a Wilson interval, the score columns, the headline) are derived from it in its order. Columns
made per attack or per threat model (``pgd-linf``, ``score_l2``, ``curve_l2``) are not listed: their headers come
from :func:`header`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: where a column appears: ``base`` every ranked table (in the order of :data:`COLUMNS`), ``score`` tables with an
#: unknown-attack profile (after AutoAttack), ``other`` tables of their own (compare's ``metric``, the across-seed
#: ``seeds``, CSV's ``dataset``)
Group = Literal["base", "score", "other"]


@dataclass(frozen=True)
class Column:
    """One column of midbench's tables."""

    key: str
    header: str
    #: text (left-aligned) rather than a number (right-aligned)
    text: bool = False
    group: Group = "base"
    #: an accuracy of the model (a proportion of examples or a mean of them), in percent
    accuracy: bool = False
    #: its interval: ``wilson`` (a proportion of examples: ``_lo``/``_hi`` with ``--ci``) or ``bootstrap`` (a
    #: score: ``_lo``/``_hi`` always, docs/scoring.md)
    interval: Literal["wilson", "bootstrap"] | None = None
    #: in the headline table a paper quotes (docs/scoring.md)
    headline: bool = False


#: every listed column, in the order tables show them
COLUMNS: tuple[Column, ...] = (
    Column("rank", "rank", headline=True),
    Column("name", "name", text=True, headline=True),
    Column("seeds", "seeds", group="other", headline=True),
    Column("method", "method", text=True),
    Column("arch", "arch", text=True),
    Column("protocol", "protocol", text=True),
    Column("clean", "clean %", accuracy=True, interval="wilson", headline=True),
    Column("known_mean", "known mean %", accuracy=True),
    Column("known_worst", "known worst %", accuracy=True, interval="wilson"),
    Column("unknown_mean", "unknown mean %", accuracy=True),
    Column("unknown_worst", "unknown worst %", accuracy=True, interval="wilson"),
    Column("autoattack", "AutoAttack %", accuracy=True, interval="wilson", headline=True),
    Column("unknown_score", "unknown score %", group="score", interval="bootstrap"),
    Column("common_unknown_score", "common-unknown score %", group="score", interval="bootstrap", headline=True),
    Column("ua_mean", "UA mean %", group="score", interval="bootstrap", headline=True),
    Column("pct_seen", "% seen", group="score"),
    Column("seen", "seen", text=True, group="score"),
    Column("reference", "reference set", text=True, group="score"),
    Column("delta_unknown_worst_vs_at", "Δ unknown worst vs best AT"),
    Column("delta_common_unknown_vs_at", "Δ common-unknown score vs best AT", group="score"),
    Column("flags", "flags", text=True, headline=True),
    Column("n", "n"),
    Column("eps_linf", "ε (L∞)"),
    Column("dataset", "dataset", text=True, group="other"),
    Column("metric", "metric", text=True, group="other"),
)
_BY_KEY = {column.key: column for column in COLUMNS}

#: the displayed header of each listed column
HEADERS = {column.key: column.header for column in COLUMNS}
#: columns of text (left-aligned); the others are numbers (right-aligned)
TEXT_COLUMNS = frozenset(column.key for column in COLUMNS if column.text)
#: the model's accuracies among the base columns
ACCURACY_COLUMNS = [column.key for column in COLUMNS if column.accuracy]
#: accuracies that are proportions of examples, so they have a Wilson interval (``all_worst`` is not a column)
PROPORTION_COLUMNS = [column.key for column in COLUMNS if column.interval == "wilson"]
#: the columns of every ranked table
BASE_COLUMNS = [column.key for column in COLUMNS if column.group == "base"]
#: the profile's columns of a ranked table, after AutoAttack, each score with its bootstrap bounds (the Δ column of
#: a scored table replaces the unknown-worst one in place, so it is not among them)
SCORE_COLUMNS = [part for column in COLUMNS if column.group == "score" and not column.key.startswith("delta_")
                 for part in ([column.key, f"{column.key}_lo", f"{column.key}_hi"] if column.interval == "bootstrap"
                              else [column.key])]
#: the headline of a table (those of its columns that it has, in this order)
HEADLINE_COLUMNS = [column.key for column in COLUMNS if column.headline]


def header(key: str) -> str:
    """The displayed header of a column: a listed one's, ``<threat model> score %`` and ``<threat model> curve`` for
    the profile's per-threat-model columns, ``<attack> %`` for a per-attack robust accuracy."""
    if key in _BY_KEY:
        return _BY_KEY[key].header
    if key.startswith("score_"):
        return f"{key[6:]} score %"
    if key.startswith("curve_"):
        return f"{key[6:]} curve"
    return f"{key} %"
