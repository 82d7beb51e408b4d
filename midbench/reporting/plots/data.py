"""What each figure shows, computed from the result files alone (the leaderboard's united per-example matrices,
:func:`midbench.reporting.rows.collect`), so that every plotted number is one a table would print.

Accuracies are percentages; every proportion of examples carries its 95% Wilson interval (Wilson, JASA 1927),
the band or error bar of the figures. The figures follow Carlini et al., "On Evaluating Adversarial
Robustness" (arXiv:1902.06705, 2019), §5: accuracy against the perturbation budget and against the attack's
iterations, and the attack-by-attack detail behind a worst case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from midbench.errors import UsageError
from midbench.evaluation.metrics import wilson_interval
from midbench.protocols import Protocol
from midbench.reporting.leaderboard import rank_table
from midbench.reporting.rows import collect

WHITEBOX = Protocol.WHITEBOX.value


@dataclass(frozen=True)
class Proportion:
    """A share of ``n`` examples in percent, with its 95% Wilson interval."""

    value: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, successes: int, n: int) -> Proportion:
        low, high = wilson_interval(int(successes), int(n))
        return cls(100.0 * successes / n, 100.0 * low, 100.0 * high, int(n))

    @classmethod
    def from_row(cls, row: dict[str, Any], key: str) -> Proportion | None:
        """A leaderboard row's ``key`` (percent) with its ``_lo``/``_hi`` bounds; None where it has none."""
        value = row.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return None
        return cls(float(value), float(row[f"{key}_lo"]), float(row[f"{key}_hi"]), int(row["n"]))


@dataclass(frozen=True)
class Table:
    """One leaderboard table (a dataset under a protocol), rows in rank order."""

    dataset: str
    protocol: str
    rows: list[dict[str, Any]]

    @property
    def title(self) -> str:
        return f"{self.dataset} — {self.protocol}"

    @property
    def has_profile(self) -> bool:
        return any(isinstance(row.get("profile"), dict) for row in self.rows)


@dataclass(frozen=True)
class Curve:
    """One model's accuracy along one threat model's ladder of strengths (nested worst case per example)."""

    model: str
    strengths: tuple[float, ...]
    points: tuple[Proportion, ...]
    seen: bool


@dataclass(frozen=True)
class CurvePanel:
    threat_model: str
    curves: tuple[Curve, ...]


@dataclass(frozen=True)
class Heatmap:
    """Robust accuracy (%) of every model (rows, rank order) under every attack, in two blocks: the attacks
    known to the model (its own training attacks) and the unknown ones. An attack known to one model and unknown
    to another is a column of both blocks; a cell is NaN where the model was not evaluated with the attack under
    that split."""

    models: tuple[str, ...]
    blocks: dict[str, tuple[tuple[str, ...], np.ndarray]]  # split -> (attacks, models × attacks values)
    n: tuple[int, ...]

    @property
    def attacks(self) -> tuple[str, ...]:
        return tuple(attack for attacks, _ in self.blocks.values() for attack in attacks)


#: the accuracies compared across protocols, with their axis names: the model's own training attacks (the
#: MID paper's known attacks, reported only under transfer there) and AutoAttack
PROTOCOL_METRICS = {"known_worst": "known attacks, worst case", "autoattack": "AutoAttack"}


@dataclass(frozen=True)
class ProtocolBars:
    """Per model and metric (:data:`PROTOCOL_METRICS`): its accuracy under each protocol (white-box first)."""

    dataset: str
    protocols: tuple[str, ...]
    models: tuple[str, ...]
    metrics: tuple[str, ...]
    values: dict[tuple[str, str, str], Proportion]  # (model, protocol, metric)


@dataclass(frozen=True)
class TradeoffPoint:
    model: str
    clean: Proportion
    score: float
    at_baseline: bool


@dataclass(frozen=True)
class CheckSweep:
    """A ``--check-eps`` or ``--check-steps`` measurement: PGD accuracy along ε or along the steps."""

    model: str
    kind: str  # "eps" or "steps"
    attack: str
    x: tuple[float, ...]
    points: tuple[Proportion, ...]


def load_tables(results_dir: str | Path, dataset: str | None = None, protocol: str | None = None) -> list[Table]:
    """The ranked leaderboard tables under ``results_dir`` (every column, profiles included).

    Raises:
        UsageError: no complete result there (or none for ``dataset``/``protocol``).
    """
    frame = collect(results_dir, dataset)
    tables = []
    if not frame.empty:
        for (name, label), group in frame.groupby(["dataset", "protocol"], sort=True):
            if protocol is not None and str(label) != protocol and not str(label).startswith(protocol):
                continue
            ranked = rank_table(group, ci=False)
            tables.append(Table(str(name), str(label), [_plain_row(row) for row in ranked.to_dict("records")]))
    if not tables:
        only = "".join(f" for {what} {value!r}" for what, value in (("dataset", dataset), ("protocol", protocol))
                       if value)
        raise UsageError(f"no complete result files under {Path(results_dir) / 'runs'}{only}; run `midbench eval` "
                         "first")
    return tables


