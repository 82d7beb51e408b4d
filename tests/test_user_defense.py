"""A user's own defense (``--method module:Class``): the README's "Your own defense" section runs as written,
and the loading and option errors are one-line usage errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from midbench.config import TrainConfig
from midbench.data.datasets import get_dataset
from midbench.defenses.base import build_task
from midbench.errors import UsageError

REPO = Path(__file__).resolve().parents[1]


def _readme_section() -> tuple[str, str]:
    """The Python file and the shell commands of the README's "Your own defense" section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own defense", 1)[1].split("\n## ", 1)[0]
    python = re.search(r"```python\n(.*?)```", section, re.S)
    shell = re.search(r"```bash\n(.*?)```", section, re.S)
    assert python and shell, "the section needs a python and a bash block"
    return python.group(1), shell.group(1)


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    source, _ = _readme_section()
    (tmp_path / "noise_defense.py").write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path: Path) -> None:
    """Both commands, exactly as the README prints them, from a folder outside the checkout."""
    source, commands = _readme_section()
    (tmp_path / "noise_defense.py").write_text(source, encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(["bash", "-e", "-c", commands], cwd=tmp_path, env=env, capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    from midbench.artifacts.checkpoint import load_checkpoint

    meta = load_checkpoint(tmp_path / "runs" / "noise" / "model.safetensors").metadata
    assert meta["method"] == "gaussian-noise" and meta["method_params"] == {"sigma": 0.3}
    assert meta["train_attacks"] == []
    results = list((tmp_path / "results").rglob("*.json"))
    assert len(results) == 1
    document = json.loads(results[0].read_text())
    assert {attack["split"] for attack in document["attacks"]} == {"unknown"}


def test_a_user_defense_builds_with_its_options(user_module: Path) -> None:
    dataset = get_dataset("mnist5k")
    config = TrainConfig.of(method="noise_defense:GaussianNoiseTraining", method_options="sigma=0.5")
    task = build_task(config, dataset)
    assert task.name == "gaussian-noise" and task.options.sigma == 0.5
    assert task.describe() == {"sigma": 0.5}
    assert build_task(TrainConfig.of(method="noise_defense:GaussianNoiseTraining"), dataset).options.sigma == 0.25


@pytest.mark.parametrize(("method", "options", "message"), [
    ("noise_defense:Missing", None, "has no attribute"),
    ("no_such_module:Task", None, "cannot import module"),
    ("noise_defense:dataclass", None, "not a subclass of midbench.defenses.DefenseTask"),
    ("noise_defense:GaussianNoiseTraining", "width=3", "has no option 'width' .its options are sigma"),
    ("noise_defense:GaussianNoiseTraining", "sigma=wide", "--sigma must be a number, got 'wide'"),
    ("pgd-at", "sigma=0.3", "method pgd-at has no option 'sigma' .it has no options of its own"),
])
def test_bad_user_methods_and_options_are_usage_errors(user_module: Path, method: str, options: str | None,
                                                       message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_task(TrainConfig.of(method=method, method_options=options), get_dataset("mnist5k"))


def test_a_user_defense_is_a_sweep_run(user_module: Path) -> None:
    """A sweep file names the user's task like a built-in method, with its options; the plan checks both."""
    from midbench.bench.plan import describe_plan
    from midbench.bench.sweep import load_sweep

    sweep_file = user_module / "sweep.toml"
    sweep_file.write_text('[sweep]\nname = "user"\ndataset = "mnist5k"\n\n[eval]\nattacks = ["pgd-linf"]\n\n'
                          '[runs.noise]\nmethod = "noise_defense:GaussianNoiseTraining"\n'
                          'method_options = "sigma=0.5"\nepochs = 1\n', encoding="utf-8")
    sweep = load_sweep(sweep_file)
    assert sweep.run("noise").config.options == {"sigma": "0.5"}
    assert "train noise: noise_defense:GaussianNoiseTraining, lenet, 1 epochs" in describe_plan(sweep)
    sweep_file.write_text(sweep_file.read_text().replace("sigma=0.5", "sigma=wide"), encoding="utf-8")
    with pytest.raises(UsageError, match="run 'noise'.*--sigma must be a number"):
        load_sweep(sweep_file)


def test_an_option_named_like_a_shared_key_is_refused() -> None:
    """``epochs = 3`` in a file would set the run's epochs, never the option: the clash is refused."""
    from dataclasses import dataclass

    from midbench.defenses.base import DefenseTask

    class Clashing(DefenseTask):
        name = "clashing"

        @dataclass(frozen=True)
        class Options:
            epochs: int = 3

    with pytest.raises(UsageError, match="declares option.s. epochs, which every method already has"):
        Clashing(TrainConfig(), get_dataset("mnist5k"))
