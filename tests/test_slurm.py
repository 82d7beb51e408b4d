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
    assert slurm_options({"dependencies": True}, ["arrays=yes"]) == SlurmOptions(dependencies=True, arrays=True)
    assert slurm_options({"dependencies": True, "arrays": True}, ["dependencies=false", "arrays=0"]) == \
        SlurmOptions()


@pytest.mark.parametrize(("table", "pairs", "message"), [
    ({"cpus_per_task": "four"}, [], "integer"),
    ({"time": 1.5}, [], "integer"),
    ({"partition": 3}, [], "string"),
    ({"constraint": ["a", "b"]}, [], "string or an integer"),
    ({}, ["time=soon"], "integer"),
    ({}, ["partition"], "KEY=VALUE"),
    ({}, ["cpus_per_task=0"], "at least 1"),
    ({}, ["dependencies=maybe"], "true or false"),
    ({"dependencies": "yes"}, [], "true or false"),
    ({"arrays": True}, [], "needs dependencies = true"),
    ({"dependencies": True, "max_jobs": 4}, [], "leave one of the two out"),
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
    (["--detach"], SWEEP, "--detach needs --executor slurm with dependencies = true"),
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


@pytest.fixture(scope="module")
def serial_board(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The tiny sweep's leaderboard from a serial run on this machine: what every Slurm run must write."""
    folder = tmp_path_factory.mktemp("serial")
    serial = bench("--config", str(write(folder)), "--out", str(folder / "serial"))
    assert serial.returncode == 0, serial.stderr
    return (folder / "serial" / "results" / BOARD).read_bytes()


BOARD = "leaderboard-tiny-slurm.md"


@needs_slurm
@pytest.mark.slow
def test_a_sweep_through_slurm_equals_the_serial_run_and_resubmits_a_cancelled_job(tmp_path: Path,
                                                                                  serial_board: bytes) -> None:
    config = write(tmp_path)
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
    assert (out / "results" / BOARD).read_bytes() == serial_board
    assert sorted((out / "slurm").iterdir()), "no job logs"


def _job_field(job_id: str, name: str) -> str:
    """A field of ``scontrol show job`` (``Dependency``, ``ArrayJobId``, ...) while Slurm still knows the job."""
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, check=False).stdout
    return next((part.split("=", 1)[1] for part in shown.split() if part.startswith(name + "=")), "")


@needs_slurm
@pytest.mark.slow
def test_every_step_submitted_at_once_with_dependencies_detached_then_collected(tmp_path: Path,
                                                                                 serial_board: bytes) -> None:
    """``dependencies = true, arrays = true``: ``--detach`` submits all nine steps and returns, each evaluation
    after its model's and its source's jobs. The jobs are held back 20 s (``begin``, an sbatch option passed
    through), so the source's training is cancelled before it starts (a running submitit job that gets SIGTERM
    may still finish and leave its result); Slurm then cancels what needs it and runs the rest. The rerun
    records what finished, submits the cancelled steps again and writes the serial run's table."""
    config = write(tmp_path, SWEEP.replace("[slurm]", "[slurm]\ndependencies = true\narrays = true"))
    out = tmp_path / "slurm"
    submitted = bench("--config", str(config), "--out", str(out), "--executor", "slurm", "--detach",
                      "--slurm-option", "begin=now+20")
    assert submitted.returncode == 0, submitted.stderr
    assert "rerun the same command" in submitted.stdout
    jobs = {cell: record["job_id"]
            for cell, record in json.loads((out / "sweep-state.json").read_text(encoding="utf-8"))["jobs"].items()}
    assert set(jobs) == {"train standard", "train pgd-at", "train standard-b", "craft standard",
                         "eval standard/whitebox", "eval pgd-at/whitebox", "eval pgd-at/transfer",
                         "eval standard-b/whitebox", "eval standard-b/transfer"}
    # the three trainings need nothing: one array of three tasks
    assert len({jobs[f"train {name}"].split("_")[0] for name in ("standard", "pgd-at", "standard-b")}) == 1
    # a transfer evaluation waits for its model, the source and the source's crafting
    dependency = _job_field(jobs["eval pgd-at/transfer"], "Dependency")
    assert all(f"afterok:{jobs[cell]}" in dependency for cell in ("train standard", "train pgd-at",
                                                                  "craft standard")), dependency
    assert _job_field(jobs["train standard"], "JobState") == "PENDING"
    subprocess.run(["scancel", jobs["train standard"]], check=True)
    deadline = time.monotonic() + 300
    while any(_job_field(job, "JobState") in ("PENDING", "RUNNING", "COMPLETING") for job in jobs.values()):
        assert time.monotonic() < deadline, "the jobs did not end"
        time.sleep(1)
    state = json.loads((out / "sweep-state.json").read_text(encoding="utf-8"))
    assert state["training"] == {} and state["evaluations"] == {}  # detached: nothing recorded yet

    collected = bench("--config", str(config), "--out", str(out), "--executor", "slurm")
    assert collected.returncode == 0, collected.stderr
    final = json.loads((out / "sweep-state.json").read_text(encoding="utf-8"))["jobs"]
    # what did not need the cancelled training finished in the first submission and was only recorded
    for cell in ("train pgd-at", "train standard-b", "eval pgd-at/whitebox", "eval standard-b/whitebox"):
        assert final[cell]["job_id"] == jobs[cell], cell
    # the cancelled training, and what Slurm cancelled because it needed it, were submitted again
    for cell in ("train standard", "craft standard", "eval standard/whitebox", "eval pgd-at/transfer",
                 "eval standard-b/transfer"):
        assert final[cell]["job_id"] != jobs[cell], cell
    assert (out / "results" / BOARD).read_bytes() == serial_board


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


class _FakeJob:
    """A job of :class:`_FakePool`: done or not, with a result or a failure."""

    def __init__(self, job_id: str, name: str, done: bool = False, value: object = None) -> None:
        self.job_id, self.name, self._done, self._value = job_id, name, done, value

    def done(self) -> bool:
        return self._done

    def result(self) -> object:
        from midbench.errors import StepFailed

        if self._value is None:
            raise StepFailed(f"step {self.name}: Slurm job {self.job_id} ended without a result")
        return self._value


class _FakePool:
    """What :mod:`midbench.bench.submitted` asks of a :class:`SlurmPool`, with the submissions recorded."""

    def __init__(self, earlier: dict[str, _FakeJob] | None = None) -> None:
        self.calls: list[tuple[list[str], tuple[str, ...], bool]] = []
        self.earlier = earlier or {}

    def submit_after(self, calls: list, after: tuple[str, ...], array: bool) -> list[_FakeJob]:
        first = 100 + len(self.calls)
        self.calls.append(([name for name, _, _ in calls], tuple(after), array))
        ids = [f"{first}_{index}" for index in range(len(calls))] if array and len(calls) > 1 else \
            [str(first * 10 + index) for index in range(len(calls))]
        return [_FakeJob(job_id, name) for job_id, (name, _, _) in zip(ids, calls, strict=True)]

    def adopt(self, job_id: str, name: str) -> _FakeJob:
        return self.earlier[job_id]


def _submission(tmp_path: Path, arrays: bool, jobs: dict[str, str] | None = None,
                earlier: dict[str, _FakeJob] | None = None) -> tuple[_FakePool, dict[str, object]]:
    from midbench.bench import submitted
    from midbench.bench.cells import shared_settings
    from midbench.bench.sweep import load_sweep
    from midbench.bench.workspace import open_folders

    tmp_path.mkdir(exist_ok=True)
    sweep = load_sweep(write(tmp_path))
    out, results, state_path, state = open_folders(sweep, tmp_path / "out", None)
    state["jobs"] = {cell: {"job_id": job_id} for cell, job_id in (jobs or {}).items()}
    context = submitted._Sweep(sweep, out, results, state_path, state, shared_settings(sweep), False, lambda _: None)
    pool = _FakePool(earlier)
    running = submitted._adopt(context, pool)
    cells = submitted._plan(context, 1, set(running))
    handles = {**running, **submitted._submit(context, pool, cells, running, arrays=arrays)}
    return pool, handles


def test_every_step_is_submitted_after_the_jobs_of_what_it_needs(tmp_path: Path) -> None:
    """The tiny sweep's nine steps in three waves; with arrays, those of a wave that need the same jobs share one
    array (the three trainings; the source's crafting and white-box evaluation), without arrays one job each."""
    pool, handles = _submission(tmp_path, arrays=True)
    assert len(handles) == 9
    ids = {name: handle.job_id for name, handle in handles.items()}
    assert pool.calls[0] == (["train standard", "train pgd-at", "train standard-b"], (), True)
    assert (["craft standard", "eval standard/whitebox"], (ids["train standard"],), True) in pool.calls
    transfer = next(call for call in pool.calls if call[0] == ["eval pgd-at/transfer"])
    assert sorted(transfer[1]) == sorted([ids["train pgd-at"], ids["train standard"], ids["craft standard"]])
    # every step comes after each step it needs
    order = [name for names, _, _ in pool.calls for name in names]
    assert order.index("craft standard") > order.index("train standard")
    assert order.index("eval standard-b/transfer") > order.index("craft standard")
    single, _ = _submission(tmp_path / "single", arrays=False)
    assert all(len(names) == 1 for names, _, _ in single.calls) and len(single.calls) == 9


def test_a_rerun_waits_for_queued_jobs_and_submits_those_that_ended_without_a_result(tmp_path: Path) -> None:
    """The training of standard is still queued from the first submission: it is waited for, not submitted again,
    and what needs it is submitted after it; the crafting step's job ended without a result: submitted again."""
    earlier = {"7": _FakeJob("7", "train standard"), "8": _FakeJob("8", "craft standard", done=True)}
    pool, handles = _submission(tmp_path, arrays=False, jobs={"train standard": "7", "craft standard": "8"},
                                earlier=earlier)
    assert handles["train standard"] is earlier["7"]
    submitted = [name for names, _, _ in pool.calls for name in names]
    assert "train standard" not in submitted and "craft standard" in submitted
    craft = next(call for call in pool.calls if call[0] == ["craft standard"])
    assert craft[1] == ("7",)


def test_jobs_of_steps_the_sweep_no_longer_has_are_left_alone(tmp_path: Path) -> None:
    """An earlier submission's jobs for a run, a crafting step and an evaluation since removed from the sweep
    file: none is adopted (``_FakePool.adopt`` would raise KeyError for an id it does not know) and none is
    submitted; the sweep's own nine steps are."""
    gone = {"train removed": "1", "craft removed": "2", "eval removed/whitebox": "3"}
    pool, handles = _submission(tmp_path, arrays=False, jobs=gone)
    submitted = [name for names, _, _ in pool.calls for name in names]
    assert len(submitted) == 9 and not set(gone) & set(submitted) and not set(gone) & set(handles)


def _readme_slurm_section() -> str:
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    start = text.index("### Running a sweep on a Slurm cluster")
    return text[start:text.index("\n### ", start + 1)]


def test_the_readme_slurm_commands_and_options_are_accepted_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's `[slurm]` table parses, and each of its `midbench bench` lines is accepted as written (with
    `--dry-run` added: the cluster runs above use the tiny sweep, not the README's full one on a GPU partition)."""
    import re
    import shlex

    from midbench._toml import tomllib

    section = _readme_slurm_section()
    (table,) = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    options = slurm_options(tomllib.loads(table)["slurm"])
    assert options.partition and options.time and not options.dependencies
    (commands,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    lines = [line.split(" #")[0].strip() for line in commands.splitlines() if line.startswith("midbench bench")]
    assert any("dependencies=true" in line and "--detach" in line for line in lines)
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the README's paths are the repository's
    for line in lines:
        result = CliRunner().invoke(app, [*shlex.split(line)[1:], "--dry-run"])
        assert result.exit_code == 0, (line, result.output)


def test_with_seeds_every_replicate_is_submitted_before_any_is_waited_for(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``dependencies = true`` and ``seeds``, without ``--detach``: the three replicates' jobs are all submitted
    (detached) first, then each seed's are taken over and waited for, so the cluster runs the seeds side by side."""
    from midbench.bench import sweep as sweep_module
    from midbench.bench.sweep import load_sweep, run_sweep
    from midbench.bench.workspace import SweepOutcome

    calls: list[tuple[str, bool]] = []

    def submitted(replicate: object, out_dir: Path, results_dir: Path, **options: object) -> SweepOutcome | None:
        calls.append((Path(out_dir).name, bool(options["detach"])))
        return None if options["detach"] else SweepOutcome("", [], Path(results_dir), {})

    monkeypatch.setattr(sweep_module, "run_submitted", submitted)
    monkeypatch.setattr(sweep_module, "check_slurm", lambda options: None)  # no cluster needed: nothing is submitted
    monkeypatch.setattr(sweep_module, "write_leaderboards", lambda *args: ("", []))
    sweep = load_sweep(write(tmp_path, SWEEP.replace("seed = 0", "seeds = [0, 1, 2]")))
    run_sweep(sweep, tmp_path / "out", config_label="sweep.toml", executor="slurm",
              slurm=SlurmOptions(dependencies=True))
    assert calls == [("seed-0", True), ("seed-1", True), ("seed-2", True),
                     ("seed-0", False), ("seed-1", False), ("seed-2", False)]
