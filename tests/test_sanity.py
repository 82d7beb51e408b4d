"""Sanity flags (midbench.evaluation.sanity): each check on the symptom it names, silence on honest inputs, the
Square comparison per example, the rise rule of the sweeps, and a docs entry for every code."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from midbench.attacks.norms import Norm
from midbench.attacks.specs import ResolvedAttack, load_registry
from midbench.data import load_split
from midbench.evaluation import sanity
from midbench.evaluation.attacking import AttackOutcome
from midbench.evaluation.engine import Evaluation

HERE = Path(__file__).parent
DOCS = HERE.parent / "docs" / "flags.md"


@pytest.fixture
def user_models(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(HERE))
    import user_models

    return user_models


def codes(flags: list[dict[str, str]]) -> list[str]:
    return [flag["code"] for flag in flags]


def test_every_code_has_a_docs_entry() -> None:
    documented = re.findall(r"^## `([a-z-]+)`$", DOCS.read_text(encoding="utf-8"), flags=re.M)
    assert sorted(documented) == sorted(sanity.CODES)


def test_unknown_code_is_a_bug() -> None:
    with pytest.raises(ValueError):
        sanity.make_flag("no-such-check", "message")


# ------------------------------------------------------------------------------------------------ output checks

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 3.0, -2.0]])
PROBABILITY_CASES = [
    ("logits", LOGITS, []),
    ("softmax", LOGITS.softmax(1), ["probability-outputs"]),
    ("one-hot", torch.eye(3)[:2], ["probability-outputs"]),
    ("log-softmax", LOGITS.log_softmax(1), []),  # log-probabilities are fine: CE on them equals CE on logits
    ("non-negative, rows sum to 2", 2 * LOGITS.softmax(1), []),
    ("empty", torch.zeros(0, 3), []),
]


@pytest.mark.parametrize(("outputs", "expected"), [case[1:] for case in PROBABILITY_CASES],
                         ids=[case[0] for case in PROBABILITY_CASES])
def test_probability_outputs(outputs: torch.Tensor, expected: list[str]) -> None:
    assert codes(sanity.probability_flags(outputs)) == expected


RANDOM_CASES = [
    ("identical", [LOGITS, LOGITS.clone(), LOGITS.clone()], []),
    ("float noise", [LOGITS, LOGITS + 1e-7], []),
    ("different", [LOGITS, LOGITS + 0.05], ["random-outputs"]),
    ("one forward", [LOGITS], []),
]


@pytest.mark.parametrize(("outputs", "expected"), [case[1:] for case in RANDOM_CASES],
                         ids=[case[0] for case in RANDOM_CASES])
def test_random_outputs(outputs: list[torch.Tensor], expected: list[str]) -> None:
    assert codes(sanity.random_flags(outputs)) == expected


def test_zero_gradients_reports_the_share_of_examples() -> None:
    gradients = torch.randn(4, 1, 3, 3)
    gradients[1] = 0
    flags = sanity.zero_gradient_flags(gradients)
    assert codes(flags) == ["zero-gradients"] and "1 of 4" in flags[0]["message"]
    assert sanity.zero_gradient_flags(torch.randn(4, 1, 3, 3)) == []


# ------------------------------------------------------------------------------------------------ model probes

PROBE_CASES = [
    ("HonestCNN", []),
    ("QuantisedCNN", ["zero-gradients"]),
    ("DetachedCNN", ["zero-gradients"]),
    ("SoftmaxCNN", ["probability-outputs"]),
    ("NoisyCNN", ["random-outputs"]),
    ("PurifyingCNN", ["autograd-in-forward"]),
]


@pytest.mark.parametrize(("model_class", "expected"), PROBE_CASES, ids=[case[0] for case in PROBE_CASES])
def test_probes_name_exactly_the_planted_symptom(model_class: str, expected: list[str], user_models: object,
                                                 small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.manual_seed(0)
    model = getattr(user_models, model_class)().eval()
    images, labels = small_batch
    flags, measured = sanity.probe_flags(model, images[:16], labels[:16])
    assert codes(flags) == expected
    assert measured["examples"] == 16
    assert measured["zero_gradient_fraction"] == (1.0 if "zero-gradients" in expected else 0.0)


def test_probes_leave_rng_mode_and_parameters_as_they_were(user_models: object,
                                                           small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Flags never change numbers: a random model's draws in the probes do not shift the caller's RNG."""
    model = user_models.NoisyCNN().train()
    state = torch.get_rng_state()
    sanity.probe_flags(model, *small_batch)
    assert torch.equal(torch.get_rng_state(), state)
    assert model.training and all(parameter.requires_grad for parameter in model.parameters())
    assert all(parameter.grad is None for parameter in model.parameters())


