"""Registry files: user directories, one-line errors naming the file and entry, and no arbitrary imports."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from midbench.attacks.specs import load_registry
from midbench.cli.app import app
from midbench.errors import UsageError

RUNNER = CliRunner()
GOOD = '''
[[attack]]
id = "pgd-linf-long"
version = 1
family = "linf"
norm = "Linf"
implementation = "midbench.attacks.gradient:PGD"
citation = "Madry et al. 2018"
params = { steps = 100, step_size = "eps/40", random_start = true }
'''

EXTENSION = '''
[[attack]]
id = "pgd-linf-200"
extends = "pgd-linf"
version = 1
description = "PGD-200"
params = { steps = 200 }
passes = { forward = "steps", backward = "steps" }
'''

BAD_ENTRIES = [
    ("unknown-key", GOOD.replace('citation = "Madry et al. 2018"', 'citation = "x"\ncolour = "red"'), "colour"),
    ("bad-version", GOOD.replace("version = 1", "version = 0"), "version"),
    ("bad-family", GOOD.replace('family = "linf"', 'family = "fuzzy"'), "family"),
    ("bad-norm", GOOD.replace('norm = "Linf"', 'norm = "L7"'), "unknown norm"),
    ("bad-eps", GOOD.replace('family = "linf"', 'family = "linf"\neps = "lots"'), "eps must be"),
    ("bad-param", GOOD.replace("steps = 100", "stepz = 100"), "stepz"),
    ("bad-target", GOOD.replace('family = "linf"', 'family = "linf"\ntarget = "sideways"'), "target policy"),
    ("not-toml", "[[attack]\nid = ", "not valid TOML"),
    ("duplicate-id", GOOD.replace('"pgd-linf-long"', '"pgd-linf"'), "duplicate attack id"),
    ("outside-midbench", GOOD.replace("midbench.attacks.gradient:PGD", "os:system"), "must be"),
    ("non-attack-class", GOOD.replace("midbench.attacks.gradient:PGD", "midbench.attacks.norms:Norm"),
     "not an Attack class"),
    ("unknown-module", GOOD.replace("midbench.attacks.gradient:PGD", "midbench.attacks.nothing:PGD"),
     "cannot be imported"),
    ("unknown-autoattack", GOOD.replace("midbench.attacks.gradient:PGD", "autoattack:apgd-dlr"), "autoattack"),
    ("malformed-relative", GOOD.replace('"eps/40"', '"1e*eps"'), "multiple of eps"),
    ("zero-divisor", GOOD.replace('"eps/40"', '"eps/0"'), "multiple of eps"),
    ("negative-relative", GOOD.replace('family = "linf"', 'family = "linf"\neps = "-1*eps"'), "eps must be"),
    ("bad-value", GOOD.replace("steps = 100", "steps = 0"), "steps must be at least 1"),
    ("bad-passes", GOOD.replace("random_start = true }", "random_start = true }\npasses = { forward = \"stepz\" }"),
     "passes.forward"),
    ("suite-unknown-attack", GOOD + '\n[[suite]]\nname = "mine"\nattacks = ["pgd-linf-lng"]\n', "pgd-linf-long"),
    ("extends-unknown", EXTENSION.replace('"pgd-linf"', '"pgd-lnf"'), "pgd-linf"),
    ("extends-without-version", EXTENSION.replace("version = 1\n", ""), "version"),
    ("extends-an-extension", EXTENSION + EXTENSION.replace('"pgd-linf-200"', '"pgd-linf-400"')
     .replace('extends = "pgd-linf"', 'extends = "pgd-linf-200"'), "itself extends"),
    ("extends-bad-value", EXTENSION.replace("steps = 200", "steps = 0"), "steps must be at least 1"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_ENTRIES, ids=[case for case, _, _ in BAD_ENTRIES])
def test_bad_registry_file_is_one_line_naming_file_and_entry(case: str, text: str, message: str,
                                                             tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(text)
    with pytest.raises(UsageError, match=message) as raised:
        load_registry([tmp_path])
    text_of_error = str(raised.value)
    assert "\n" not in text_of_error
    assert "mine.toml" in text_of_error
    result = RUNNER.invoke(app, ["attacks", "list", "--registry-dir", str(tmp_path)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_registry_file_cannot_import_arbitrary_modules(tmp_path: Path) -> None:
    """Naming a module outside midbench.attacks must fail without importing it."""
    (tmp_path / "evil_module_for_test.py").write_text("raise SystemExit('imported!')\n")
    sys.path.insert(0, str(tmp_path))
    try:
        (tmp_path / "mine.toml").write_text(GOOD.replace("midbench.attacks.gradient:PGD", "evil_module_for_test:X"))
        with pytest.raises(UsageError):
            load_registry([tmp_path])
        assert "evil_module_for_test" not in sys.modules
    finally:
        sys.path.remove(str(tmp_path))


def test_user_directory_adds_entries_and_suites(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(GOOD + '\n[[suite]]\nname = "mine"\nattacks = ["pgd-linf-long", "fgsm-linf"]\n')
    registry = load_registry([tmp_path])
    assert [spec.id for spec in registry.suite("mine")] == ["pgd-linf-long", "fgsm-linf"]
    resolved = registry.get("pgd-linf-long").resolve({"Linf": 0.3})
    assert resolved.params["step_size"] == pytest.approx(0.3 / 40)
    shown = RUNNER.invoke(app, ["attacks", "show", "pgd-linf-long", "--registry-dir", str(tmp_path)])
    assert shown.exit_code == 0 and "mine.toml" in shown.output


def test_torchattacks_entry_without_the_extra_gives_an_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # makes `import torchattacks` raise ImportError
    registry = load_registry()  # loading the registry never needs the backend
    spec = registry.get("jsma-l0-t").resolve({"Linf": 0.3})
    with pytest.raises(UsageError, match=r"pip install 'midbench\[torchattacks\]'"):
        spec.build()


def test_an_entry_extends_another_changing_only_what_it_names(tmp_path: Path) -> None:
    """An extension inherits the base's implementation, budget, citation and other params; its own id, version,
    description and passes stay its own, and the base is unchanged."""
    (tmp_path / "mine.toml").write_text(EXTENSION)
    registry = load_registry([tmp_path])
    base, extension = registry.get("pgd-linf"), registry.get("pgd-linf-200")
    assert extension.params == {**base.params, "steps": 200} and base.params["steps"] != 200
    assert (extension.implementation, extension.family, extension.norm, extension.citation, extension.budget) == (
        base.implementation, base.family, base.norm, base.citation, base.budget)
    assert (extension.version, extension.description) == (1, "PGD-200")
    assert extension.passes_per_example() == {"forward": 200, "backward": 200}
    # without passes of its own it inherits the base's formula, evaluated with its own params
    (tmp_path / "mine.toml").write_text(EXTENSION.replace('passes = { forward = "steps", backward = "steps" }\n', ""))
    inherited = load_registry([tmp_path]).get("pgd-linf-200")
    assert inherited.passes == base.passes and inherited.passes_per_example()["forward"] == 200
