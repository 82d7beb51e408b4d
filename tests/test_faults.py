"""Faults that must lose nothing (docs/reliability.md): SIGKILL in the middle of a checkpoint write, a full disk,
two evaluations writing one results directory at once, and NaN logits.

Processes are stopped at exact points, not after a guessed delay: a small hook script (``HOOK``) runs the
program in a child process, wraps :func:`midbench.fileio.atomic_writer` and ``os.replace`` there, prints a line
when the chosen write reaches the chosen point and then blocks until it is killed. The test waits for that line
(with a bounded timeout) and sends SIGKILL. A full disk is injected in-process: the temporary file's handle
writes half of what it is given and then raises ``ENOSPC`` (or ``fsync`` does, as on filesystems that allocate
late). SIGKILL during evaluation and its resume are tested with resumable evaluation, not here.
"""

from __future__ import annotations

import errno
import fnmatch
import io
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from midbench.artifacts.checkpoint import load_checkpoint, save_checkpoint
from midbench.cli.app import app
from midbench.evaluation.results import make_run_id, utc_now
from midbench.models import build_model

RUNNER = CliRunner()
WAIT_S = 180.0  # bound on every wait for a child's line (a loaded CI machine imports torch slowly)

#: Runs ``python HOOK POINT FILE OCCURRENCE -- PROGRAM...``. POINT is where the OCCURRENCE-th atomic write of a
#: file named FILE stops: ``mid-write`` (half of the first chunk is in the temporary file), ``before-rename``
#: (complete and fsynced, not yet renamed) or ``after-rename``; ``barrier`` instead makes every write of a
#: result (``runs/<dataset>/*.json``) wait until OCCURRENCE processes have reached that point (FILE is then a
#: shared directory).
#: PROGRAM is ``save-loop TARGET`` (checkpoints written in a loop, "SAVED <n>" after each) or midbench's
#: arguments.
HOOK = r'''
import contextlib
import os
import sys
import threading
import time

import midbench.fileio as fileio

point, name, occurrence = sys.argv[1], sys.argv[2], int(sys.argv[3])
program = sys.argv[sys.argv.index("--") + 1:]
state = {"count": 0, "active": False}
real_writer, real_replace = fileio.atomic_writer, os.replace


def stop(what):
    print(f"BLOCKED {what}", flush=True)
    threading.Event().wait()  # until SIGKILL


class HalfThenStop:
    """Writes half of the first chunk, makes it visible in the file, then stops."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, data):
        data = bytes(data)
        self.handle.write(data[: len(data) // 2])
        self.handle.flush()
        stop(f"mid-write {name}")

    def __getattr__(self, attribute):
        return getattr(self.handle, attribute)


def barrier(folder, parties):
    os.makedirs(folder, exist_ok=True)
    open(os.path.join(folder, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 300
    while len(os.listdir(folder)) < parties:
        if time.monotonic() > deadline:
            sys.exit("barrier: the other process never arrived")
        time.sleep(0.005)
    print("BARRIER passed", flush=True)


@contextlib.contextmanager
def writer(path):
    if point == "barrier" and os.path.basename(os.path.dirname(os.path.dirname(path))) == "runs" \
            and str(path).endswith(".json"):
        with real_writer(path) as handle:  # the temporary file exists while the other process catches up
            barrier(name, occurrence)
            yield handle
        return
    chosen = os.path.basename(path) == name
    if chosen:
        state["count"] += 1
    state["active"] = chosen and state["count"] == occurrence
    with real_writer(path) as handle:
        yield HalfThenStop(handle) if state["active"] and point == "mid-write" else handle


def replace(source, target, *args, **kwargs):
    if state["active"] and os.path.basename(target) == name and point == "before-rename":
        stop(f"before-rename {name}")
    real_replace(source, target, *args, **kwargs)
    if state["active"] and os.path.basename(target) == name and point == "after-rename":
        stop(f"after-rename {name}")


fileio.atomic_writer, os.replace = writer, replace

if program[0] == "save-loop":
    import torch

    from midbench.artifacts.checkpoint import save_checkpoint

    for step in range(1, occurrence + 2):
        tensors = {"weight": torch.full((1 << 18,), float(step)), "bias": torch.arange(step, step + 10.0)}
        sha256 = save_checkpoint(program[1], tensors, {"name": "loop", "step": step})
        print(f"SAVED {step} {sha256}", flush=True)
else:
    from midbench.cli.app import main

    sys.argv = ["midbench", *program]
    main()
'''


