"""The adversarial-training baselines (trades, mart, fast-at, msd/avg/max): training, recorded attacks, losses
against hand computations, exact pass counts, the cyclic schedule and the catastrophic-overfitting stop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from midbench.artifacts.checkpoint import load_checkpoint, save_checkpoint
from midbench.attacks.norms import Norm, distance
from midbench.attacks.specs import ResolvedAttack, load_registry
from midbench.cli.app import app
from midbench.config import TrainConfig
from midbench.data import get_dataset
from midbench.defenses import METHODS, DefenseTask, build_task
from midbench.defenses.fast_at import catastrophic_overfitting
from midbench.defenses.multi_perturbation import NormStep, msd_examples
from midbench.errors import UsageError
from midbench.evaluation.counting import PassCounter
from midbench.evaluation.selection import split_of
from midbench.models import build_model
from midbench.training import loop
from midbench.training.loop import build_scheduler, cyclic_factor, train

MNIST = get_dataset("mnist5k")
STAGED = {"mid", "mid-teacher"}  # need source/teacher stages; tested in test_mid.py
BASELINES = [name for name in METHODS.names() if name not in STAGED]
#: methods whose attack takes --attack-steps (fast-at takes exactly one FGSM step and refuses the option)
NO_STEPS = {"fast-at"}


def _config(method: str, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {"method": method, "arch": "test-mlp", "epochs": 1, "n_train": 128, "batch_size": 32,
                              "attack_steps": None if method in NO_STEPS else 2, "val_size": 16,
                              "val_pgd_steps": 2, "device": "cpu", **overrides}
    return TrainConfig.of(**values)


# ------------------------------------------------------------------------------------------ training


@pytest.mark.parametrize("method", BASELINES)
def test_each_method_trains_an_epoch_and_records_its_training_attacks(method: str, tmp_path: Path) -> None:
    result = train(_config(method), tmp_path / method, progress=False)
    metadata = load_checkpoint(result.checkpoint).metadata
    assert metadata["method"] == method and metadata["epoch"] == 1
    assert metadata["method_citation"]
    attacks = [ResolvedAttack.from_dict(item) for item in metadata["train_attacks"]]
    if method == "standard":
        assert attacks == []
    else:
        assert attacks, f"{method} must record its training attacks"
        for attack in attacks:  # evaluation (--known-attacks) rebuilds them from the checkpoint
            assert attack.build() is not None
    assert (tmp_path / method / "best.safetensors").exists()
    assert [record["epoch"] for record in result.log] == [1]


def test_recorded_attacks_tell_known_from_unknown() -> None:
    registry = load_registry()
    pgd_linf = registry.get("pgd-linf").resolve(MNIST.eps)
    fgsm_linf = registry.get("fgsm-linf").resolve(MNIST.eps)
    trades = build_task(TrainConfig.of(method="trades"), MNIST).train_attacks
    assert [(a.id, a.version, a.family, a.norm, a.eps) for a in trades] == [("trades-kl-linf", 0, "linf", Norm.LINF,
                                                                             0.3)]
    assert trades[0].implementation == "midbench.attacks.kl:TradesKL"
    assert trades[0].params == {"steps": 40, "step_size": pytest.approx(0.01), "init_std": 0.001}
    assert split_of(pgd_linf, trades) == "unknown"  # a different loss and start: not the same attack
    assert split_of(pgd_linf, build_task(TrainConfig.of(method="mart"), MNIST).train_attacks) == "known"
    fast = build_task(TrainConfig.of(method="fast-at"), MNIST).train_attacks
    assert fast[0].params == {"steps": 1, "step_size": pytest.approx(0.375), "random_start": True}
    assert split_of(pgd_linf, fast) == split_of(fgsm_linf, fast) == "unknown"
    for method in ("msd", "avg", "max"):
        union = build_task(TrainConfig.of(method=method), MNIST).train_attacks
        assert [(a.key, a.eps) for a in union] == [("pgd-linf@1", 0.3), ("pgd-l2@1", 2.0), ("pgd-l1@1", 10.0)]
        assert all(split_of(registry.get(a.id).resolve(MNIST.eps), union) == "known" for a in union)


def test_trades_attack_stays_in_the_ball_and_raises_the_kl(small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    from midbench.attacks.kl import kl_from_clean

    x, y = small_batch[0][:16], small_batch[1][:16]
    torch.manual_seed(0)
    model = build_model("test-cnn", 10, (1, 28, 28)).eval()
    attack = build_task(TrainConfig.of(method="trades", attack_steps=5), MNIST).attack
    x_adv = attack(model, x, y)
    assert float(distance(x_adv - x, Norm.LINF).max()) <= 0.3 + 1e-6
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        start = (x + 0.001 * torch.randn_like(x)).clamp(0, 1)
        assert kl_from_clean(model(x), model(x_adv)).mean() > kl_from_clean(model(x), model(start)).mean()


# ------------------------------------------------------------------------------------------ losses by hand


def _linear_model() -> nn.Module:
    """A fixed 4-input, 3-class linear classifier in float64."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([[1.5, -2.0, 0.5, 1.0], [-1.0, 0.5, 2.0, -0.5], [0.25, 1.0, -1.5, 2.0]]))
        model[1].bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return model


