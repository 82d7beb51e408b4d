"""Data-parallel training under torchrun (gloo, CPU): one step with 2 processes gives the parameters of one process
on the same global batch, for pgd-at, trades and MID; a killed rank resumes; bad launches are one-line errors.

Why the parameters agree: each process differentiates the mean loss of its slice and the loop combines the slices
weighted by their sizes (``midbench.runtime.data_parallel``); the training attacks draw every example's random start
from
a generator of its own; MID's inner step averages the slices' inner gradients (its second-order term through a
weighted all-reduce whose backward pass is weighted too). What remains is the order of floating-point sums: in
float32, relative differences of order 1e-7 per operation, so after one SGD step of rate 0.05 the parameters
(of order 0.1) agree to far better than 1e-5 — while any error in the combination (an unweighted mean, a θ′ of
one slice, a slice's random starts) moves them by the size of a gradient step, 1e-3 or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from worker_processes import process_with

from midbench.errors import UsageError
from midbench.runtime.data_parallel import SliceWeights
from midbench.runtime.distributed import Shard
from midbench.training.loop import check_slices

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
#: 33 examples: the two slices have 17 and 16, so an unweighted mean of the slices would be wrong
COMMON = ("--epochs", "1", "--val-size", "10", "--optimizer", "sgd", "--lr", "0.05", "--attack-steps", "2",
          "--device", "cpu", "--quiet")
METHODS = {
    "pgd-at": ("--method", "pgd-at", "--arch", "test-cnn", "--n-train", "33", "--batch-size", "33"),
    "trades": ("--method", "trades", "--arch", "test-cnn", "--n-train", "33", "--batch-size", "33"),
    # MID trains its source and teacher first (data-parallel too); 301 examples make two pool-cache batches (256
    # + 45), crafted by different ranks; a large inner rate makes θ′ matter
    "mid": ("--method", "mid", "--arch", "lenet", "--n-train", "301", "--batch-size", "301", "--source-epochs", "1",
            "--teacher-epochs", "1", "--inner-lr", "0.5"),
}


def train_command(out: Path, *options: str) -> list[str]:
    return [sys.executable, "-m", "midbench", "train", *COMMON, *options, "--out", str(out)]


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=ENV, capture_output=True, text=True, check=False, **kwargs)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(path)


@pytest.mark.parametrize("world_size", [1, 2, 3, 8])
@pytest.mark.parametrize("global_size", [8, 33, 301])
def test_slices_partition_the_global_batch_with_sizes_one_apart(global_size: int, world_size: int) -> None:
    slices = [SliceWeights.of(Shard(rank, world_size), global_size) for rank in range(world_size)]
    assert [s.start for s in slices[1:]] == [s.stop for s in slices[:-1]]
    assert slices[0].start == 0 and slices[-1].stop == global_size
    assert max(s.size for s in slices) - min(s.size for s in slices) <= 1
    assert sum(s.weight for s in slices) == pytest.approx(1.0)
    pieces = [s.take(torch.arange(global_size))[0] for s in slices]
    assert torch.equal(torch.cat(pieces), torch.arange(global_size))


@pytest.mark.parametrize(("n_train", "batch_size", "message"), [
    (100, 1, "leaves some without examples"),
    (1, 64, "leaves some without examples"),
    (65, 64, "the last batch of each epoch has 1 example"),
])
def test_a_batch_that_leaves_a_process_empty_is_refused(n_train: int, batch_size: int, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        check_slices(n_train, batch_size, Shard(0, 2))
    check_slices(n_train, batch_size, Shard(0, 1))  # one process takes any batch


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_one_data_parallel_step_equals_one_process_on_the_global_batch(method: str, tmp_path: Path) -> None:
    single = run(train_command(tmp_path / "single", *METHODS[method]))
    assert single.returncode == 0, single.stderr
    sharded = run(train_command(tmp_path / "sharded", *METHODS[method], "--nproc", "2"))
    assert sharded.returncode == 0, sharded.stderr
    assert sharded.stdout.count("model:") == 1  # rank 0 alone reports
    stages = ["source", "teacher", "."] if method == "mid" else ["."]
    for stage in stages:
        expected = weights(tmp_path / "single" / stage / "model.safetensors")
        actual = weights(tmp_path / "sharded" / stage / "model.safetensors")
        assert sorted(actual) == sorted(expected)
        for name, tensor in expected.items():
            torch.testing.assert_close(actual[name], tensor, rtol=0, atol=1e-5, msg=f"{stage}: {name}")
    single_log = json.loads((tmp_path / "single" / "log.jsonl").read_text())
    sharded_log = json.loads((tmp_path / "sharded" / "log.jsonl").read_text())
    assert sharded_log["train_acc"] == single_log["train_acc"]  # counts of examples: exact
    assert sharded_log["loss"] == pytest.approx(single_log["loss"], rel=1e-5)
    for key in [key for key in single_log if key.startswith("val_")]:  # held-out scores: dealt, then summed
        assert sharded_log[key] == pytest.approx(single_log[key], abs=1 / 10 + 1e-9), key
    checkpoint = checkpoint_metadata(tmp_path / "sharded" / "model.safetensors")
    assert checkpoint["data_parallel"] == {"processes": 2, "batch_norm": "none"}
    assert "data_parallel" not in checkpoint_metadata(tmp_path / "single" / "model.safetensors")


def checkpoint_metadata(path: Path) -> dict:
    """The metadata midbench wrote into a checkpoint."""
    from midbench.artifacts.checkpoint import load_checkpoint

    return load_checkpoint(path).metadata


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the worker through /proc")
def test_a_killed_rank_stops_training_and_resume_ends_with_the_uninterrupted_weights(tmp_path: Path) -> None:
    options = ("--method", "pgd-at", "--arch", "test-cnn", "--n-train", "640", "--batch-size", "32", "--epochs", "2",
               "--val-size", "10", "--attack-steps", "10", "--device", "cpu", "--quiet")

    def command(out: str, *extra: str) -> list[str]:
        return [sys.executable, "-m", "midbench", "train", *options, "--out", str(tmp_path / out), *extra]

    reference = run(command("uninterrupted", "--nproc", "2"))
    assert reference.returncode == 0, reference.stderr

    tag = uuid.uuid4().hex
    process = subprocess.Popen(command("run", "--nproc", "2"), env={**ENV, "MIDBENCH_TEST_TAG": tag},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    state = tmp_path / "run" / "state.pt"
    deadline = time.monotonic() + 240
    while not state.exists():  # epoch 1 is saved: kill rank 1 in epoch 2
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "no epoch finished within 240 s"
        time.sleep(0.01)
    victim = process_with(tag, 1)
    assert victim is not None
    os.kill(victim, 9)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode != 0
    last_line = stderr.strip().splitlines()[-1]
    assert last_line.startswith("midbench: error:") and "--resume" in last_line

    # another number of processes would sum the gradients in another order: refused, nothing touched
    before = state.read_bytes()
    other = run(command("run", "--resume"))
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
    assert "trained by 2 process(es)" in other.stderr and state.read_bytes() == before

    resumed = run(command("run", "--nproc", "2", "--resume"))
    assert resumed.returncode == 0, resumed.stderr
    expected = weights(tmp_path / "uninterrupted" / "model.safetensors")
    actual = weights(tmp_path / "run" / "model.safetensors")
    for name, tensor in expected.items():  # same processes, same order of sums: bit for bit
        assert torch.equal(actual[name], tensor), name
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2]


@pytest.mark.slow
def test_a_global_batch_smaller_than_the_processes_is_one_line_with_exit_2(tmp_path: Path) -> None:
    result = run(train_command(tmp_path / "run", *METHODS["pgd-at"][:4], "--n-train", "33", "--batch-size", "1",
                               "--nproc", "2"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "--batch-size 1 over 2 processes" in result.stderr


@pytest.mark.slow
def test_batchnorm_on_the_cpu_is_per_process_and_recorded(tmp_path: Path) -> None:
    """PyTorch's SyncBatchNorm needs a GPU: on the CPU each process normalises with its slice's statistics, which
    the checkpoint says (a run with BatchNorm is then not the single-process run, and must not pass for one)."""
    result = run(train_command(tmp_path / "run", "--method", "standard", "--arch", "test-resnet", "--n-train", "32",
                               "--batch-size", "16", "--nproc", "2"))
    assert result.returncode == 0, result.stderr
    recorded = checkpoint_metadata(tmp_path / "run" / "model.safetensors")["data_parallel"]
    assert recorded == {"processes": 2, "batch_norm": "per-process"}


@pytest.mark.cuda
@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (NCCL: one process per GPU)")
def test_batchnorm_on_two_gpus_is_synchronised_and_equals_one_gpu(tmp_path: Path) -> None:
    """SyncBatchNorm normalises over the global batch, so two GPUs give one GPU's step (up to summation order)."""
    options = ("--method", "pgd-at", "--arch", "test-resnet", "--n-train", "64", "--batch-size", "64", "--epochs",
               "1", "--val-size", "10", "--optimizer", "sgd", "--lr", "0.05", "--attack-steps", "2", "--quiet")
    base = [sys.executable, "-m", "midbench", "train", *options, "--device", "cuda"]
    single = run([*base, "--out", str(tmp_path / "single")])
    assert single.returncode == 0, single.stderr
    sharded = run([*base, "--out", str(tmp_path / "sharded"), "--nproc", "2"])
    assert sharded.returncode == 0, sharded.stderr
    recorded = checkpoint_metadata(tmp_path / "sharded" / "model.safetensors")["data_parallel"]
    assert recorded == {"processes": 2, "batch_norm": "synchronised"}
    expected = weights(tmp_path / "single" / "model.safetensors")
    actual = weights(tmp_path / "sharded" / "model.safetensors")
    for name, tensor in expected.items():
        torch.testing.assert_close(actual[name].float(), tensor.float(), rtol=0, atol=1e-4, msg=name)