class Child:
    """A child process whose output lines (stdout and stderr, merged so neither pipe can fill up and block it)
    are read on a thread, so the test can wait for one with a timeout."""

    def __init__(self, args: list[str], cwd: Path) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # identical arithmetic in every process
        self.process = subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float = WAIT_S) -> str:
        """The first (new) line starting with ``prefix``; fails if the child ends or the time runs out first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                self.kill()
                raise AssertionError(f"no line {prefix!r} within {timeout} s; got {self.seen}") from None
            if line is None:
                raise AssertionError(f"the child ended (code {self.process.wait()}) before {prefix!r}: "
                                     f"{self.output()}")
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=WAIT_S)

    def finish(self) -> int:
        """Wait for the child to end (bounded); its exit code. Every line it printed is then in ``output()``."""
        code = self.process.wait(timeout=WAIT_S)
        while (line := self.lines.get(timeout=WAIT_S)) is not None:
            self.seen.append(line)
        return code

    def output(self) -> str:
        return "\n".join(self.seen)


Spawn = Callable[..., Child]


@pytest.fixture()
def hooked(tmp_path: Path) -> Iterator[Spawn]:
    """``hooked(point, name, occurrence, *program)`` starts the hook script in a child; a child still running at
    the end of the test (a failed test leaves one blocked) is killed."""
    script = tmp_path / "hook.py"
    script.write_text(HOOK)
    children: list[Child] = []

    def spawn(point: str, name: str, occurrence: int, *program: str) -> Child:
        children.append(Child([sys.executable, str(script), point, name, str(occurrence), "--", *program],
                              tmp_path))
        return children[-1]

    yield spawn
    for child in children:
        if child.process.poll() is None:
            child.kill()


def visible_files(folder: Path) -> list[str]:
    """What a user or another program sees: everything but dot-files (temporaries are ``.<name>.*.tmp``)."""
    return sorted(path.name for path in folder.iterdir() if not path.name.startswith("."))


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


# ---- SIGKILL during a checkpoint write ----------------------------------------------------------------------


@pytest.mark.parametrize("point", ["mid-write", "before-rename", "after-rename"])
def test_sigkill_during_checkpoint_write_leaves_a_loadable_checkpoint(point: str, hooked: Spawn, tmp_path: Path
                                                                     ) -> None:
    """Killed at any point of the third write: the file is the second checkpoint, or (once renamed) the third,
    complete and verified by its SHA-256; a torn temporary file is never visible under the checkpoint's name."""
    folder = tmp_path / "run"
    folder.mkdir()
    target = folder / "model.safetensors"
    child = hooked(point, target.name, 3, "save-loop", str(target))
    saved = [child.wait_for("SAVED 1"), child.wait_for("SAVED 2")]
    child.wait_for("BLOCKED")
    pending = temporaries(folder)
    if point == "mid-write":  # the kill really lands inside a write: a partial temporary file exists
        assert len(pending) == 1 and 0 < pending[0].stat().st_size < target.stat().st_size
    elif point == "before-rename":
        assert len(pending) == 1 and pending[0].stat().st_size == target.stat().st_size
    else:
        assert pending == []
    child.kill()
    assert child.process.returncode == -signal.SIGKILL

    checkpoint = load_checkpoint(target)  # verifies the recorded SHA-256
    expected_step = 3 if point == "after-rename" else 2
    assert checkpoint.metadata["step"] == expected_step
    assert torch.equal(checkpoint.state_dict["weight"], torch.full((1 << 18,), float(expected_step)))
    if point != "after-rename":
        assert checkpoint.sha256 == saved[1].split()[2]
    assert visible_files(folder) == ["model.safetensors"]
    # the next write succeeds over it, whatever the killed process left behind
    save_checkpoint(target, checkpoint.state_dict, {"name": "loop", "step": 4})
    assert load_checkpoint(target).metadata["step"] == 4