def _tiny_batch() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """4 examples (1×2×2 images), their labels, and three sets of given 'adversarial' examples."""
    x = torch.linspace(0.05, 0.95, 16, dtype=torch.float64).view(4, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 1])
    shifts = [torch.tensor([0.2, -0.1, 0.15, -0.2]), torch.tensor([-0.3, 0.25, 0.0, 0.1]),
              torch.tensor([0.05, 0.05, -0.25, 0.3])]
    x_adv = [(x + shift.to(torch.float64).view(1, 1, 2, 2)).clamp(0, 1) for shift in shifts]
    return x, y, x_adv


def _probabilities(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """softmax by hand: W x + b, exponentiated and normalised."""
    linear = model[1]
    logits = x.flatten(1) @ linear.weight.detach().T + linear.bias.detach()
    exp = torch.exp(logits)
    return exp / exp.sum(dim=1, keepdim=True)


def _hand_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return torch.stack([sum(p[i, k] * torch.log(p[i, k] / q[i, k]) for k in range(p.shape[1]))
                        for i in range(p.shape[0])])


def test_trades_loss_matches_the_formula() -> None:
    model, (x, y, x_adv) = _linear_model(), _tiny_batch()
    p, q = _probabilities(model, x), _probabilities(model, x_adv[0])
    natural = -torch.stack([torch.log(p[i, y[i]]) for i in range(4)]).mean()
    expected = natural + 6.0 * _hand_kl(p, q).mean()
    task = build_task(TrainConfig.of(method="trades"), MNIST)
    outputs = task.adversarial_loss(model, x, y, x_adv[0])
    assert task.beta == 6.0
    assert torch.allclose(outputs["loss"], expected, atol=1e-6, rtol=0)
    assert torch.allclose(outputs["natural"], natural, atol=1e-6, rtol=0)


def test_mart_loss_matches_the_formula() -> None:
    model, (x, y, x_adv) = _linear_model(), _tiny_batch()
    p, q = _probabilities(model, x), _probabilities(model, x_adv[0])
    boosted, weighted = [], []
    kl = _hand_kl(p, q)
    for i in range(4):
        largest_wrong = max(q[i, k] for k in range(3) if k != int(y[i]))
        boosted.append(-torch.log(q[i, y[i]]) - torch.log(1 - largest_wrong))
        weighted.append(kl[i] * (1 - p[i, y[i]]))
    expected = torch.stack(boosted).mean() + 6.0 * torch.stack(weighted).mean()
    outputs = build_task(TrainConfig.of(method="mart"), MNIST).adversarial_loss(model, x, y, x_adv[0])
    assert torch.allclose(outputs["loss"], expected, atol=1e-6, rtol=0)


def _hand_ce(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    p = _probabilities(model, x)
    return -torch.stack([torch.log(p[i, y[i]]) for i in range(x.shape[0])])


def test_avg_max_and_msd_losses_match_the_formulas() -> None:
    model, (x, y, x_adv) = _linear_model(), _tiny_batch()
    losses = torch.stack([_hand_ce(model, examples, y) for examples in x_adv])  # (threat, example)
    avg = build_task(TrainConfig.of(method="avg"), MNIST).adversarial_loss(model, x, y, x_adv)
    assert torch.allclose(avg["loss"], losses.mean(), atol=1e-6, rtol=0)
    worst = build_task(TrainConfig.of(method="max"), MNIST).adversarial_loss(model, x, y, x_adv)
    assert torch.allclose(worst["loss"], losses.max(dim=0).values.mean(), atol=1e-6, rtol=0)
    assert len(set(losses.argmax(dim=0).tolist())) > 1, "the batch should exercise more than one worst threat"
    msd = build_task(TrainConfig.of(method="msd"), MNIST).adversarial_loss(model, x, y, x_adv[1])
    assert torch.allclose(msd["loss"], losses[1].mean(), atol=1e-6, rtol=0)


def test_one_msd_step_keeps_the_highest_loss_candidate() -> None:
    model, (x, y, _) = _linear_model(), _tiny_batch()
    steps = [NormStep(Norm.LINF, 0.1, 0.05), NormStep(Norm.L2, 0.5, 0.3)]
    # ∂CE/∂x of a linear model: Wᵀ(p − onehot(y)), per example
    gradient = (_probabilities(model, x) - nn.functional.one_hot(y, 3)) @ model[1].weight.detach()
    linf = (x.flatten(1) + 0.05 * gradient.sign()).clamp(0, 1)
    l2 = (x.flatten(1) + 0.3 * gradient / gradient.norm(dim=1, keepdim=True)).clamp(0, 1)
    candidates = torch.stack([linf.view_as(x), l2.view_as(x)])
    losses = torch.stack([_hand_ce(model, candidate, y) for candidate in candidates])
    expected = candidates[losses.argmax(dim=0), torch.arange(4)]
    assert torch.allclose(msd_examples(model, x, y, steps, iterations=1), expected, atol=1e-12, rtol=0)


def test_msd_examples_lie_in_the_union_of_the_balls(small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch[0][:16], small_batch[1][:16]
    torch.manual_seed(0)
    model = build_model("test-cnn", 10, (1, 28, 28)).eval()
    task = build_task(TrainConfig.of(method="msd", attack_steps=4), MNIST)
    x_adv = msd_examples(model, x, y, task.steps, task.iterations)
    inside = torch.zeros(16, dtype=torch.bool)
    for attack in task.train_attacks:
        assert attack.norm is not None
        inside |= distance(x_adv - x, attack.norm) <= attack.eps * (1 + 1e-6)
    assert bool(inside.all()) and 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    assert model.training is False and all(p.requires_grad for p in model.parameters())


# ------------------------------------------------------------------------------------------ pass counts


def _count(method: str, steps: int | None, **overrides: Any) -> tuple[float, float]:
    """Forward and backward passes per example of one training step (``task.loss`` and its backward)."""
    task = build_task(TrainConfig.of(method=method, attack_steps=steps, device="cpu", **overrides), MNIST)
    model = PassCounter(build_model("test-mlp", 10, (1, 28, 28)))
    model.train()
    torch.manual_seed(0)
    x, y = torch.rand(12, 1, 28, 28), torch.randint(0, 10, (12,))
    task.loss(model, x, y)["loss"].backward()
    return model.forward_passes / 12, model.backward_passes / 12


@pytest.mark.parametrize("steps", [1, 3])
def test_trades_costs_k_plus_3_forwards_and_k_plus_2_backwards(steps: int) -> None:
    """Attack: 1 forward for the clean prediction the KL is measured from (no gradient) and K forward+backward
    steps on the KL. Update: a forward of x and one of x' (separate, so batch-norm statistics stay per batch)
    and the backward through both outputs. Forwards 1 + K + 2 = K + 3; backwards K + 2."""
    assert _count("trades", steps) == (steps + 3, steps + 2)


@pytest.mark.parametrize("steps", [1, 3])
def test_mart_costs_k_plus_2_each(steps: int) -> None:
    """Attack: K forward+backward PGD steps. Update: forwards of x and x', backward through both: K + 2 each."""
    assert _count("mart", steps) == (steps + 2, steps + 2)


def test_fast_at_costs_exactly_2_forwards_and_2_backwards() -> None:
    """One FGSM step from the random start (1 + 1), then the update on its example (1 + 1); N-FGSM alike."""
    assert _count("fast-at", None) == (2, 2)
    assert _count("fast-at", None, fast_at_noise=2.0) == (2, 2)


def test_n_fgsm_is_recorded_with_its_whole_reach_and_moves_as_the_paper_says(
        small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """--fast-at-noise K: noise K·ε, step ε, ε of the recorded attack (K + 1)·ε so the contract does not project
    (de Jorge et al. 2022). Every pixel moves by at most noise + step, and with no noise N-FGSM is FGSM with ε =
    its step (the same gradient at x, the same signed step)."""
    from midbench.attacks.gradient import FGSM, NoisyFGSM

    (attack,) = build_task(TrainConfig.of(method="fast-at", fast_at_noise=2.0), MNIST).train_attacks
    assert (attack.id, attack.version, attack.implementation) == ("n-fgsm-linf", 0,
                                                                  "midbench.attacks.gradient:NoisyFGSM")
    assert attack.eps == pytest.approx(0.9) and attack.params == {"noise": pytest.approx(0.6),
                                                                  "step_size": pytest.approx(0.3)}
    assert split_of(load_registry().get("fgsm-linf").resolve(MNIST.eps), [attack]) == "unknown"
    x, y = small_batch[0][:16], small_batch[1][:16]
    torch.manual_seed(0)
    model = build_model("test-cnn", 10, (1, 28, 28)).eval()
    torch.manual_seed(1)
    x_adv = attack.build()(model, x, y)
    moved = (x_adv - x).abs()
    assert float(moved.max()) <= 0.9 + 1e-6 and float(moved.max()) > 0.3  # beyond ε: no projection onto it
    assert 0.0 <= float(x_adv.min()) and float(x_adv.max()) <= 1.0
    plain = NoisyFGSM(0.1, Norm.LINF, noise=0.0, step_size=0.1)(model, x, y)
    assert torch.equal(plain, FGSM(0.1, Norm.LINF)(model, x, y))
    with pytest.raises(UsageError, match="beyond its ε"):
        NoisyFGSM(0.3, Norm.LINF, noise=0.6, step_size=0.3)


@pytest.mark.parametrize("steps", [1, 3])
def test_union_methods_cost_what_their_algorithms_say(steps: int) -> None:
    """T = 3 threat models (pgd-linf, pgd-l2, pgd-l1), each of K steps with --attack-steps K.

    - avg: T attacks of K forward+backward, then a forward and backward per threat: T(K + 1) each;
    - max: the T attacks (TK each), T gradient-free forwards to find every example's worst threat, one forward and
      backward on the worst examples: TK + T + 1 forwards, TK + 1 backwards;
    - msd: per step one forward+backward for the gradient and T gradient-free forwards scoring the candidates,
      then the update: K(T + 1) + 1 forwards, K + 1 backwards.
    """
    threats = 3
    assert _count("avg", steps) == (threats * (steps + 1), threats * (steps + 1))
    assert _count("max", steps) == (threats * steps + threats + 1, threats * steps + 1)
    assert _count("msd", steps) == (steps * (threats + 1) + 1, steps + 1)


def test_msd_takes_the_largest_step_count_of_its_threat_models() -> None:
    assert build_task(TrainConfig.of(method="msd"), MNIST).iterations == 100  # pgd-l1's (pgd-linf, pgd-l2: 40)
    assert build_task(TrainConfig.of(method="msd", threat_models="pgd-linf,pgd-l2"), MNIST).iterations == 40
    assert build_task(TrainConfig.of(method="msd", attack_steps=7), MNIST).iterations == 7


# ------------------------------------------------------------------------------------------ ε warm-up

#: every adversarial baseline, with its options; the unions train on L∞ only so that one number bounds the move
WARMUP_CASES = [(name, {"threat_models": "pgd-linf"} if name in {"msd", "avg", "max"} else {})
                for name in BASELINES if name != "standard"] + [("fast-at", {"fast_at_noise": 2.0})]


class _LargestMove(nn.Module):
    """The model, recording how far (L∞) any input of the batch's shape lies from the clean batch ``x``."""

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        super().__init__()
        self.model, self.x, self.largest = model, x, 0.0

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.shape == self.x.shape:
            self.largest = max(self.largest, float((inputs.detach() - self.x).abs().max()))
        return self.model(inputs)


def test_eps_warmup_ramps_linearly_to_the_full_budget() -> None:
    config = TrainConfig.of(method="pgd-at", epochs=6, eps_warmup=4)
    assert [config.attack_scale(epoch) for epoch in range(1, 7)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert TrainConfig.of(method="pgd-at").attack_scale(1) == 1.0


@pytest.mark.parametrize(("method", "options"), WARMUP_CASES, ids=lambda value: str(value))
def test_eps_warmup_trains_within_the_scaled_budget_and_records_the_full_one(
        method: str, options: dict[str, Any], small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """In epoch 1 of a 4-epoch warm-up every input the method's loss feeds the model lies within a quarter of
    the full reach (N-FGSM's reach is its recorded ε, 3ε); at full budget the attack goes beyond that quarter,
    so the bound is the warm-up's doing. The recorded training attacks stay the full ones."""
    config = _config(method, epochs=4, eps_warmup=4, **options)
    task = build_task(config, MNIST)
    full = task.train_attacks
    reach = max(attack.eps for attack in full)
    x, y = small_batch[0][:16], small_batch[1][:16]
    moved = {}
    for epoch in (1, 4):
        task.scale_attacks(config.attack_scale(epoch))
        torch.manual_seed(0)
        model = _LargestMove(build_model("test-mlp", 10, (1, 28, 28)), x)
        task.loss(model, x, y)
        moved[epoch] = model.largest
        assert task.train_attacks == full
    assert 0.0 < moved[1] <= 0.25 * reach + 1e-6
    assert moved[4] > 0.25 * reach + 1e-6


@pytest.mark.parametrize("method", ["standard", "mid"])
def test_eps_warmup_is_refused_by_methods_without_a_training_attack_to_ramp(method: str, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--eps-warmup does not apply"):
        train(TrainConfig.of(method=method, epochs=2, eps_warmup=1, device="cpu", n_train=32), tmp_path / "run",
              progress=False)
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_eps_warmup_resumes_exactly(tmp_path: Path) -> None:
    """The warm-up's budget depends on the epoch only, so a run stopped in the warm-up and resumed equals one
    trained straight through."""
    config = _config("pgd-at", epochs=3, eps_warmup=3)
    straight = train(config, tmp_path / "straight", progress=False)

    def stop_in_epoch_2(epoch: int, *_: Any) -> None:
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, tmp_path / "stopped", progress=False, on_batch=stop_in_epoch_2)
    resumed = train(config, tmp_path / "stopped", resume=True, progress=False)
    assert [record["loss"] for record in resumed.log] == [record["loss"] for record in straight.log]
    first, second = load_checkpoint(straight.checkpoint), load_checkpoint(resumed.checkpoint)
    assert all(torch.equal(first.state_dict[name], second.state_dict[name]) for name in first.state_dict)


# ------------------------------------------------------------------------------------------ configuration


@pytest.mark.parametrize(("overrides", "message"), [
    ({"method": "trades", "beta": -1.0}, "--beta"),
    ({"method": "mart", "beta": float("nan")}, "--beta"),
    ({"method": "fast-at", "overfit_drop": 0.0}, "--overfit-drop"),
    ({"method": "fast-at", "fast_at_step": 0.0}, "--fast-at-step"),
    ({"method": "fast-at", "fast_at_noise": -1.0}, "--fast-at-noise"),
    ({"method": "msd", "threat_models": " , "}, "--threat-models"),
    ({"method": "pgd-at", "beta": 6.0}, "method pgd-at has no option 'beta'"),
    ({"method": "trades", "bta": 6.0}, "did you mean beta"),
    ({"method": "trades", "beta": "6"}, "--beta must be a number"),
    ({"schedule": "triangle"}, "cyclic"),
    ({"method": "pgd-at", "epochs": 3, "eps_warmup": 4}, "--eps-warmup must be between 0 and --epochs"),
    ({"method": "pgd-at", "eps_warmup": -1}, "--eps-warmup"),
])
def test_bad_baseline_options_are_refused(overrides: dict[str, Any], message: str) -> None:
    """Each method checks its own options when the run is built (the shared keys when the config is)."""
    with pytest.raises(UsageError, match=message):
        build_task(TrainConfig.of(**overrides).validate(), MNIST)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"method": "fast-at", "attack_steps": 2}, "one FGSM step"),
    ({"method": "fast-at", "fast_at_noise": 2.0, "train_attack": "pgd-l2"}, "L∞ only"),
    ({"method": "msd", "eps": 0.1}, "different norms"),
    ({"method": "avg", "threat_models": "pgd-linf,pgd-linf"}, "twice"),
    ({"method": "msd", "threat_models": "pgd-linf,mim-linf"}, "PGD or SLIDE"),
    ({"method": "avg", "threat_models": "pgd-linf,pgd-lnf"}, "Did you mean"),
    ({"method": "trades", "train_attack": "pgd-l1"}, "L∞ or L2"),
])
def test_inapplicable_method_settings_are_refused(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_task(TrainConfig.of(**overrides), MNIST)


def test_baseline_options_reach_the_checkpoint(tmp_path: Path) -> None:
    common = ["--arch", "test-mlp", "--epochs", "1", "--n-train", "32", "--batch-size", "32", "--val-size", "4",
              "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, ["train", "--method", "trades", "--beta", "2.5", "--attack-steps", "1", *common,
                                      "--out", str(tmp_path / "trades")])
    assert result.exit_code == 0, result.output
    metadata = load_checkpoint(tmp_path / "trades" / "model.safetensors").metadata
    assert metadata["method_params"]["beta"] == 2.5 and metadata["config"]["beta"] == 2.5
    result = CliRunner().invoke(app, ["train", "--method", "avg", "--threat-models", "pgd-linf,pgd-l2",
                                      "--attack-steps", "1", *common, "--out", str(tmp_path / "avg")])
    assert result.exit_code == 0, result.output
    metadata = load_checkpoint(tmp_path / "avg" / "model.safetensors").metadata
    assert [a["id"] for a in metadata["train_attacks"]] == ["pgd-linf", "pgd-l2"]
    result = CliRunner().invoke(app, ["train", "--method", "fast-at", "--fast-at-step", "0.2", "--overfit-drop",
                                      "0.3", "--schedule", "cyclic", *common, "--out", str(tmp_path / "fast")])
    assert result.exit_code == 0, result.output
    metadata = load_checkpoint(tmp_path / "fast" / "model.safetensors").metadata
    assert metadata["train_attacks"][0]["params"]["step_size"] == 0.2 and metadata["config"]["overfit_drop"] == 0.3


# ------------------------------------------------------------------------------------------ cyclic schedule


def test_cyclic_schedule_peaks_at_the_middle_and_ends_at_zero() -> None:
    parameter = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=0.2)
    scheduler = build_scheduler(TrainConfig(schedule="cyclic", epochs=4, lr=0.2), optimizer, steps_per_epoch=5)
    rates = []
    for _ in range(20):
        rates.append(optimizer.param_groups[0]["lr"])  # the rate this optimiser step uses
        optimizer.step()
        scheduler.step()
    assert max(range(20), key=rates.__getitem__) == 9 and rates[9] == pytest.approx(0.2)  # step 10 of 20
    assert all(a < b for a, b in zip(rates[:10], rates[1:10], strict=False))
    assert all(a > b for a, b in zip(rates[9:], rates[10:], strict=False))
    assert rates[0] == pytest.approx(0.02) and rates[-1] == 0.0
    assert optimizer.param_groups[0]["lr"] == 0.0  # after training
    assert cyclic_factor(4, 10) == 1.0 and cyclic_factor(9, 10) == 0.0
    assert "epochs" in TrainConfig(schedule="cyclic").fingerprint()  # the schedule depends on the epoch count


# ------------------------------------------------------------------------------------------ early stop


def _log(*pgd: float, key: str = "val_pgd10_acc") -> list[dict[str, Any]]:
    return [{"epoch": epoch, key: value} for epoch, value in enumerate(pgd, start=1)]


def test_catastrophic_overfitting_hook() -> None:
    task = build_task(TrainConfig.of(method="fast-at"), MNIST)
    assert task.should_stop(_log(0.5)) is None
    assert task.should_stop(_log(0.5, 0.7, 0.55)) is None  # 15 points below the best
    assert task.should_stop(_log(0.5, 0.7, 0.5)) is None  # exactly 20 points: not more than 20
    reason = task.should_stop(_log(0.5, 0.7, 0.45))
    assert reason is not None and reason.startswith("catastrophic overfitting") and "epoch 2" in reason
    assert task.should_stop(_log(0.5, 0.7, 0.45, key="val_pgd3_acc")) is None  # another metric: no signal
    assert task.should_stop([{"epoch": 1}]) is None  # no held-out slice
    assert catastrophic_overfitting(_log(0.9, 0.6), "val_pgd10_acc", 0.25) is not None
    assert DefenseTask(TrainConfig(), MNIST).should_stop(_log(0.9, 0.0)) is None  # the default never stops


def _same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[name], b[name]) for name in a)


