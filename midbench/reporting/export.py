"""Export results in other projects' formats: RobustBench-style model cards (docs/evaluation.md, "Leaderboards").

A card has RobustBench's model-info fields ``name, dataset, eps, clean_acc, autoattack_acc, architecture,
number_forward_passes, additional_data, unreliable, footnote``. As in RobustBench, accuracies are percentages
with two decimals written as strings (``"56.17"``) and ε is a fraction string when it is k/255 (``"8/255"``).
A midbench classifier is one deterministic forward pass (``number_forward_passes`` 1) trained on the dataset
alone (``additional_data`` false). ``unreliable`` is true when the evaluation was not white-box or a sanity
check flagged it; the footnote says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from midbench.errors import UsageError
from midbench.evaluation.documents import ResultDocument, load_result_file

CARD_FIELDS = ("name", "dataset", "eps", "clean_acc", "autoattack_acc", "architecture", "number_forward_passes",
               "additional_data", "unreliable", "footnote")


def eps_value(eps: float) -> str | float:
    """``"8/255"`` when ``eps`` is a whole number of 255ths, else the number (``0.3``)."""
    steps = float(eps) * 255
    if round(steps) >= 1 and abs(steps - round(steps)) < 1e-6:
        return f"{round(steps)}/255"
    return float(f"{float(eps):.6g}")


def _accuracy_text(value: float) -> str:
    return f"{100.0 * float(value):.2f}"


def robustbench_card(result: ResultDocument, source: str | Path | None = None) -> dict[str, Any]:
    """The RobustBench-style card of one result document (``source``: its file, for messages).

    Raises:
        UsageError: the result has no AutoAttack accuracy.
    """
    autoattack = result.summary.get("autoattack")
    rows = [row for row in result.attacks if row.is_autoattack]
    if autoattack is None or not rows:
        where = source or result.run_id
        raise UsageError(f"{where} has no AutoAttack result; run midbench eval --autoattack first "
                         "(RobustBench ranks by AutoAttack standard at the L∞ ε)")
    if result.clean_accuracy is None:
        raise UsageError(f"{source or result.run_id} has no clean accuracy (no examples); rerun "
                         "midbench eval with --n-examples > 0")
    protocol, flags, data = result.protocol, result.flags, result.data
    eps = eps_value(rows[-1].eps)
    version = result.versions.get("midbench")
    notes = [f"Evaluated by midbench{' ' + version if version else ''} with AutoAttack standard (L∞, ε = {eps}) on "
             f"{data.n_examples} {data.split} examples of {data.dataset} (run {result.run_id})."]
    if protocol.name != "whitebox":
        source_name = protocol.source_name
        crafted = f" on the source model {source_name}" if source_name else " on another model"
        notes.append(f"Unreliable: protocol {protocol.name}, not white-box — the attacks were crafted{crafted}, "
                     "so the robust accuracy is an upper bound.")
    if flags:
        listed = "; ".join(f"{flag.get('code')}: {flag.get('message')}" if flag.get("message") else
                           str(flag.get("code")) for flag in flags)
        notes.append(f"Unreliable: sanity checks flagged the evaluation ({listed}).")
    return {
        "name": result.checkpoint.name or result.run_id,
        "dataset": data.dataset,
        "eps": eps,
        "clean_acc": _accuracy_text(result.clean_accuracy),
        "autoattack_acc": _accuracy_text(autoattack),
        "architecture": result.checkpoint.arch,
        "number_forward_passes": 1,
        "additional_data": False,
        "unreliable": protocol.name != "whitebox" or bool(flags),
        "footnote": " ".join(notes),
    }


def export_robustbench(path: str | Path) -> dict[str, Any]:
    """The RobustBench-style card of the result file at ``path``."""
    return robustbench_card(load_result_file(path), path)
