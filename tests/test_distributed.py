"""Sharded evaluation under torchrun (gloo, CPU): the merged per-example matrix equals a single process's, for
plain attacks, AutoAttack and the unknown-attack profile; a killed rank resumes; bad launches are one-line errors.

Every batch is seeded from (seed, attack, position) and AutoAttack reseeds before each of its batches, so dealing
batches to processes changes nothing but who computes them. Both sides run with one CPU thread per process, so
that floating-point sums are done in the same order.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from worker_processes import process_with

ATTACKS = "fgsm-linf,pgd-linf,noise-uniform-linf,pgd-l2"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def eval_command(checkpoint: Path, results: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "midbench", "eval", str(checkpoint), "--results-dir", str(results), "--device",
            "cpu", "--name", "m", "--quiet", "--batch-size", "4", *extra]


def result_of(results: Path) -> tuple[dict, dict[str, np.ndarray]]:
    (json_path,) = list((results / "runs" / "mnist5k").glob("*.json"))
    with np.load(json_path.with_suffix(".npz")) as saved:
        arrays = {key: saved[key] for key in saved.files}
    return json.loads(json_path.read_text(encoding="utf-8")), arrays


def assert_same_result(single: Path, sharded: Path) -> None:
    """Same matrices (robust, clean, profile curves), and the same rows and summary but for the wall time."""
    single_doc, single_arrays = result_of(single)
    sharded_doc, sharded_arrays = result_of(sharded)
    assert sorted(single_arrays) == sorted(sharded_arrays)
    for key, value in single_arrays.items():
        np.testing.assert_array_equal(sharded_arrays[key], value, err_msg=key)

    def timeless(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert timeless(sharded_doc["attacks"]) == timeless(single_doc["attacks"])  # pass counts and components too
    assert sharded_doc["summary"] == single_doc["summary"]
    if "profile" in single_doc:
        assert timeless(sharded_doc["profile"]["threat_models"]) == timeless(single_doc["profile"]["threat_models"])


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=ENV, capture_output=True, text=True, check=False, **kwargs)


@pytest.mark.slow
def test_sharded_evaluation_equals_a_single_process(pgd_at_checkpoint: Path, tmp_path: Path) -> None:
    """Plain attacks, AutoAttack (its components dealt across the ranks and merged after each) and the profile,
    with 3 processes so that the batches do not split evenly."""
    # the profile on three threat models of its three kinds (Lp APGD, a latent corruption, a grid search)
    options = ("--attacks", ATTACKS, "--autoattack", "--unknown-attacks", "--threat-models", "linf,elastic,rot-trans",
               "--n-examples", "30")
    single = run(eval_command(pgd_at_checkpoint, tmp_path / "single", *options))
    assert single.returncode == 0, single.stderr
    sharded = run(eval_command(pgd_at_checkpoint, tmp_path / "sharded", *options, "--nproc", "3"))
    assert sharded.returncode == 0, sharded.stderr
    assert "result:" in sharded.stdout and sharded.stdout.count("result:") == 1  # rank 0 alone reports
    assert_same_result(tmp_path / "single", tmp_path / "sharded")
    components = next(row for row in result_of(tmp_path / "sharded")[0]["attacks"]
                      if row["id"].startswith("autoattack"))["components"]
    assert list(components) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert not list((tmp_path / "sharded" / "runs" / "mnist5k").glob(".*evalstate*"))  # finished: states removed


@pytest.mark.slow
def test_two_torchrun_nodes_on_localhost_equal_a_single_process(standard_checkpoint: Path, tmp_path: Path) -> None:
    """The multi-node command of the README, as two "nodes" of one process each on this machine."""
    options = ("--attacks", ATTACKS, "--n-examples", "24")
    single = run(eval_command(standard_checkpoint, tmp_path / "single", *options))
    assert single.returncode == 0, single.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank),
                               "--nproc-per-node", "1", "--master-addr", "127.0.0.1", "--master-port", port, "-m",
                               *eval_command(standard_checkpoint, tmp_path / "nodes", *options)[2:]],
                              env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in (0, 1)]
    for node in nodes:
        _, stderr = node.communicate(timeout=300)
        assert node.returncode == 0, stderr
    assert_same_result(tmp_path / "single", tmp_path / "nodes")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_a_killed_rank_stops_the_run_and_the_same_command_resumes_every_shard(standard_checkpoint: Path,
                                                                              tmp_path: Path) -> None:
    options = ("--attacks", ATTACKS, "--n-examples", "160")
    reference = run(eval_command(standard_checkpoint, tmp_path / "single", *options))
    assert reference.returncode == 0, reference.stderr
    command = eval_command(standard_checkpoint, tmp_path / "sharded", *options, "--nproc", "2")
    tag = uuid.uuid4().hex
    process = subprocess.Popen(command, env={**ENV, "MIDBENCH_TEST_TAG": tag}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    rank_state = tmp_path / "sharded" / "runs" / "mnist5k" / ".m__whitebox.rank1of2.evalstate.npz"
    deadline = time.monotonic() + 240
    while not rank_state.exists():  # rank 1 has saved a batch: kill it mid-run
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "rank 1 saved no batch within 240 s"
        time.sleep(0.01)
    victim = process_with(tag, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert stderr.strip().splitlines()[-1].startswith("midbench: error:") and "rerun the same command" in stderr
    assert not list((tmp_path / "sharded" / "runs" / "mnist5k").glob("*.json"))  # no result from a broken run
    assert rank_state.exists()  # rank 1's finished batches are kept

    resumed = run(command)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stdout
    assert_same_result(tmp_path / "single", tmp_path / "sharded")


@pytest.mark.slow
def test_bad_launches_are_one_line_errors(standard_checkpoint: Path, tmp_path: Path) -> None:
    too_many = run(eval_command(standard_checkpoint, tmp_path, "--attacks", "fgsm-linf", "--n-examples", "2",
                                "--nproc", "3"))
    assert too_many.returncode == 2 and "more processes than the 2 examples" in too_many.stderr
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = run(eval_command(standard_checkpoint, tmp_path, "--attacks", "fgsm-linf", "--nproc", "2",
                                "--master-port", port))
    assert busy.returncode == 2 and "is in use" in busy.stderr
    for result in (too_many, busy):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_a_resume_with_another_number_of_processes_is_refused(standard_checkpoint: Path, tmp_path: Path) -> None:
    """A state left by one process cannot be continued by two (its batches were dealt otherwise): refused with
    2 in one line; --restart starts over."""
    state = tmp_path / "runs" / "mnist5k" / ".m__whitebox.evalstate.npz"
    command = eval_command(standard_checkpoint, tmp_path, "--attacks", ATTACKS, "--n-examples", "200")
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not state.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.kill()
    process.wait()
    refused = run([*command, "--nproc", "2"])
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"midbench: error: an interrupted evaluation of m (whitebox) with a single process is in {tmp_path}; resume "
        "it with a single process, or pass --restart to start over"]
    restarted = run([*command, "--nproc", "2", "--restart"])
    assert restarted.returncode == 0, restarted.stderr
    assert not state.exists()
