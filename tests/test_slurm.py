"""``midbench bench --executor slurm`` against a real one-node Slurm cluster (``.ci/slurm-up``, started by
``.ci/run``; these tests are skipped where no cluster answers). The options and bad inputs are tested without one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from midbench.bench.executors import SlurmOptions, slurm_options
from midbench.cli.app import app
from midbench.errors import UsageError

#: three runs, every evaluation white-box and under transfer: three training jobs, five evaluation jobs, and a
#: crafting job for the source, through which two models are evaluated
SWEEP = """
[sweep]
name = "tiny-slurm"
dataset = "mnist5k"
seed = 0
device = "cpu"
threads = 1
protocols = ["whitebox", "transfer"]
transfer_source = "standard"

[eval]
n_examples = 16
attacks = ["fgsm-linf", "pgd-linf"]

[train]
arch = "test-cnn"
batch_size = 64
n_train = 128
val_size = 16
val_pgd_steps = 1
attack_steps = 1
epochs = 1

[runs.standard]
epochs = 20     # long enough (several seconds) for the cancellation test to cancel it while it runs

[runs.pgd-at]

[runs.standard-b]
method = "standard"

[slurm]
cpus_per_task = 1
time = 10
"""


def cluster_answers() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    listed = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, check=False)
    return listed.returncode == 0 and any(state in listed.stdout for state in ("idle", "mix", "alloc"))


needs_slurm = pytest.mark.skipif(not cluster_answers(),
                                 reason="no Slurm cluster answers (start one with `eval \"$(bash .ci/slurm-up DIR)\"`)")


def write(tmp_path: Path, text: str = SWEEP) -> Path:
    path = tmp_path / "sweep.toml"
    path.write_text(text, encoding="utf-8")
    return path


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    """``midbench bench`` as a user runs it (a process of its own: Slurm jobs import midbench from this
    interpreter)."""
    return subprocess.run([sys.executable, "-m", "midbench", "bench", *args, "--quiet"], capture_output=True,
                          text=True, timeout=900, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_slurm_options_from_the_file_and_the_command_line() -> None:
    options = slurm_options({"partition": "gpu", "cpus-per-task": 4, "constraint": "a100"},
                            ["time=30", "qos=high", "nodelist=n1"])
    assert options == SlurmOptions(partition="gpu", cpus_per_task=4, time=30, qos="high",
                                   extra={"constraint": "a100", "nodelist": "n1"})


@pytest.mark.parametrize(("table", "pairs", "message"), [
    ({"cpus_per_task": "four"}, [], "integer"),
    ({"time": 1.5}, [], "integer"),
    ({"partition": 3}, [], "string"),
    ({"constraint": ["a", "b"]}, [], "string or an integer"),
    ({}, ["time=soon"], "integer"),
    ({}, ["partition"], "KEY=VALUE"),
    ({}, ["cpus_per_task=0"], "at least 1"),
])
def test_bad_slurm_options_are_refused(table: dict, pairs: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        slurm_options(table, pairs)


@pytest.mark.parametrize(("args", "text", "message"), [
    (["--executor", "kubernetes"], SWEEP, "kubernetes"),
    (["--slurm-option", "mem_gb=lots"], SWEEP, "integer"),
    ([], SWEEP.replace("cpus_per_task = 1", 'cpus_per_task = "1"'), "integer"),
    ([], SWEEP.replace("[slurm]", "[slurm]\nnodes = [1]"), "string or an integer"),
    (["--slurm-option", "partition=gpu"], SWEEP.replace("[slurm]\ncpus_per_task = 1\ntime = 10\n", ""),
     "--executor slurm"),
])
def test_bad_executor_input_exits_2_before_anything_runs(tmp_path: Path, args: list[str], text: str,
                                                         message: str) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "--config", str(write(tmp_path, text)), "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and not out.exists()


def test_slurm_without_sbatch_exits_2_before_anything_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["bench", "--config", str(write(tmp_path)), "--out", str(out), "--executor",
                                      "slurm"])
    assert result.exit_code == 2 and "sbatch" in result.output and not out.exists(), result.output


def test_a_second_run_of_the_same_sweep_folder_is_refused(tmp_path: Path) -> None:
    from midbench.bench.sweep import LOCK_FILE, load_sweep, run_sweep
    from midbench.fileio import try_lock

    out = tmp_path / "out"
    out.mkdir()
    holder = try_lock(out / LOCK_FILE)  # as a running `midbench bench` holds it
    assert holder is not None
    with pytest.raises(UsageError, match="is being written by another process"):
        run_sweep(load_sweep(write(tmp_path)), out)
    holder.close()


@needs_slurm
def test_an_impossible_partition_exits_2_before_anything_is_submitted(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = bench("--config", str(write(tmp_path)), "--out", str(out), "--executor", "slurm",
                   "--slurm-option", "partition=no-such-partition")
    assert result.returncode == 2, result.stderr
    assert "no-such-partition" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


@needs_slurm
@pytest.mark.slow
def test_a_sweep_through_slurm_equals_the_serial_run_and_resubmits_a_cancelled_job(tmp_path: Path) -> None:
    config = write(tmp_path)
    serial = bench("--config", str(config), "--out", str(tmp_path / "serial"))
    assert serial.returncode == 0, serial.stderr

    # a first Slurm run whose first training job is cancelled while it is queued or running
    out = tmp_path / "slurm"
    command = [sys.executable, "-m", "midbench", "bench", "--config", str(config), "--out", str(out),
               "--executor", "slurm", "--quiet"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state_path = out / "sweep-state.json"
    deadline = time.monotonic() + 120
    job_id = None
    while job_id is None and time.monotonic() < deadline:
        if state_path.is_file():
            jobs = json.loads(state_path.read_text(encoding="utf-8")).get("jobs", {})
            job_id = jobs.get("train standard", {}).get("job_id")
        time.sleep(0.2)
    assert job_id is not None, "the training job was never submitted"
    subprocess.run(["scancel", job_id], check=True)
    _, stderr = first.communicate(timeout=600)
    assert first.returncode == 5, stderr
    assert f"Slurm job {job_id} ended without a result" in stderr
    state = json.loads(state_path.read_text(encoding="utf-8"))
    assert "standard" not in state["training"]  # only finished steps are recorded
    finished = [f"train {name}" for name in state["training"]] + [f"eval {key}" for key in state["evaluations"]]

    status = bench("--config", str(config), "--out", str(out), "--status")
    assert status.returncode == 0 and f"train standard: not finished, Slurm job {job_id}" in status.stdout

    # the rerun submits what is unfinished (the cancelled training and what waited on it) and nothing else
    rerun = bench("--config", str(config), "--out", str(out), "--executor", "slurm")
    assert rerun.returncode == 0, rerun.stderr
    resubmitted = json.loads(state_path.read_text(encoding="utf-8"))["jobs"]
    assert resubmitted["train standard"]["job_id"] != job_id
    # a step the first run finished (pgd-at's training ran beside the cancelled job) keeps the job that finished
    # it: it was not submitted again
    assert finished and all(resubmitted[cell] == state["jobs"][cell] for cell in finished)
    # the source's attacks were crafted by a job of their own, which both transfer evaluations waited for
    assert "craft standard" in resubmitted and "standard" in json.loads(state_path.read_text())["crafted"]
    board = "leaderboard-tiny-slurm.md"
    assert (out / "results" / board).read_bytes() == (tmp_path / "serial" / "results" / board).read_bytes()
    assert sorted((out / "slurm").iterdir()), "no job logs"


def test_jobs_of_an_earlier_driver_still_queued_block_a_rerun(monkeypatch: pytest.MonkeyPatch) -> None:
    """A driver that died leaves its jobs running: submitting their steps again would run them twice."""
    from midbench.bench import executors, sweep

    monkeypatch.setattr(executors, "in_queue", lambda job_id: job_id == "41")
    with pytest.raises(UsageError, match=r"train standard \(job 41\)"):
        sweep._refuse_queued_jobs({"train standard": {"job_id": "41"}, "eval standard/whitebox": {"job_id": "40"}})
    sweep._refuse_queued_jobs({"eval standard/whitebox": {"job_id": "40"}})  # ended: nothing to wait for


#: every step of the sweep under torchrun with two processes (gloo on the CPU), one run evaluated white-box
NPROC_SWEEP = (SWEEP.replace("threads = 1", "threads = 1\nnproc = 2")
               .replace('protocols = ["whitebox", "transfer"]\ntransfer_source = "standard"\n', "")
               .replace('[runs.pgd-at]\n\n[runs.standard-b]\nmethod = "standard"\n', ""))


@needs_slurm
@pytest.mark.slow
def test_a_step_of_several_processes_runs_under_torchrun_inside_its_job(tmp_path: Path) -> None:
    """``nproc = 2``: the training job trains data-parallel and the evaluation job shards; the sharded evaluation's
    per-example results equal one process's on the same model."""
    assert "nproc = 2" in NPROC_SWEEP and "[runs.pgd-at]" not in NPROC_SWEEP and "transfer" not in NPROC_SWEEP
    out = tmp_path / "slurm"
    result = bench("--config", str(write(tmp_path, NPROC_SWEEP)), "--out", str(out), "--executor", "slurm")
    assert result.returncode == 0, result.stderr
    single = subprocess.run([sys.executable, "-m", "midbench", "eval", str(out / "standard" / "model.safetensors"),
                             "--attacks", "fgsm-linf,pgd-linf", "--n-examples", "16", "--device", "cpu",
                             "--results-dir", str(tmp_path / "single"), "--quiet"], capture_output=True, text=True,
                            timeout=300, check=False)
    assert single.returncode == 0, single.stderr

    def matrix(folder: Path) -> np.ndarray:
        (path,) = (folder / "runs" / "mnist5k").glob("*.npz")
        with np.load(path) as saved:
            return saved["robust"]

    np.testing.assert_array_equal(matrix(out / "results"), matrix(tmp_path / "single"))
