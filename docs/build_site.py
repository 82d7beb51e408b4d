"""Build midbench's documentation site with MkDocs, offline and in strict mode (a broken link or reference fails).

    python docs/build_site.py OUT          # the built site goes to OUT (not committed)

The site is assembled in a temporary folder, so the repository keeps its layout: the README (the quick start) as
the home page, every page of ``docs/`` as the user guide, ``results/README.md`` (the result files and the columns
of the tables), and three generated references — the command line from the Typer application itself, the Python
API from the docstrings of :mod:`midbench.api` (mkdocstrings), and the attack and threat-model catalogue from the
attack registry. Needs the ``docs`` extra (``pip install -e '.[docs]'``; the test extra includes it).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from enum import Enum
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: the user guide's pages in reading order, then the reference pages (generated ones included)
GUIDE = ["datasets.md", "evaluation.md", "scoring.md", "flags.md", "unforeseen.md", "baselines.md", "mid.md", "reproduce-mid.md",
         "clusters.md", "reliability.md", "performance.md", "architecture.md"]


def readme_page() -> str:
    """The README as the home page: its links into ``docs/`` point at the site's pages."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.sub(r"\]\(docs/([^)#]+)", r"](\1", text)


def cli_page() -> str:
    """Every command and sub-command of ``midbench`` with its help, usage and options, from the Typer app."""
    import typer.main

    from midbench.cli.app import app

    root = typer.main.get_command(app)
    lines = ["# Command-line reference", "",
             "Generated from the `midbench` application itself (the same text as `midbench COMMAND --help`).", ""]

    def visit(command: Any, path: list[str]) -> None:  # noqa: ANN401 - a Click command (Typer bundles its own Click)
        if hasattr(command, "commands"):  # a group: its sub-commands
            for name in sorted(command.commands):
                visit(command.commands[name], [*path, name])
            return
        context = command.context_class(command, info_name=" ".join(path))
        lines.extend([f"## `{' '.join(path)}`", "", _plain(command.help or ""), "", "```",
                      f"{' '.join(path)} {' '.join(command.collect_usage_pieces(context))}", "```", ""])
        rows = [param for param in command.params if param.name not in ("help",)]
        if rows:
            lines.extend(["| option | help | default |", "|---|---|---|"])
            for param in rows:
                names = ", ".join(f"`{name}`" for name in [*param.opts, *param.secondary_opts])
                text = _plain(getattr(param, "help", None) or "").replace("|", "\\|").replace("\n", " ")
                default = param.default if param.default not in (None, False, ()) and not callable(param.default) \
                    else ""
                default = default.value if isinstance(default, Enum) else default
                lines.append(f"| {names} | {text} | {f'`{default}`' if default != '' else ''} |")
            lines.append("")

    visit(root, ["midbench"])
    return "\n".join(lines) + "\n"


def _plain(text: str) -> str:
    """Help text without Rich's markup escapes (``\\[train]`` → ``[train]``), as Markdown."""
    return text.replace("\\[", "[").strip()