def test_autograd_recorder_sees_calls_however_grad_was_imported() -> None:
    from torch.autograd import grad as imported_grad

    recorder = sanity.AutogradCallRecorder()
    with recorder:
        z = torch.ones(3, requires_grad=True)
        imported_grad((z * z).sum(), z)
        (z * 2).sum().backward()
    assert recorder.calls == ["torch.autograd.grad", "Tensor.backward"]


def test_first_correct_falls_back_to_the_first_examples() -> None:
    assert sanity.first_correct(np.array([False, True, True, False, True]), 2).tolist() == [1, 2]
    assert sanity.first_correct(np.zeros(5, dtype=bool), 3).tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------------------- Square vs white-box

def attack(attack_id: str, implementation: str, eps: float = 0.3, norm: Norm = Norm.LINF,
           family: str = "linf") -> ResolvedAttack:
    return ResolvedAttack(attack_id, 1, family, norm, implementation, eps, None, {})


PGD = attack("pgd-linf", "midbench.attacks.gradient:PGD")
APGD = attack("apgd-ce-linf", "autoattack:apgd-ce")
SQUARE = attack("square-linf", "autoattack:square")
NOISE = attack("noise-uniform-linf", "midbench.attacks.noise:UniformNoise", family="noise")


def evaluation_of(columns: list[tuple[ResolvedAttack, list[int]]], protocol: str = "whitebox",
                  details: dict[str, float] | None = None) -> Evaluation:
    n = len(columns[0][1])
    outcomes = [AttackOutcome(spec, "unknown", np.array(robust, dtype=bool), 0.0, 0, 0) for spec, robust in columns]
    if details is not None:
        outcomes[-1].details["components"] = details
    return Evaluation(np.ones(n, dtype=bool), outcomes, protocol)


ROBUST = [1] * 8 + [0] * 2
SQUARE_CASES = [
    # Square breaks examples 0 and 1, which PGD left robust
    ("square beats pgd", [(PGD, ROBUST), (SQUARE, [0, 0] + ROBUST[2:])], "whitebox", ["square-beats-whitebox"]),
    # one example only: within the luck of a random search
    ("one example", [(PGD, ROBUST), (SQUARE, [0] + ROBUST[1:])], "whitebox", []),
    # per example: APGD already breaks 0 and 1, so Square finds nothing new though it beats PGD's accuracy
    ("covered by another white-box attack", [(PGD, ROBUST), (APGD, [0, 0] + ROBUST[2:]),
                                             (SQUARE, [0, 0] + ROBUST[2:])], "whitebox", []),
    ("white-box at a smaller eps", [(attack("pgd-linf", PGD.implementation, eps=0.1), ROBUST),
                                    (SQUARE, [0, 0] + ROBUST[2:])], "whitebox", []),
    ("other norm", [(attack("pgd-l2", PGD.implementation, eps=2.0, norm=Norm.L2, family="l2"), ROBUST),
                    (SQUARE, [0, 0] + ROBUST[2:])], "whitebox", []),
    ("noise is not white-box", [(NOISE, ROBUST), (SQUARE, [0, 0] + ROBUST[2:])], "whitebox", []),
    ("transfer", [(PGD, ROBUST), (SQUARE, [0, 0] + ROBUST[2:])], "transfer", []),
    ("square alone", [(SQUARE, ROBUST)], "whitebox", []),
]


@pytest.mark.parametrize(("columns", "protocol", "expected"), [case[1:] for case in SQUARE_CASES],
                         ids=[case[0] for case in SQUARE_CASES])
def test_square_beats_whitebox_per_example(columns: list, protocol: str, expected: list[str]) -> None:
    assert codes(sanity.square_flags(evaluation_of(columns, protocol))) == expected


AUTOATTACK = attack("autoattack-linf", "autoattack:standard", family="ensemble")


