"""Resumable evaluation (docs/reliability.md): an interrupted evaluation continues where it stopped, computes nothing
twice, ends with the uninterrupted run's matrix, and refuses a state written with other settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from midbench.attacks.specs import load_registry
from midbench.data.datasets import TensorSplit, get_dataset
from midbench.errors import UsageError
from midbench.evaluation.engine import Evaluation, evaluate
from midbench.evaluation.state import EvalState

ATTACKS = ("fgsm-linf", "pgd-linf", "noise-uniform-linf")
BATCH = 16
CPU = torch.device("cpu")


class Crash(Exception):
    """Stands in for a kill: raised from the progress callback after some batches."""


@pytest.fixture(scope="module")
def attacks() -> list:
    registry = load_registry([])
    eps = get_dataset("mnist5k").eps
    return [(registry.get(name).resolve(eps), "unknown") for name in ATTACKS]


@pytest.fixture(scope="module")
def data(mnist5k_test: TensorSplit) -> TensorSplit:
    return mnist5k_test.subset(torch.arange(80))


def run(model: nn.Module, data: TensorSplit, attacks: list, state: EvalState | None = None,
        crash_after: int | None = None, calls: list | None = None) -> Evaluation:
    seen = [] if calls is None else calls

    def progress(key: str, done: int, total: int) -> None:
        seen.append((key, done))
        if crash_after is not None and len(seen) >= crash_after:
            raise Crash()

    return evaluate(model, data, attacks, device=CPU, batch_size=BATCH, seed=3, progress=progress, state=state)


def fingerprint(**overrides: object) -> dict:
    return {"checkpoint_sha256": "abc", "attacks": list(ATTACKS), "seed": 3, **overrides}


@pytest.mark.parametrize("crash_after", [1, 3, 6])
def test_resumed_evaluation_equals_the_uninterrupted_one(standard_model: nn.Module, data: TensorSplit,
                                                         attacks: list, tmp_path: Path, crash_after: int) -> None:
    reference = run(standard_model, data, attacks)
    path = tmp_path / ".m__whitebox.evalstate.npz"
    state = EvalState.open(path, fingerprint())
    with pytest.raises(Crash):
        run(standard_model, data, attacks, state, crash_after=crash_after)
    state.finish(keep=True)
    assert path.exists()

    resumed_state = EvalState.open(path, fingerprint())
    assert resumed_state.resumed
    calls: list = []
    resumed = run(standard_model, data, attacks, resumed_state, calls=calls)
    np.testing.assert_array_equal(resumed.matrix, reference.matrix)
    np.testing.assert_array_equal(resumed.clean_correct, reference.clean_correct)
    # nothing finished before the crash was recomputed: the resumed run reports only the remaining batches
    assert len(calls) == (sum(1 for o in reference.outcomes for _ in range(0, int(reference.clean_correct.sum()),
                                                                              BATCH)) - crash_after)
    for before, after in zip(reference.outcomes, resumed.outcomes, strict=True):
        assert (after.forward_passes, after.backward_passes) == (before.forward_passes, before.backward_passes)
    resumed_state.finish()
    assert not path.exists()


def test_state_with_other_settings_is_refused(standard_model: nn.Module, data: TensorSplit, attacks: list,
                                              tmp_path: Path) -> None:
    path = tmp_path / ".m__whitebox.evalstate.npz"
    state = EvalState.open(path, fingerprint())
    with pytest.raises(Crash):
        run(standard_model, data, attacks, state, crash_after=2)
    state.finish(keep=True)
    with pytest.raises(UsageError, match="seed"):
        EvalState.open(path, fingerprint(seed=4))
    # a caller that owns its evaluations (calibrate) resumes its own state and discards only another's
    same = EvalState.open(path, fingerprint(), discard_other_settings=True)
    assert same.resumed
    same.finish(keep=True)
    other = EvalState.open(path, fingerprint(seed=4), discard_other_settings=True)
    assert not other.resumed and not path.exists()
    other.finish()
    state = EvalState.open(path, fingerprint())
    with pytest.raises(Crash):
        run(standard_model, data, attacks, state, crash_after=2)
    state.finish(keep=True)
    restarted = EvalState.open(path, fingerprint(seed=4), restart=True)
    assert not restarted.resumed and not path.exists()
    restarted.finish()


def test_unreadable_state_is_refused(tmp_path: Path) -> None:
    path = tmp_path / ".m__whitebox.evalstate.npz"
    path.write_bytes(b"not a state")
    with pytest.raises(UsageError, match="--restart"):
        EvalState.open(path, fingerprint())


def test_a_second_live_run_of_the_same_evaluation_is_refused_naming_the_first(tmp_path: Path) -> None:
    import os
    import socket

    path = tmp_path / ".m__whitebox.evalstate.npz"
    first = EvalState.open(path, fingerprint())
    with pytest.raises(UsageError, match=rf"being written by process {os.getpid()} on {socket.gethostname()}"):
        EvalState.open(path, fingerprint())
    first.finish()
    third = EvalState.open(path, fingerprint())  # free again once the first has finished
    third.finish()
    assert list(tmp_path.iterdir()) == []  # neither the state nor its lock file is left behind


def test_the_lock_of_a_killed_evaluation_is_taken_over(tmp_path: Path) -> None:
    """The lock is the kernel's: a process killed while holding it leaves a lock file that the next run takes."""
    import subprocess
    import sys

    path = tmp_path / ".m__whitebox.evalstate.npz"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from midbench.fileio import hold_output\n"
                               f"lock = hold_output(Path({str(path) + '.lock'!r}), 'it', 'wait')\n"
                               "print('held', flush=True)\ntime.sleep(120)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(UsageError, match=rf"being written by process {holder.pid}"):
        EvalState.open(path, fingerprint())
    holder.kill()
    holder.wait()
    assert path.with_name(path.name + ".lock").exists()  # left behind by the killed process
    state = EvalState.open(path, fingerprint())
    state.finish()