def test_fast_at_stops_on_catastrophic_overfitting_and_keeps_the_best_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held-out PGD accuracy 0.5, 0.7, 0.45 (a 25-point fall), 0.9: training stops after epoch 3 and
    ``model.safetensors`` holds epoch 2's weights; ``--resume`` trains no further and repairs an unfinished stop."""
    scripted = iter([0.5, 0.7, 0.45, 0.9])
    snapshots: list[dict[str, torch.Tensor]] = []

    def fake_evaluate(model: nn.Module, data: Any, dataset: Any, steps: int, device: Any, **_: Any
                      ) -> dict[str, float]:
        snapshots.append({name: tensor.detach().clone() for name, tensor in model.state_dict().items()})
        return {"val_clean_acc": 1.0, f"val_pgd{steps}_acc": next(scripted)}

    monkeypatch.setattr(loop, "evaluate_slice", fake_evaluate)
    config = _config("fast-at", arch="test-mlp", epochs=4, n_train=64, val_size=8, schedule="cyclic")
    out = tmp_path / "run"
    result = train(config, out, progress=False)

    assert [record["epoch"] for record in result.log] == [1, 2, 3]
    stopped = result.log[-1]["stopped_early"]
    assert stopped["epoch"] == 3 and stopped["best_epoch"] == 2 and "catastrophic overfitting" in stopped["reason"]
    logged = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert logged[-1]["stopped_early"] == stopped
    kept = load_checkpoint(out / "model.safetensors")
    assert kept.metadata["stopped_early"] == stopped and kept.metadata["epoch"] == 2
    assert _same_weights(kept.state_dict, snapshots[1])
    assert not _same_weights(kept.state_dict, snapshots[2])
    assert _same_weights(load_checkpoint(out / "best.safetensors").state_dict, snapshots[1])

    again = train(config, out, resume=True, progress=False)  # a stopped run stays stopped
    assert len(again.log) == 3 and len(snapshots) == 3
    assert _same_weights(load_checkpoint(out / "model.safetensors").state_dict, snapshots[1])

    # a crash between the epoch's checkpoint and the replacement leaves epoch 3's model: resume finishes the stop
    save_checkpoint(out / "model.safetensors", snapshots[2], {"epoch": 3})
    train(config, out, resume=True, progress=False)
    repaired = load_checkpoint(out / "model.safetensors")
    assert _same_weights(repaired.state_dict, snapshots[1]) and repaired.metadata["stopped_early"] == stopped


def test_best_checkpoint_follows_the_best_held_out_pgd_accuracy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scripted = iter([0.3, 0.6, 0.5])
    monkeypatch.setattr(loop, "evaluate_slice", lambda model, data, dataset, steps, device, **_:
                        {f"val_pgd{steps}_acc": next(scripted)})
    train(_config("standard", arch="test-mlp", epochs=3, n_train=32, val_size=4), tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "best.safetensors").metadata["epoch"] == 2
    assert load_checkpoint(tmp_path / "model.safetensors").metadata["epoch"] == 3
    assert "stopped_early" not in load_checkpoint(tmp_path / "model.safetensors").metadata
