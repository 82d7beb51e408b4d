"""A full disk, for real (docs/reliability.md, "Faults that lose nothing"): training, evaluation, a sweep and a
report write onto a small tmpfs that the test mounts and fills, so the kernel itself answers ENOSPC wherever the
disk runs out, whichever file is being written at that moment.

For each command and several amounts of free space, chosen from the size of the uninterrupted run's output so that
the disk runs out at different points, the property is the same: the command either finishes, or stops with exit 3
and one line that says the disk is full; every file it leaves is complete and readable, files that were there before
are unchanged, and no temporary file is left. Then the filler is deleted (space freed) and the same command is run
again: it resumes, and its result equals the uninterrupted run's.

Mounting needs root (CAP_SYS_ADMIN), as in CI's container; elsewhere these tests skip. The in-process injection of
ENOSPC at chosen writes (tests/test_faults.py) covers the same messages without a mount.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from midbench.artifacts.checkpoint import load_checkpoint
from midbench.cli.app import app

RUNNER = CliRunner()
PAGE = 4096
FILLER = "filler.bin"


class SmallDisk:
    """A tmpfs mounted at ``root``; :meth:`fill` leaves a chosen number of bytes free, :meth:`free` frees them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def available(self) -> int:
        stats = os.statvfs(self.root)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave: int) -> None:
        size = self.available() - leave
        assert size > 0, "the disk is smaller than the free space asked for"
        with open(self.root / FILLER, "wb") as handle:
            chunk = b"\xff" * (1 << 20)
            while size > 0:
                size -= handle.write(chunk[:min(size, len(chunk))])

    def free(self) -> None:
        (self.root / FILLER).unlink()

    def clear(self) -> None:
        for path in self.root.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.fixture()
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    root = tmp_path / "disk"
    root.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(root)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield SmallDisk(root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)