def _plain_row(row: dict[str, Any]) -> dict[str, Any]:
    return {key: (None if isinstance(value, float) and math.isnan(value) else value) for key, value in row.items()}


def curve_panels(table: Table) -> list[CurvePanel]:
    """One panel per threat model of the unknown-attack profile, one curve per model that has it."""
    models: dict[str, list[Curve]] = {}
    for row in table.rows:
        for threat_model, entry in (row.get("profile") or {}).items():
            strengths = tuple(float(s) for s in entry["points"])
            points = tuple(Proportion.of(entry["survivors"][s], entry["n"]) for s in entry["points"])
            models.setdefault(threat_model, []).append(Curve(str(row["name"]), strengths, points,
                                                             bool(entry["seen"])))
    return [CurvePanel(name, tuple(curves)) for name, curves in sorted(models.items())]


def heatmap(table: Table) -> Heatmap:
    """The models × attacks matrices of one table, known and unknown attacks in separate blocks (AutoAttack
    last in its block)."""
    blocks = {}
    for split in ("known", "unknown"):
        found = {attack["id"]: bool(attack["autoattack"]) for row in table.rows
                 for attack in row.get("attack_results") or [] if attack["split"] == split}
        attacks = sorted(found, key=lambda key: (found[key], key))
        values = np.full((len(table.rows), len(attacks)), np.nan)
        for i, row in enumerate(table.rows):
            for attack in row.get("attack_results") or []:
                if attack["split"] == split:
                    values[i, attacks.index(attack["id"])] = 100.0 * attack["robust"] / row["n"]
        if attacks:
            blocks[split] = (tuple(attacks), values)
    return Heatmap(tuple(str(row["name"]) for row in table.rows), blocks, tuple(int(row["n"]) for row in table.rows))


def protocol_bars(tables: list[Table]) -> list[ProtocolBars]:
    """Per dataset with a white-box table and at least one other: the models evaluated under both, with each
    metric of :data:`PROTOCOL_METRICS` under each protocol (the white-box–transfer gap)."""
    result = []
    for dataset in sorted({table.dataset for table in tables}):
        chosen = [table for table in tables if table.dataset == dataset]
        chosen.sort(key=lambda table: (table.protocol != WHITEBOX, table.protocol))
        if len(chosen) < 2 or chosen[0].protocol != WHITEBOX:
            continue
        values = {(str(row["name"]), table.protocol, metric): proportion
                  for table in chosen for row in table.rows for metric in PROTOCOL_METRICS
                  if (proportion := Proportion.from_row(row, metric)) is not None}
        protocols = [table.protocol for table in chosen]
        paired = {(str(row["name"]), metric) for row in chosen[0].rows for metric in PROTOCOL_METRICS
                  if sum((str(row["name"]), protocol, metric) in values for protocol in protocols) >= 2}
        metrics = tuple(metric for metric in PROTOCOL_METRICS if any(m == metric for _, m in paired))
        models = tuple(str(row["name"]) for row in chosen[0].rows
                       if any((str(row["name"]), metric) in paired for metric in metrics))
        if models:
            result.append(ProtocolBars(dataset, tuple(protocols), models, metrics, values))
    return result


def tradeoff_metric(table: Table) -> tuple[str, str]:
    """The row key and axis name of the robustness side of the trade-off: the common-unknown score when the
    table has scored profiles (what it is ranked by), the UA mean when its profiles have no reference set
    (docs/scoring.md), else the unknown worst case."""
    if table.has_profile and any(row.get("common_unknown_score") is not None for row in table.rows):
        return "common_unknown_score", "common-unknown score (% of the reference)"
    if table.has_profile:
        return "ua_mean", "UA mean: accuracy at the middle rung, common-unknown threat models (%)"
    return "unknown_worst", "unknown-attack worst case (%)"


def tradeoff_points(table: Table) -> list[TradeoffPoint]:
    key, _ = tradeoff_metric(table)
    return [TradeoffPoint(str(row["name"]), clean, float(row[key]), bool(row.get("at_baseline")))
            for row in table.rows
            if row.get(key) is not None and (clean := Proportion.from_row(row, "clean")) is not None]


def sweeps(table: Table) -> list[CheckSweep]:
    """The sanity sweeps recorded with the table's rows (``midbench eval --check-eps/--check-steps``)."""
    found = []
    for row in table.rows:
        for kind in ("eps", "steps"):
            entry = (row.get("sanity") or {}).get(f"{kind}_sweep")
            if not entry:
                continue
            n = int(entry["n_examples"])
            points = [(float(point[kind]), round(float(point["robust_accuracy"]) * n)) for point in entry["points"]]
            found.append(CheckSweep(str(row["name"]), kind, str(entry["attack"]), tuple(x for x, _ in points),
                               tuple(Proportion.of(robust, n) for _, robust in points)))
    return found