def catalogue_page() -> str:
    """The threat models and attack entries of the shipped registry, with their budgets and sources."""
    from midbench.attacks.specs import load_registry

    registry = load_registry()
    lines = ["# Attacks and threat models", "",
             "Generated from the attack registry (`attacks_registry/*.toml`, the same entries as "
             "`midbench attacks list`). How the profile climbs them: [Evaluation](evaluation.md) and "
             "[Scoring](scoring.md).", "", "## Threat models", "",
             "| threat model | ranked | strengths (× full budget) | what it allows | source |", "|---|---|---|---|---|"]
    for model in registry.threat_models.values():
        ladder = ", ".join(f"{strength:g}" for strength in model.ladder)
        lines.append(f"| `{model.id}` | {'yes' if model.ranked else 'no (a floor)'} | {ladder} | "
                     f"{_cell(model.description)} | {_cell(model.source)} |")
    lines.extend(["", "## Attack entries", "", "| attack | threat model | norm | ε | parameters | citation |",
                  "|---|---|---|---|---|---|"])
    for spec in registry.attacks.values():
        params = ", ".join(f"{key}={value}" for key, value in sorted(spec.params.items()))
        norm = spec.norm.value if spec.norm is not None else ""
        lines.append(f"| `{spec.key}` | {spec.threat_model or spec.family} | {norm} | {_cell(str(spec.eps))} | "
                     f"{_cell(params)} | {_cell(spec.citation)} |")
    lines.extend(["", "## Suites", "", "| suite | attacks |", "|---|---|"])
    for name, members in registry.suites.items():
        lines.append(f"| `{name}` | {_cell(', '.join(members))} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def api_page() -> str:
    members = "[evaluate, leaderboard, load_model, load_result, train, EvaluationResult]"
    return ("# Python API reference\n\nThe guide is [The Python API](api.md); below, every public name.\n\n"
            f"::: midbench.api\n    options:\n      members: {members}\n")


def config(source: Path, out: Path) -> dict[str, Any]:
    """The MkDocs configuration: strict, offline (the built-in theme, local search), every page in the nav."""
    guide = [{page.removesuffix(".md").replace("-", " ").capitalize(): page} for page in GUIDE]
    return {
        "site_name": "midbench", "docs_dir": str(source), "site_dir": str(out), "strict": True,
        "use_directory_urls": False, "theme": {"name": "mkdocs"},
        "validation": {"links": {"not_found": "warn", "absolute_links": "warn", "unrecognized_links": "warn"}},
        "plugins": ["search", {"mkdocstrings": {"handlers": {"python": {
            "paths": [str(REPO)], "options": {"docstring_style": "google", "show_source": False,
                                              "show_root_heading": True, "heading_level": 2}}}}}],
        "nav": [{"Home": "index.md"}, {"The Python API": "api.md"}, {"User guide": guide},
                {"Reference": [{"Command line": "cli.md"}, {"Python API": "api-reference.md"},
                               {"Attacks and threat models": "attacks.md"}, {"Result files": "results.md"}]}],
    }


def build(out: Path, extra: dict[str, str] | None = None) -> None:
    """Assemble the pages in a temporary folder and build the site into ``out``; ``extra``: more pages by file
    name (the tests add one with a broken link).

    Raises:
        SystemExit: the build failed (MkDocs prints why: in strict mode any warning fails it).
    """
    import logging

    from mkdocs.commands.build import build as mkdocs_build
    from mkdocs.config import load_config
    from mkdocs.exceptions import Abort

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory() as folder:
        source = Path(folder) / "pages"
        shutil.copytree(REPO / "docs", source, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        (source / "index.md").write_text(readme_page(), encoding="utf-8")
        for figure in re.findall(r"\]\((results/[^)]+\.svg)\)", readme_page()):  # the README's figures
            (source / figure).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / figure, source / figure)
        (source / "results.md").write_text((REPO / "results" / "README.md").read_text(encoding="utf-8"),
                                           encoding="utf-8")
        (source / "cli.md").write_text(cli_page(), encoding="utf-8")
        (source / "attacks.md").write_text(catalogue_page(), encoding="utf-8")
        (source / "api-reference.md").write_text(api_page(), encoding="utf-8")
        for name, text in (extra or {}).items():
            (source / name).write_text(text, encoding="utf-8")
        settings = config(source, out.resolve())
        import yaml

        config_file = Path(folder) / "mkdocs.yml"
        config_file.write_text(yaml.safe_dump(settings, sort_keys=False), encoding="utf-8")
        try:
            mkdocs_build(load_config(str(config_file)))
        except Abort as error:
            raise SystemExit(f"docs: the site did not build ({error}); fix the warnings above") from None


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="where the built site goes")
    build(parser.parse_args(argv).out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
