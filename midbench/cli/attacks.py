"""``midbench attacks list`` and ``midbench attacks show``: the attack registry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from midbench.cli._common import console, guarded
from midbench.reporting.formats import ConsoleFormat

attacks_app = typer.Typer(no_args_is_help=True, help="The attack registry: entries and suites.")

RegistryDirs = Annotated[list[Path] | None, typer.Option(help="Extra directory of attack TOML files; repeatable.")]


@attacks_app.command("list")
@guarded
def attacks_list(
    family: Annotated[str | None, typer.Option(help="Only this family (linf, l2, l1, l0, spatial, noise, ensemble).")] = None,
    suite: Annotated[str | None, typer.Option(help="Only the attacks of this suite.")] = None,
    output_format: Annotated[ConsoleFormat, typer.Option("--format", help="table or json.")] = ConsoleFormat.TABLE,
    registry_dir: RegistryDirs = None,
) -> None:
    """List attack entries (and suites).

    Example: midbench attacks list --family linf
    """
    from midbench.attacks.specs import FAMILIES, load_registry
    from midbench.errors import UsageError

    if family is not None and family not in FAMILIES:
        raise UsageError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")
    registry = load_registry(registry_dir or [])
    specs = registry.suite(suite) if suite else list(registry.attacks.values())
    if family:
        specs = [spec for spec in specs if spec.family == family]
    if output_format is ConsoleFormat.JSON:
        print(json.dumps([{"id": s.id, "version": s.version, "family": s.family,
                           "norm": s.norm.value if s.norm else None, "eps": s.eps, "target": s.target,
                           "implementation": s.implementation, "params": s.params, "citation": s.citation}
                          for s in specs], indent=2))
        return
    from rich.table import Table

    table = Table(title="attacks")
    for column in ("id", "family", "norm", "ε", "target", "parameters"):
        table.add_column(column)
    for spec in specs:
        params = ", ".join(f"{k}={v}" for k, v in spec.params.items())
        table.add_row(spec.key, spec.family, spec.norm.value if spec.norm else "—", str(spec.eps),
                      spec.target or "—", params)
    show = console()
    show.print(table)
    if not suite and not family:
        suites = Table(title="suites")
        suites.add_column("suite")
        suites.add_column("attacks")
        for name, ids in registry.suites.items():
            suites.add_row(name, ", ".join(ids))
        show.print(suites)
        from midbench.attacks.plans import colour_only, ladder_of

        colour = set(colour_only(registry, None))
        models = Table(title=f"threat models ({len(registry.threat_models)})")
        for column in ("threat model", "ladder (mnist5k)", "ranked", "description"):
            models.add_column(column)
        for model in registry.threat_models.values():
            ladder = " ".join(f"{s:g}" for s in ladder_of(registry, model, "mnist5k"))
            models.add_row(model.id, ladder, "yes" if model.ranked else "no (a floor)",
                           model.description + (" [colour images only]" if model.id in colour else ""))
        show.print(models)


@attacks_app.command("show")
@guarded
def attacks_show(attack_id: Annotated[str, typer.Argument(help="An attack id, e.g. pgd-linf.")],
                 image: Annotated[Path | None, typer.Option(
                     help="Also draw the attack along its threat model's ladder into this PNG/SVG/PDF: rows are "
                          "strengths, columns test images.")] = None,
                 dataset: Annotated[str, typer.Option(help="Dataset of the picture's test images.")] = "mnist5k",
                 model: Annotated[Path | None, typer.Option(
                     help="Checkpoint to draw worst-case examples on; without one, an optimised corruption is "
                          "drawn at random latents.")] = None,
                 n_images: Annotated[int, typer.Option(help="Test images (columns) in the picture.")] = 6,
                 seed: Annotated[int, typer.Option(help="Seed of the picture's random latents and starts.")] = 0,
                 data_dir: Annotated[Path | None, typer.Option(help="Dataset folder (non-embedded datasets).")] = None,
                 registry_dir: RegistryDirs = None) -> None:
    """Show one attack entry in full, and optionally draw what it does (docs/unforeseen.md).

    Example: midbench attacks show fog --image fog.png
    """
    from midbench.attacks.specs import load_registry
    from midbench.errors import UsageError

    registry = load_registry(registry_dir or [])
    spec = registry.get(attack_id)
    for field in ("id", "version", "family", "norm", "implementation", "eps", "target", "params", "passes",
                  "citation", "description", "source", "threat_model", "budget"):
        value = getattr(spec, field)
        print(f"{field:15} {value.value if hasattr(value, 'value') else value}")
    if image is None:
        return
    if n_images < 1:
        raise UsageError(f"--n-images must be at least 1, got {n_images}")
    import torch

    from midbench.artifacts.loading import load_classifier
    from midbench.data import get_dataset, load_split
    from midbench.evaluation.examples import example_grid
    from midbench.reporting.plots.draw import examples_figure, save

    loaded = load_classifier(model, dataset=dataset) if model is not None else None
    net = loaded.model.eval() if loaded is not None else None
    split = load_split(dataset, "test", data_dir)
    data = split.subset(torch.arange(min(n_images, len(split))))
    grid = example_grid(registry, attack_id, dataset, get_dataset(dataset).eps, data, net, seed)
    rows = ["clean"] + [f"strength {s:g}" for s in grid.strengths]
    captions = ([[f"{p} (label {y})" if p != y else str(p) for p, y in zip(row, grid.labels, strict=True)]
                 for row in grid.predictions.tolist()] if grid.predictions is not None else None)
    how = f"worst case on {loaded.metadata.name or model.stem}" if loaded is not None else "random latents"
    written = save(examples_figure(grid.images, rows, captions,
                                   f"{attack_id} ({grid.threat_model}) on {dataset}, {how}"), image)
    print(f"picture: {written}")