def footprint(folder: Path) -> int:
    """Bytes the files under ``folder`` take on a tmpfs (whole pages)."""
    return sum(-(-path.stat().st_size // PAGE) * PAGE for path in folder.rglob("*") if path.is_file())


def snapshot(folder: Path) -> dict[Path, bytes]:
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file() and path.name != FILLER}


def assert_complete_and_readable(folder: Path) -> None:
    """Every file left is whole: no temporaries, and each parses with its own reader."""
    leftovers = list(folder.rglob("*.tmp"))
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    for path in folder.rglob("*"):
        if not path.is_file() or path.name == FILLER or path.name.endswith(".lock"):
            continue
        if path.suffix == ".safetensors":
            load_checkpoint(path)
        elif path.suffix == ".pt":
            torch.load(path, map_location="cpu", weights_only=True)
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        elif path.suffix == ".jsonl":
            [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as stored:
                [stored[key] for key in stored.files]
        else:
            path.read_text(encoding="utf-8")


def run_until_done(disk: SmallDisk, leave: int, args: list[str], output: Path) -> bool:
    """Run ``args`` with ``leave`` bytes free; if the disk fills, check what the run left, free the space and run the
    same command again. Whether the disk filled (if not, the filler is removed all the same)."""
    before = snapshot(output) if output.exists() else {}
    disk.fill(leave)
    first = RUNNER.invoke(app, args)
    filled = first.exit_code != 0
    if filled:
        assert first.exit_code == 3, first.output
        errors = [line for line in first.output.strip().splitlines() if line.startswith("midbench:")]
        assert len(errors) == 1 and "disk full while writing" in errors[0], first.output
        assert first.output.strip().endswith(errors[0]), "the error is the last line (progress lines may precede it)"
        assert_complete_and_readable(disk.root)
        after = snapshot(output)
        assert {path: data for path, data in after.items() if path in before} == before, "an earlier file changed"
    disk.free()
    if filled:
        again = RUNNER.invoke(app, args)
        assert again.exit_code == 0, again.output
    return filled


# ---- training ------------------------------------------------------------------------------------------------

TRAIN = ["train", "--arch", "test-mlp", "--epochs", "3", "--n-train", "64", "--batch-size", "32", "--val-size", "0",
         "--device", "cpu", "--seed", "0", "--quiet", "--resume"]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(folder / "model.safetensors").state_dict


@pytest.mark.slow
def test_training_on_a_disk_that_fills_stops_with_exit_3_and_resumes_to_the_uninterrupted_weights(
        small_disk: SmallDisk, tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    assert RUNNER.invoke(app, [*TRAIN, "--out", str(reference)]).exit_code == 0
    total = footprint(reference)
    largest = max(path.stat().st_size for path in reference.iterdir())
    # Too little for the first epoch's files; enough for them but not for rewriting the largest one beside its old
    # copy (an atomic write needs both), so the disk fills in the second epoch.
    filled = []
    for leave in [total * k // 5 for k in range(5)] + [total + largest // 3]:
        small_disk.clear()
        out = small_disk.root / "run"
        filled.append(run_until_done(small_disk, leave, [*TRAIN, "--out", str(out)], out))
        resumed, uninterrupted = weights(out), weights(reference)
        assert resumed.keys() == uninterrupted.keys()
        assert all(torch.equal(resumed[key], uninterrupted[key]) for key in resumed)
        assert load_checkpoint(out / "model.safetensors").metadata["epoch"] == 3
    assert all(filled), "each amount of free space was chosen to fill the disk"


# ---- evaluation ----------------------------------------------------------------------------------------------

def _checkpoint(tmp_path: Path, name: str, seed: int) -> Path:
    out = tmp_path / name
    result = RUNNER.invoke(app, [*TRAIN, "--epochs", "1", "--seed", str(seed), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out / "model.safetensors"


def _eval(checkpoint: Path, name: str, results: Path) -> list[str]:
    return ["eval", str(checkpoint), "--name", name, "--attacks", "fgsm-linf,pgd-linf", "--n-examples", "48",
            "--batch-size", "16", "--results-dir", str(results), "--device", "cpu", "--quiet"]


def matrices(results: Path, name: str) -> dict[str, np.ndarray]:
    (path,) = (results / "runs" / "mnist5k").glob(f"{name}__whitebox__*.npz")
    with np.load(path) as stored:
        return {key: stored[key] for key in ("robust", "clean")}


@pytest.mark.slow
def test_an_evaluation_on_a_disk_that_fills_stops_with_exit_3_and_resumes_to_the_uninterrupted_matrix(
        small_disk: SmallDisk, tmp_path: Path) -> None:
    first, second = _checkpoint(tmp_path, "first", 1), _checkpoint(tmp_path, "second", 2)
    reference = tmp_path / "reference"
    assert RUNNER.invoke(app, _eval(second, "second", reference)).exit_code == 0
    total = footprint(reference)
    filled = []
    for leave in range(0, 2 * total + 4 * PAGE, PAGE // 2):
        small_disk.clear()
        results = small_disk.root / "results"
        # an earlier result in the same folder must come through untouched
        assert RUNNER.invoke(app, _eval(first, "first", results)).exit_code == 0
        filled.append(run_until_done(small_disk, footprint(results) + leave, _eval(second, "second", results),
                                     results))
        for key, matrix in matrices(reference, "second").items():
            assert np.array_equal(matrices(results, "second")[key], matrix)
        assert len(list((results / "runs" / "mnist5k").glob("second__whitebox__*.json"))) == 1
    # half a page at a time, from nothing free to more than the run needs: it fails below a threshold, then never
    assert filled[0] and not filled[-1] and filled == sorted(filled, reverse=True), filled


# ---- a sweep and its report ----------------------------------------------------------------------------------

SWEEP = """
[sweep]
name = "disk"
dataset = "mnist5k"
seed = 0
device = "cpu"
protocols = ["whitebox", "transfer"]
transfer_source = "standard"

[eval]
n_examples = 24
attacks = ["fgsm-linf"]

[train]
arch = "test-mlp"
batch_size = 32
n_train = 64
val_size = 0

[runs.standard]
epochs = 1

[runs.pgd-at]
epochs = 1
attack_steps = 1
"""


@pytest.mark.slow
def test_a_sweep_and_a_report_on_a_disk_that_fills_stop_with_exit_3_and_rerun_to_the_same_files(
        small_disk: SmallDisk, tmp_path: Path) -> None:
    config = tmp_path / "sweep.toml"
    config.write_text(SWEEP, encoding="utf-8")
    reference = tmp_path / "reference"
    assert RUNNER.invoke(app, ["bench", "--config", str(config), "--out", str(reference), "--quiet"]).exit_code == 0
    board = next((reference / "results").glob("leaderboard*.md")).read_bytes()
    total = footprint(reference)
    filled = []
    for leave in [total * k // 5 for k in range(5)]:
        small_disk.clear()
        out = small_disk.root / "sweep"
        filled.append(run_until_done(small_disk, leave, ["bench", "--config", str(config), "--out", str(out),
                                                         "--quiet"], out))
        assert next((out / "results").glob("leaderboard*.md")).read_bytes() == board
    assert all(filled)

    report_args = ["report", "--results-dir", str(small_disk.root / "sweep" / "results"), "--out"]
    reference_report = tmp_path / "report.html"
    assert RUNNER.invoke(app, [*report_args, str(reference_report)]).exit_code == 0
    report = small_disk.root / "report.html"
    assert RUNNER.invoke(app, [*report_args, str(report)]).exit_code == 0
    assert run_until_done(small_disk, reference_report.stat().st_size // 2, [*report_args, str(report)],
                          small_disk.root)
    assert report.read_bytes() == reference_report.read_bytes()