TRAIN = ["train", "--arch", "test-mlp", "--epochs", "3", "--n-train", "256", "--batch-size", "32", "--val-size",
         "0", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the same training in a child process, not interrupted."""
    out = tmp_path_factory.mktemp("uninterrupted")
    child = Child([sys.executable, "-m", "midbench", *TRAIN, "--out", str(out)], out)
    assert child.finish() == 0, child.output()
    return out / "model.safetensors"


@pytest.mark.slow
@pytest.mark.parametrize("file_name", ["model.safetensors", "state.pt"])
def test_sigkill_mid_checkpoint_write_in_training_then_resume(file_name: str, hooked: Spawn, tmp_path: Path,
                                                              uninterrupted_run: Path) -> None:
    """Killed half-way through writing epoch 2's model or resume state: both files stay loadable, and
    ``--resume`` ends with the weights of the uninterrupted run (docs/reliability.md, SIGKILL during training)."""
    out = tmp_path / "run"
    child = hooked("mid-write", file_name, 2, *TRAIN, "--out", str(out))
    child.wait_for("BLOCKED mid-write")
    assert len(temporaries(out)) == 1
    child.kill()

    model_epoch = 2 if file_name == "state.pt" else 1  # the model is written before the state
    assert load_checkpoint(out / "model.safetensors").metadata["epoch"] == model_epoch
    assert torch.load(out / "state.pt", weights_only=True)["epoch"] == 1
    assert visible_files(out) == ["config.toml", "log.jsonl", "model.safetensors", "state.pt"]

    resumed = Child([sys.executable, "-m", "midbench", *TRAIN, "--out", str(out), "--resume"], tmp_path)
    assert resumed.finish() == 0, resumed.output()
    expected, actual = load_checkpoint(uninterrupted_run), load_checkpoint(out / "model.safetensors")
    assert actual.metadata["epoch"] == 3
    for key, tensor in expected.state_dict.items():
        assert torch.equal(tensor, actual.state_dict[key]), key
    assert [json.loads(line)["epoch"] for line in (out / "log.jsonl").read_text().splitlines()] == [1, 2, 3]


# ---- a full disk ---------------------------------------------------------------------------------------------


class FullDiskWriter(io.BufferedWriter):
    """A file that takes half of the first chunk and then reports ENOSPC, like a disk that just filled up."""

    def write(self, data: bytes) -> int:  # type: ignore[override]
        super().write(bytes(data)[: len(data) // 2])
        super().flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture()
def full_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """``full_disk["name"] = FILE`` (and ``["how"]``: "write" or "fsync") makes atomic writes of FILE fail with
    ENOSPC; other files are written normally."""
    chosen: dict[str, str] = {}
    temporary_fds: dict[int, str] = {}
    real_mkstemp, real_fdopen, real_fsync = tempfile.mkstemp, os.fdopen, os.fsync

    def mkstemp(*args: object, **kwargs: object) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)  # type: ignore[call-overload]
        temporary_fds[fd] = os.path.basename(name)
        return fd, name

    def targets_chosen(fd: int) -> bool:  # the name may be a pattern: "*.json"
        return "name" in chosen and fnmatch.fnmatch(temporary_fds.get(fd, ""), f".{chosen['name']}.*")

    def fdopen(fd: int, mode: str = "r", *args: object, **kwargs: object) -> object:
        if targets_chosen(fd) and chosen.get("how") == "write":
            return FullDiskWriter(io.FileIO(fd, "wb"))
        return real_fdopen(fd, mode, *args, **kwargs)  # type: ignore[call-overload]

    def fsync(fd: int) -> None:
        if targets_chosen(fd) and chosen.get("how") == "fsync":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.setattr(os, "fdopen", fdopen)
    monkeypatch.setattr(os, "fsync", fsync)
    yield chosen
    chosen.clear()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}


SMALL_TRAIN = ["train", "--arch", "test-mlp", "--epochs", "1", "--n-train", "64", "--batch-size", "32",
               "--val-size", "0", "--device", "cpu", "--quiet"]


@pytest.mark.parametrize(("file_name", "how"), [
    ("model.safetensors", "write"), ("model.safetensors", "fsync"), ("state.pt", "write"), ("state.pt", "fsync"),
    ("log.jsonl", "write"),
])
def test_disk_full_during_a_training_checkpoint_exits_3_and_keeps_the_old_file(
        file_name: str, how: str, full_disk: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = RUNNER.invoke(app, [*SMALL_TRAIN, "--out", str(out)])
    assert first.exit_code == 0, first.output
    before = snapshot(out)
    assert file_name in before

    full_disk.update(name=file_name, how=how)
    failed = RUNNER.invoke(app, [*SMALL_TRAIN, "--out", str(out), "--epochs", "2", "--resume"])
    assert failed.exit_code == 3, failed.output
    assert f"disk full while writing {out / file_name}" in failed.output
    assert "previous file is intact" in failed.output and len(failed.output.strip().splitlines()) == 1
    assert (out / file_name).read_bytes() == before[file_name]
    assert temporaries(out) == [], "the temporary file must be removed"
    load_checkpoint(out / "model.safetensors")

    full_disk.clear()  # space freed: the same command continues
    again = RUNNER.invoke(app, [*SMALL_TRAIN, "--out", str(out), "--epochs", "2", "--resume"])
    assert again.exit_code == 0, again.output
    assert load_checkpoint(out / "model.safetensors").metadata["epoch"] == 2


def write_checkpoint(path: Path, seed: int, poison: float | None = None) -> Path:
    """An untrained test-cnn checkpoint for mnist5k; ``poison`` replaces one output bias (NaN, Inf)."""
    torch.manual_seed(seed)
    state = build_model("test-cnn", 10, (1, 28, 28), [0.0], [1.0]).state_dict()
    if poison is not None:
        state["net.linear.bias"][0] = poison
    save_checkpoint(path, state, {"name": path.stem, "arch": "test-cnn", "dataset": "mnist5k", "num_classes": 10,
                                  "input_shape": [1, 28, 28], "mean": [0.0], "std": [1.0], "method": "standard",
                                  "train_attacks": [], "epoch": 1})
    return path


def evaluate_args(checkpoint: Path, results: Path) -> list[str]:
    return ["eval", str(checkpoint), "--attacks", "fgsm-linf", "--n-examples", "32", "--results-dir", str(results),
            "--device", "cpu", "--quiet"]


@pytest.mark.parametrize("how", ["write", "fsync"])
def test_disk_full_while_writing_the_leaderboard_exits_3_and_keeps_the_old_file(
        how: str, full_disk: dict[str, str], tmp_path: Path) -> None:
    results = tmp_path / "results"
    evaluated = RUNNER.invoke(app, evaluate_args(write_checkpoint(tmp_path / "alpha.safetensors", 0), results))
    assert evaluated.exit_code == 0, evaluated.output
    board = tmp_path / "boards" / "leaderboard.md"
    assert RUNNER.invoke(app, ["leaderboard", "--results-dir", str(results), "--output", str(board)]).exit_code == 0
    before = board.read_bytes()

    full_disk.update(name=board.name, how=how)
    failed = RUNNER.invoke(app, ["leaderboard", "--results-dir", str(results), "--format", "csv",
                                 "--output", str(board)])
    assert failed.exit_code == 3, failed.output
    assert f"disk full while writing {board}" in failed.output
    assert board.read_bytes() == before
    assert visible_files(board.parent) == ["leaderboard.md"] and temporaries(board.parent) == []


def test_disk_full_while_writing_a_result_leaves_no_orphan_matrix_and_the_rerun_resumes(
        full_disk: dict[str, str], tmp_path: Path) -> None:
    """The matrix is written first and the JSON last; when the JSON cannot be written the matrix would belong to no
    result, so it is removed. The evaluation's state is kept, and the same command then finishes."""
    results, checkpoint = tmp_path / "results", write_checkpoint(tmp_path / "alpha.safetensors", 0)
    full_disk.update(name="alpha__whitebox__*.json", how="write")
    failed = RUNNER.invoke(app, evaluate_args(checkpoint, results))
    assert failed.exit_code == 3, failed.output
    assert "disk full while writing" in failed.output and len(failed.output.strip().splitlines()) == 1
    folder = results / "runs" / "mnist5k"
    assert visible_files(folder) == [] and temporaries(folder) == []
    assert list(folder.glob(".alpha__whitebox.evalstate.npz")), "the finished attacks are kept for the rerun"

    full_disk.clear()
    again = RUNNER.invoke(app, evaluate_args(checkpoint, results))
    assert again.exit_code == 0, again.output
    (result,) = folder.glob("*.json")
    assert [path.name for path in folder.glob("*.npz")] == [result.with_suffix(".npz").name]


# ---- two evaluations, one results directory -----------------------------------------------------------------


@pytest.mark.slow
def test_two_evaluations_writing_one_results_directory_keep_both(hooked: Spawn, tmp_path: Path) -> None:
    """Both processes hold their result's temporary file at the same moment (a barrier in the hook), then
    rename: both results survive, under different run ids, and the leaderboard ranks both models."""
    results = tmp_path / "results"
    checkpoints = [write_checkpoint(tmp_path / f"{name}.safetensors", seed) for seed, name in enumerate(("alpha",
                                                                                                        "beta"))]
    children = [hooked("barrier", str(tmp_path / "barrier"), 2, *evaluate_args(checkpoint, results))
                for checkpoint in checkpoints]
    for child in children:
        child.wait_for("BARRIER passed")
    for child in children:
        assert child.finish() == 0, child.output()

    folder = results / "runs" / "mnist5k"
    documents = [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]
    assert sorted(document["checkpoint"]["name"] for document in documents) == ["alpha", "beta"]
    assert len({document["run_id"] for document in documents}) == 2
    now = utc_now()  # one model evaluated twice in the same second still gets two run ids
    assert make_run_id("alpha", "whitebox", now) != make_run_id("alpha", "whitebox", now)
    assert sorted(path.name for path in folder.glob("*.npz")) == sorted(f"{d['run_id']}.npz" for d in documents)
    assert temporaries(folder) == []
    board = RUNNER.invoke(app, ["leaderboard", "--results-dir", str(results), "--format", "json"])
    assert board.exit_code == 0, board.output
    rows = json.loads(board.output)[0]["rows"]
    assert sorted(row["name"] for row in rows) == ["alpha", "beta"]


# ---- one writer per output ----------------------------------------------------------------------------------


def test_a_second_training_into_a_folder_in_use_is_refused_naming_the_first(tmp_path: Path) -> None:
    """A live process holds the folder (as a running `midbench train` does): the second is one line, exit 2, with
    the first's pid and host, and writes nothing; once the first is done the same command trains."""
    import socket

    from midbench.fileio import hold_output
    from midbench.paths import TRAIN_LOCK_FILE

    out = tmp_path / "run"
    out.mkdir()
    holder = hold_output(out / TRAIN_LOCK_FILE, "the training run", "wait")
    command = ["train", "--method", "standard", "--arch", "test-mlp", "--epochs", "1", "--n-train", "64",
               "--val-size", "0", "--device", "cpu", "--quiet", "--out", str(out)]
    refused = RUNNER.invoke(app, command)
    assert refused.exit_code == 2, refused.output
    assert f"process {os.getpid()} on {socket.gethostname()}" in refused.output
    assert len(refused.output.strip().splitlines()) == 1
    assert [path.name for path in out.iterdir()] == [TRAIN_LOCK_FILE]  # nothing written
    holder.close()
    trained = RUNNER.invoke(app, command)
    assert trained.exit_code == 0, trained.output
    assert (out / "model.safetensors").is_file() and not (out / TRAIN_LOCK_FILE).exists()


# ---- NaN logits --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("poison", [float("nan"), float("inf"), float("-inf")], ids=["nan", "inf", "-inf"])
def test_non_finite_logits_exit_4_and_write_no_result(poison: float, tmp_path: Path) -> None:
    results = tmp_path / "results"
    checkpoint = write_checkpoint(tmp_path / "poisoned.safetensors", 0, poison)
    result = RUNNER.invoke(app, evaluate_args(checkpoint, results))
    assert result.exit_code == 4, result.output
    assert "NaN or Inf logits" in result.output and len(result.output.strip().splitlines()) == 1
    assert not list(results.glob("runs/**/*.json")) and not list(results.glob("runs/**/*.npz"))
    board = RUNNER.invoke(app, ["leaderboard", "--results-dir", str(results)])
    assert board.exit_code == 2 and "no complete result files" in board.output