# --- the command line: SIGKILL / SIGINT during `midbench eval`, then the same command again ----------------------

CLI_ATTACKS = "fgsm-linf,pgd-linf,pgd-l2,noise-uniform-linf"


def eval_command(checkpoint: Path, results: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "midbench", "eval", str(checkpoint), "--attacks", CLI_ATTACKS, "--n-examples",
            "96", "--batch-size", "8", "--results-dir", str(results), "--device", "cpu", "--name", "m", "--quiet"]


def result_matrix(results: Path) -> np.ndarray:
    (json_path,) = list((results / "runs" / "mnist5k").glob("*.json"))
    with np.load(json_path.with_suffix(".npz")) as saved:
        return saved["robust"]


def interrupt_when_state_appears(command: list[str], results: Path, signal_number: int) -> tuple[int, str]:
    """Start ``command`` and send ``signal_number`` as soon as its state file exists (its first batch is saved);
    waits on that file, never on a fixed sleep. Returns the exit code and stderr."""
    import os
    import signal
    import subprocess
    import time

    state = results / "runs" / "mnist5k" / ".m__whitebox.evalstate.npz"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A shell that runs the tests in the background starts them with SIGINT ignored, and Python then never
    # installs its Ctrl-C handler: give the child the default disposition, as an interactive terminal would.
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not state.exists():
        assert process.poll() is None, f"evaluation ended before its first batch was saved: {process.stderr.read()}"
        assert time.monotonic() < deadline, "no state file within 120 s"
        time.sleep(0.005)
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted_matrix(standard_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """The matrix of the evaluation run through without interruption: what every interrupted run must end with."""
    import os
    import subprocess

    reference = tmp_path_factory.mktemp("reference")
    subprocess.run(eval_command(standard_checkpoint, reference), check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return result_matrix(reference)


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGINT", "SIGTERM"])
def test_interrupted_cli_evaluation_resumes_to_the_same_matrix(standard_checkpoint: Path, tmp_path: Path,
                                                                signal_name: str,
                                                                uninterrupted_matrix: np.ndarray) -> None:
    import os
    import signal
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    interrupted = tmp_path / "interrupted"
    command = eval_command(standard_checkpoint, interrupted)
    code, stderr = interrupt_when_state_appears(command, interrupted, getattr(signal, signal_name))
    expected = {"SIGKILL": -signal.SIGKILL, "SIGINT": 130, "SIGTERM": 143}[signal_name]
    assert code == expected, stderr
    if signal_name != "SIGKILL":
        assert "rerun the same command" in stderr
    assert not list((interrupted / "runs" / "mnist5k").glob("*.json"))  # no result from an interrupted run

    finished = subprocess.run(command, env=env, capture_output=True, text=True)
    assert finished.returncode == 0, finished.stderr
    assert "resuming" in finished.stdout
    np.testing.assert_array_equal(result_matrix(interrupted), uninterrupted_matrix)
    assert not (interrupted / "runs" / "mnist5k" / ".m__whitebox.evalstate.npz").exists()


@pytest.mark.slow
def test_cli_refuses_a_state_from_other_settings_then_restarts(standard_checkpoint: Path, tmp_path: Path) -> None:
    import signal
    import subprocess

    command = eval_command(standard_checkpoint, tmp_path)
    code, _ = interrupt_when_state_appears(command, tmp_path, signal.SIGKILL)
    assert code == -signal.SIGKILL
    other_seed = [*command, "--seed", "7"]
    refused = subprocess.run(other_seed, capture_output=True, text=True)
    assert refused.returncode == 2 and "seed" in refused.stderr and "--restart" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    restarted = subprocess.run([*other_seed, "--restart"], capture_output=True, text=True)
    assert restarted.returncode == 0, restarted.stderr


TINY_PROFILE = """
[[attack]]
id = "r-pgd-linf"
version = 1
family = "linf"
norm = "Linf"
implementation = "midbench.attacks.gradient:PGD"
citation = "test"
params = { steps = 3, step_size = "eps/2", random_start = true }

[[attack]]
id = "r-elastic"
version = 1
family = "spatial"
threat_model = "elastic"
budget = ["max_flow"]
implementation = "midbench.attacks.elastic:ElasticAttack"
citation = "test"
params = { max_flow = 2.0, sigma = 2.0, steps = 2, relative_step = 0.25, random_start = true }

[[suite]]
name = "r-profile"
attacks = ["r-pgd-linf", "r-elastic"]
"""


@pytest.mark.parametrize("crash_after", [2, 9, 17])
def test_a_killed_profile_resumes_to_the_uninterrupted_curves(standard_model: nn.Module, data: TensorSplit,
                                                              tmp_path: Path, crash_after: int) -> None:
    """The profile's steps (threat model, strength, attack) are recorded batch by batch like any attack: a run
    killed inside a ladder (early, mid-ladder, in the second threat model) resumes with nothing recomputed and
    ends with the uninterrupted run's nested curves, example by example."""
    from midbench.attacks.plans import profile_plan

    (tmp_path / "profile.toml").write_text(TINY_PROFILE)
    plans = profile_plan(load_registry([tmp_path]), get_dataset("mnist5k").eps, set(), suite="r-profile")

    def climb(state: EvalState | None = None, crash: int | None = None, calls: list | None = None) -> Evaluation:
        seen = [] if calls is None else calls

        def progress(key: str, done: int, total: int) -> None:
            seen.append((key, done))
            if crash is not None and len(seen) >= crash:
                raise Crash()

        return evaluate(standard_model, data, [], device=CPU, batch_size=BATCH, seed=3, progress=progress,
                        state=state, profile=plans)

    reference_calls: list = []
    reference = climb(calls=reference_calls)
    assert len(reference_calls) > crash_after
    path = tmp_path / ".m__whitebox.evalstate.npz"
    state = EvalState.open(path, fingerprint(profile="r-profile"))
    with pytest.raises(Crash):
        climb(state, crash=crash_after)
    state.finish(keep=True)
    resumed_state = EvalState.open(path, fingerprint(profile="r-profile"))
    assert resumed_state.resumed
    calls: list = []
    resumed = climb(resumed_state, calls=calls)
    for before, after in zip(reference.curves, resumed.curves, strict=True):
        np.testing.assert_array_equal(after.robust, before.robust)
        assert (after.forward_passes, after.backward_passes) == (before.forward_passes, before.backward_passes)
    assert calls == reference_calls[crash_after:]
    resumed_state.finish()


def test_a_finished_evaluation_is_reused_only_with_the_same_settings(standard_checkpoint: Path,
                                                                     tmp_path: Path) -> None:
    """``reuse_finished`` (what the demo uses to continue): the same settings return the newest result file of
    the name without attacking; another seed or attack list, an older match, or a missing matrix evaluate again."""
    from midbench.evaluation.eval_config import EvalConfig
    from midbench.evaluation.runner import run_evaluation
    from midbench.evaluation.selection import AttackSelection

    def run(seed: int = 0, attacks: tuple[str, ...] = ("fgsm-linf",), reuse: bool = True):  # noqa: ANN202
        return run_evaluation(EvalConfig(checkpoint=str(standard_checkpoint),
                                         selection=AttackSelection(attacks=attacks), n_examples=8,
                                         results_dir=str(tmp_path), seed=seed, device="cpu", name="m",
                                         reuse_finished=reuse))

    first = run()
    assert first.evaluation is not None and first.result is not None
    assert first.result.extra["settings_sha256"]
    again = run()
    assert again.evaluation is None and again.path == first.path and again.result == first.result
    assert run(reuse=False).evaluation is not None  # without the option every run evaluates
    for other in (run(seed=1), run(attacks=("fgsm-linf", "pgd-linf"))):
        assert other.evaluation is not None and other.path != first.path
    # only the newest result of the name counts (the one tables show): after the runs above, evaluate again
    back = run()
    assert back.evaluation is not None and back.path is not None
    assert run().path == back.path
    back.path.with_suffix(".npz").unlink()  # a result without its matrix is not finished
    assert run().evaluation is not None