@pytest.mark.parametrize(("components", "expected"), [
    ({"apgd-ce": 0.6, "apgd-t": 0.5, "fab-t": 0.5, "square": 0.2}, ["square-beats-whitebox"]),
    ({"apgd-ce": 0.6, "apgd-t": 0.5, "fab-t": 0.5, "square": 0.5}, []),
    ({"apgd-ce": 0.6, "apgd-t": 0.5, "fab-t": 0.5, "square": 0.4}, []),  # one example of ten
], ids=["square drops 3 of 10", "no drop", "one example"])
def test_square_inside_autoattack(components: dict[str, float], expected: list[str]) -> None:
    evaluation = evaluation_of([(AUTOATTACK, [1] * 2 + [0] * 8)], details=components)
    assert codes(sanity.square_flags(evaluation)) == expected


# ------------------------------------------------------------------------------------------------ sweeps

RISE_CASES = [
    ("falling", [(0.1, 0.9), (0.2, 0.5), (0.3, 0.2)], 64, []),
    ("flat", [(0.1, 0.5), (0.2, 0.5)], 64, []),
    ("one example up", [(0.1, 0.5), (0.2, 0.5 + 1 / 64)], 64, []),
    ("three examples up", [(0.1, 0.5), (0.2, 0.5 + 3 / 64)], 64, ["accuracy-rises-with-eps"]),
    ("up at the end, against the first", [(0.1, 0.4), (0.2, 0.3), (0.3, 0.6)], 64, ["accuracy-rises-with-eps"]),
    ("five of 1000: under a point", [(0.1, 0.5), (0.2, 0.505)], 1000, []),
]


@pytest.mark.parametrize(("points", "n", "expected"), [case[1:] for case in RISE_CASES],
                         ids=[case[0] for case in RISE_CASES])
def test_rise_rule(points: list[tuple[float, float]], n: int, expected: list[str]) -> None:
    assert codes(sanity.rise_flags(points, n, "accuracy-rises-with-eps", "ε")) == expected


def test_sweeps_attack_the_documented_budgets(user_models: object) -> None:
    torch.manual_seed(0)
    model = user_models.HonestCNN().eval()
    data = load_split("mnist5k", "test").subset(torch.arange(4))
    base = load_registry().get(sanity.SWEEP_ATTACK)
    options = {"device": torch.device("cpu"), "seed": 0, "batch_size": 4}
    by_eps = sanity.eps_sweep(model, data, base, 0.2, **options)
    assert [eps for eps, _ in by_eps] == pytest.approx([0.05, 0.1, 0.2])
    by_steps = sanity.steps_sweep(model, data, base, 0.2, **options)
    assert [steps for steps, _ in by_steps] == [10, 40, 160]
    assert all(0.0 <= accuracy <= 1.0 for _, accuracy in by_eps + by_steps)


def test_flags_are_sorted_by_code_order() -> None:
    flags = [sanity.make_flag("square-beats-whitebox", "b"), sanity.make_flag("probability-outputs", "a")]
    assert codes(sanity.sort_flags(flags)) == ["probability-outputs", "square-beats-whitebox"]


def test_probe_of_a_model_with_no_parameters() -> None:
    """A parameter-free classifier (logits are pixel sums of ten bands) probes cleanly."""

    class Bands(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)[:, :780].reshape(x.shape[0], 10, 78).sum(2)

    images = torch.rand(6, 1, 28, 28)
    flags, measured = sanity.probe_flags(Bands(), images, torch.arange(6))
    assert flags == [] and measured["zero_gradient_fraction"] == 0.0


@pytest.mark.parametrize(("implementation", "gradients"), [
    ("midbench.attacks.gradient:PGD", True), ("autoattack:apgd-ce", True), ("autoattack:fab-t", True),
    ("autoattack:square", False), ("autoattack:standard", False), ("torchattacks:SPSA", False),
    ("torchattacks:JSMA", True), ("midbench.attacks.noise:GaussianNoise", False),
])
def test_gradient_use_is_an_attribute_of_the_implementation(implementation: str, gradients: bool) -> None:
    """The white-box comparison set of the Square check comes from the attack classes, not from a list of ids."""
    assert attack("a", implementation).uses_gradients is gradients
