"""A sweep's plan: its evaluations in order, their names in the state file, the sources crafted once, and the
``--dry-run`` description (docs/evaluation.md, "Sweeps")."""

from __future__ import annotations

from midbench.bench.sweep_file import Sweep


def evaluation_plan(sweep: Sweep) -> list[tuple[str, str, str | None]]:
    """(run or model, protocol, transfer source) in order: every run, then every evaluate-only model, white-box
    (source None); under transfer, each but the source itself, once per source (``transfer_source``, then each of
    ``extra_transfer_sources``)."""
    sources = (sweep.transfer_source, *sweep.extra_transfer_sources)
    plan: list[tuple[str, str, str | None]] = []
    for name in sweep.names:
        for protocol in sweep.protocols:
            if protocol == "whitebox":
                plan.append((name, protocol, None))
                continue
            # attacking a source through itself is its white-box row
            plan.extend((name, protocol, source) for source in sources if source != name)
    return plan


def evaluation_key(sweep: Sweep, step: tuple[str, str, str | None]) -> str:
    """An evaluation's name in the state file: ``<model>/<protocol>``, with ``@<source>`` for an extra source."""
    name, protocol, source = step
    extra = source is not None and source != sweep.transfer_source
    return f"{name}/{protocol}" + (f"@{source}" if extra else "")


def crafted_sources(sweep: Sweep) -> list[str]:
    """The transfer sources that get a crafting step of their own when steps run side by side: those through which
    at least two models are evaluated. Without it, evaluations started together would each craft the source's
    attacks; with it, the crafting step fills the transfer cache once and they all read it. None with ``nproc``
    above 1: a sharded evaluation crafts without the cache."""
    if sweep.nproc > 1:
        return []
    counts: dict[str, int] = {}
    for _, protocol, source in evaluation_plan(sweep):
        if protocol == "transfer" and source is not None:
            counts[source] = counts.get(source, 0) + 1
    return [source for source, count in counts.items() if count >= 2]


def describe_plan(sweep: Sweep) -> list[str]:
    """One line per step, for ``--dry-run`` and the log."""
    if sweep.seeds:
        return [f"seed {seed}: {line}" for seed in sweep.seeds for line in describe_plan(sweep.replicate(seed))]
    lines = [f"train {run.name}: {run.config.method}, {run.config.arch}, {run.config.epochs} epochs" +
             (f", {run.config.attack_steps} attack steps" if run.config.attack_steps else "") for run in sweep.runs]
    lines += [f"load {model.name}: {model.describe()}" +
              (f" from {model.files(sweep.dataset)[0]}" if model.is_zoo else "") for model in sweep.models]
    n = sweep.n_examples if sweep.n_examples is not None else "all"
    for name, protocol, source in evaluation_plan(sweep):
        via = f" (attacks crafted on {source})" if source else ""
        lines.append(f"evaluate {name} {protocol}{via} on {n} test examples")
    return lines
