"""The training loop: exact resume after SIGKILL, refusal of mismatched state, NaN handling, pass counts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from midbench.artifacts.checkpoint import load_checkpoint
from midbench.cli.app import app
from midbench.config import TrainConfig
from midbench.data import get_dataset
from midbench.defenses import build_task
from midbench.evaluation.counting import PassCounter
from midbench.models import build_model

RUNNER = CliRunner()
TRAIN_ARGS = ["train", "--method", "pgd-at", "--arch", "test-mlp", "--attack-steps", "2", "--epochs", "3",
              "--batch-size", "16", "--n-train", "2400", "--val-size", "50", "--device", "cpu", "--quiet"]


def _train_process(out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # identical arithmetic in every process
    return subprocess.Popen([sys.executable, "-m", "midbench", *TRAIN_ARGS, "--out", str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_epochs(log: Path, epochs: int, process: subprocess.Popen[str], timeout: float = 300) -> None:
    """Wait until ``log`` records ``epochs`` finished epochs (an observable event, not a fixed sleep)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and len(log.read_text().splitlines()) >= epochs:
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended early: {process.communicate()}")
        time.sleep(0.02)
    raise AssertionError("training did not finish an epoch in time")


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_weights(tmp_path: Path) -> None:
    reference = _train_process(tmp_path / "uninterrupted")
    assert reference.wait(timeout=600) == 0, reference.communicate()

    killed_dir = tmp_path / "killed"
    victim = _train_process(killed_dir)
    _wait_for_epochs(killed_dir / "log.jsonl", 1, victim)
    victim.send_signal(signal.SIGKILL)  # mid-way through epoch 2
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert load_checkpoint(killed_dir / "model.safetensors").metadata["epoch"] >= 1  # the last checkpoint loads

    resumed = _train_process(killed_dir, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.communicate()
    expected = load_checkpoint(tmp_path / "uninterrupted" / "model.safetensors")
    actual = load_checkpoint(killed_dir / "model.safetensors")
    assert actual.metadata["epoch"] == 3
    assert expected.state_dict.keys() == actual.state_dict.keys()
    for name, tensor in expected.state_dict.items():
        assert torch.equal(tensor, actual.state_dict[name]), name
    log = [json.loads(line) for line in (killed_dir / "log.jsonl").read_text().splitlines()]
    assert [record["epoch"] for record in log] == [1, 2, 3]


def test_existing_run_needs_resume_and_matching_config(tmp_path: Path) -> None:
    base = ["train", "--arch", "test-mlp", "--epochs", "1", "--n-train", "64", "--val-size", "8", "--device", "cpu",
            "--quiet", "--out", str(tmp_path)]
    assert RUNNER.invoke(app, base).exit_code == 0
    again = RUNNER.invoke(app, base)
    assert again.exit_code == 2 and "--resume" in again.output
    other = RUNNER.invoke(app, [*base, "--resume", "--lr", "0.5"])
    assert other.exit_code == 2 and "different configuration" in other.output
    longer = RUNNER.invoke(app, [*base[:4], "2", *base[5:], "--resume"])
    assert longer.exit_code == 0, longer.output  # a constant-rate run may be extended
    assert load_checkpoint(tmp_path / "model.safetensors").metadata["epoch"] == 2


def test_nan_loss_exits_4_and_keeps_no_bad_checkpoint(tmp_path: Path) -> None:
    result = RUNNER.invoke(app, ["train", "--arch", "test-mlp", "--optimizer", "sgd", "--lr", "1e30", "--epochs", "1",
                                 "--n-train", "256", "--val-size", "8", "--device", "cpu", "--quiet",
                                 "--out", str(tmp_path)])
    assert result.exit_code == 4, result.output
    assert "loss became" in result.output
    assert not (tmp_path / "model.safetensors").exists()


def test_checkpoint_records_method_and_training_attacks(pgd_at_checkpoint: Path, standard_checkpoint: Path) -> None:
    pgd = load_checkpoint(pgd_at_checkpoint).metadata
    assert pgd["method"] == "pgd-at"
    assert [(a["id"], a["params"]["steps"], a["eps"]) for a in pgd["train_attacks"]] == [("pgd-linf", 3, 0.3)]
    assert load_checkpoint(standard_checkpoint).metadata["train_attacks"] == []
    assert (pgd_at_checkpoint.parent / "config.toml").read_text().startswith("[train]")


@pytest.mark.parametrize("steps", [1, 3, 7])
def test_pgd_at_step_costs_exactly_k_plus_one_passes(steps: int) -> None:
    """Goal P3: K forwards/backwards for the attack and one each for the update, per example."""
    config = TrainConfig.of(method="pgd-at", attack_steps=steps, device="cpu")
    task = build_task(config, get_dataset("mnist5k"))
    model = PassCounter(build_model("test-cnn", 10, (1, 28, 28)))
    x, y = torch.rand(12, 1, 28, 28), torch.randint(0, 10, (12,))
    task.loss(model, x, y)["loss"].backward()
    assert (model.forward_passes, model.backward_passes) == (12 * (steps + 1), 12 * (steps + 1))


def test_cuda_request_without_gpu_is_a_usage_error(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = RUNNER.invoke(app, ["train", "--device", "cuda", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2 and "no CUDA device" in result.output
    bf16 = RUNNER.invoke(app, ["train", "--bf16", "--device", "cpu", "--out", str(tmp_path / "b"), "--quiet"])
    assert bf16.exit_code == 2 and "CUDA" in bf16.output


# ---- training attacks from the user's registry folders ----------------------------------------------------------

MY_ATTACK = """[[attack]]
id = "my-pgd-linf"
version = 1
family = "linf"
threat_model = "linf"
norm = "Linf"
implementation = "midbench.attacks.gradient:PGD"
citation = "a user's PGD variant"
description = "3 steps of eps/2 from a random start"
params = { steps = 3, step_size = "eps/2", random_start = true }
passes = { forward = "steps", backward = "steps" }
"""


@pytest.mark.parametrize("method", ["pgd-at", "trades", "msd", "mid"])
def test_training_attacks_come_from_registry_dirs_too(tmp_path: Path, method: str) -> None:
    """An attack defined only in a --registry-dir folder can be trained against (every method that resolves a
    training attack, MID's pool included); without the folder it is an unknown id."""
    from midbench.errors import UsageError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my.toml").write_text(MY_ATTACK, encoding="utf-8")
    field = {"pgd-at": "train_attack", "trades": "train_attack", "msd": "threat_models", "mid": "pool"}[method]
    config = TrainConfig.of(method=method, **{field: "my-pgd-linf"}, registry_dirs=str(tmp_path / "mine"))
    task = build_task(config, get_dataset("mnist5k"))
    expected = "trades-kl-linf" if method == "trades" else "my-pgd-linf"  # TRADES' KL attack takes its steps
    assert [(attack.id, attack.params["steps"]) for attack in task.train_attacks] == [(expected, 3)]
    with pytest.raises(UsageError, match="my-pgd-linf"):
        build_task(TrainConfig.of(method=method, **{field: "my-pgd-linf"}), get_dataset("mnist5k"))


def test_registry_dir_reaches_the_recorded_training_attack(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "my.toml").write_text(MY_ATTACK, encoding="utf-8")
    result = CliRunner().invoke(app, ["train", "--method", "pgd-at", "--train-attack", "my-pgd-linf",
                                      "--registry-dir", str(tmp_path / "mine"), "--epochs", "1", "--n-train", "64",
                                      "--val-size", "16", "--batch-size", "32", "--out", str(tmp_path / "run"),
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    meta = load_checkpoint(tmp_path / "run" / "model.safetensors").metadata
    assert [attack["id"] for attack in meta["train_attacks"]] == ["my-pgd-linf"]
    assert meta["config"]["registry_dirs"] == str(tmp_path / "mine")


def test_a_run_started_before_a_config_field_existed_still_resumes(tmp_path: Path) -> None:
    """A state written by an older midbench lacks the fields added since: the run resumes when they are at their
    defaults, and is refused when one is not (its value would change the run)."""
    base = ["train", "--arch", "test-mlp", "--epochs", "1", "--n-train", "64", "--val-size", "8", "--device", "cpu",
            "--quiet", "--out", str(tmp_path)]
    assert RUNNER.invoke(app, base).exit_code == 0
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    older = {key: value for key, value in json.loads(state["fingerprint"]).items()
             if key not in ("registry_dirs", "method_options")}
    state["fingerprint"] = json.dumps(older, sort_keys=True)
    torch.save(state, tmp_path / "state.pt")
    refused = RUNNER.invoke(app, [*base[:4], "2", *base[5:], "--resume", "--registry-dir", str(tmp_path)])
    assert refused.exit_code == 2 and "different configuration" in refused.output
    resumed = RUNNER.invoke(app, [*base[:4], "2", *base[5:], "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert load_checkpoint(tmp_path / "model.safetensors").metadata["epoch"] == 2


def test_channels_last_trains_the_same_model_up_to_float_rounding(tmp_path: Path) -> None:
    """``--channels-last`` changes the memory layout, not the arithmetic: only the order of the convolutions'
    float32 sums may differ (relative rounding ~1e-7 per operation), so after a few SGD steps the weights agree to
    far below any training signal, and the checkpoint is saved in the usual contiguous layout. (SGD, not Adam:
    Adam divides by the gradient's running RMS, which blows a rounding difference in a near-zero gradient up to
    a full step of size lr. Standard training, not an adversarial method: a PGD step takes the sign of the input
    gradient, which turns a rounding difference in a near-zero component into a different adversarial pixel.)"""
    base = ["train", "--method", "standard", "--arch", "lenet", "--epochs", "1", "--n-train", "96", "--batch-size",
            "32", "--optimizer", "sgd", "--lr", "0.05", "--val-size", "8", "--device", "cpu", "--quiet"]
    for folder, extra in (("nchw", []), ("nhwc", ["--channels-last"])):
        outcome = RUNNER.invoke(app, [*base, "--out", str(tmp_path / folder), *extra])
        assert outcome.exit_code == 0, outcome.output
    nchw, nhwc = (load_checkpoint(tmp_path / folder / "model.safetensors") for folder in ("nchw", "nhwc"))
    assert nhwc.metadata["config"]["channels_last"] is True
    for name, tensor in nchw.state_dict.items():
        assert nhwc.state_dict[name].is_contiguous()
        torch.testing.assert_close(nhwc.state_dict[name], tensor, rtol=1e-4, atol=1e-6)


def test_channels_last_reaches_the_convolutions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``channels_last`` the convolutions see NHWC weights and NHWC batches (so cuDNN can pick its tensor-core
    kernels); without it, NCHW."""
    import midbench.training.loop as loop
    from midbench.training import train

    seen: list[tuple[bool, bool]] = []

    def recording_build_model(*args: object, **kwargs: object) -> torch.nn.Module:
        model = build_model(*args, **kwargs)
        # the last convolution: the first one's single input channel makes both layouts the same strides
        conv = [module for module in model.modules() if isinstance(module, torch.nn.Conv2d)][-1]
        conv.register_forward_pre_hook(lambda module, inputs: seen.append((
            module.weight.is_contiguous(memory_format=torch.channels_last),
            inputs[0].is_contiguous(memory_format=torch.channels_last))))
        return model

    monkeypatch.setattr(loop, "build_model", recording_build_model)
    for channels_last in (False, True):
        seen.clear()
        config = TrainConfig(arch="lenet", epochs=1, n_train=64, batch_size=32, val_size=0, device="cpu",
                             channels_last=channels_last)
        train(config, tmp_path / str(channels_last), progress=False)
        assert seen and all(layout == (channels_last, channels_last) for layout in seen), (channels_last, seen[:3])
