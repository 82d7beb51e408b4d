"""``midbench leaderboard``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import guarded, split_csv
from midbench.cli._options import RESULTS_DIR, ResultsDir
from midbench.reporting.formats import TableFormat


@guarded
def leaderboard_command(
    results_dir: ResultsDir = RESULTS_DIR,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset.")] = None,
    output_format: Annotated[TableFormat, typer.Option(
        "--format", help="markdown, csv, latex (booktabs), html or json.")] = TableFormat.MARKDOWN,
    columns: Annotated[list[str] | None, typer.Option(
        "--columns", help="Add a robust-accuracy column per attack: registry ids (pgd-linf) or keys "
                          "(pgd-linf@1), comma-separated.")] = None,
    ci: Annotated[bool, typer.Option(
        "--ci", help="Show 95% Wilson intervals: '12.3 [10.1, 14.8]', or <column>_lo/_hi columns in csv and "
                     "json.")] = False,
    references: Annotated[list[Path] | None, typer.Option(
        "--references", help="A reference set (folder or reference.json written by `midbench calibrate`) to score "
                             "the profile with, before the shipped ones; repeatable.")] = None,
    registry_dir: Annotated[list[Path] | None, typer.Option(
        help="Extra attack-registry folder defining the threat models of --references sets; repeatable.")] = None,
    output: Annotated[Path | None, typer.Option(help="Write to this file (atomically) instead of the terminal.")] = None,
) -> None:
    """Rank every evaluated model: one table per dataset and protocol.

    Runs of one checkpoint on the same examples are united into one row (per-example worst case over all their
    attacks); a result without its per-example matrix (.npz) is skipped with a warning.

    A sweep's results folder with seed-<s>/ replicates (`seeds = [..]`) gives one table across seeds: mean ± spread
    [95% interval] per model.

    Example: midbench leaderboard --format latex --columns pgd-linf,cw-l2 --ci --output results/leaderboard.tex
    """
    import sys
    import warnings

    from midbench.errors import UsageError
    from midbench.fileio import atomic_write_text
    from midbench.reporting.leaderboard import render
    from midbench.reporting.rows import LeaderboardWarning
    from midbench.reporting.seeds import render_seeds, seed_dirs

    if references:  # every threat model of a user's set must be one the registry defines
        from midbench.attacks.specs import load_registry
        from midbench.evaluation.references import check_threat_models, load_reference_set

        known = set(load_registry(list(registry_dir or [])).threat_models)
        for folder in references:
            check_threat_models(load_reference_set(folder), known)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", LeaderboardWarning)
        try:
            replicates = seed_dirs(results_dir)
            if replicates and (results_dir / "runs").is_dir():
                print(f"midbench: warning: {results_dir} holds runs/ and seed-<s>/ replicates; ranking runs/ (give "
                      "the replicates a results folder of their own for the table across seeds)", file=sys.stderr)
                replicates = {}
            if replicates:
                if columns:
                    raise UsageError("--columns is not available across seeds; give one replicate's folder "
                                     f"({next(iter(replicates.values()))}) for per-attack columns")
                text = render_seeds(replicates, output_format.value, dataset, tuple(references or []))
            else:
                text = render(results_dir, output_format.value, dataset, split_csv(columns), ci,
                              tuple(references or []))
        finally:
            # Skipped results must be visible, as one plain line each, even when no table is left.
            for warning in caught:
                print(f"midbench: warning: {warning.message}", file=sys.stderr)
    if output is None:
        print(text, end="" if text.endswith("\n") else "\n")
    else:
        atomic_write_text(output, text)
        print(f"leaderboard: {output}")
