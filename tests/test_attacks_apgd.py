"""Native Auto-PGD (midbench.attacks.apgd, and l1-APGD in midbench.attacks.apgd_l1): the threat model, the exact
L1-and-box projection, per-example independence (what the nested unknown-attack profile needs), determinism, the
declared cost, strength against PGD, and one-line refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.apgd import APGD, checkpoints
from midbench.attacks.apgd_l1 import APGDL1, phases, project_l1_box
from midbench.attacks.base import Attack, frozen_eval_mode
from midbench.attacks.norms import Norm, distance
from midbench.attacks.specs import load_registry
from midbench.errors import UsageError
from midbench.evaluation.counting import PassCounter

REGISTRY = load_registry()
ALL_LOSSES = ("ce", "margin", "dlr", "dlr-targeted")


class _RowwiseMLP(nn.Module):
    """The trained test-mlp's function, computed with elementwise products and per-row sums only.

    torch's CPU matrix multiply takes other code paths for batches of one to three rows, which changes the last
    bit of logits and gradients; without it, the model gives every example the same numbers in any batch, so a
    difference between batch compositions can only come from the attack.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        first, second = classifier.net.layers[1], classifier.net.layers[3]
        self.normalize = classifier.normalize
        self.w1, self.b1 = nn.Parameter(first.weight.detach().clone()), nn.Parameter(first.bias.detach().clone())
        self.w2, self.b2 = nn.Parameter(second.weight.detach().clone()), nn.Parameter(second.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu((self.normalize(x).flatten(1)[:, None, :] * self.w1).sum(-1) + self.b1)
        return (hidden[:, None, :] * self.w2).sum(-1) + self.b2


class _Constant(nn.Module):
    """Logits that ignore the input (class 0 always wins): nobody is ever fooled, so every pass is taken."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("logits", torch.linspace(1.0, 0.0, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits + 0.0 * x.flatten(1).sum(1, keepdim=True)


@pytest.fixture(scope="module")
def rowwise_model(mlp_model: nn.Module) -> nn.Module:
    return _RowwiseMLP(mlp_model).eval()


def _apgd(eps: float, norm: Norm, **options: object) -> Attack:
    """APGD for L∞ and L2, l1-APGD for L1, with the same options."""
    return APGDL1(eps, norm, **options) if norm is Norm.L1 else APGD(eps, norm, **options)  # type: ignore[arg-type]


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_checkpoints_follow_the_paper() -> None:
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06); w_j = ⌈p_j·N⌉ below N."""
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(1) == [0]
    for steps in (2, 5, 17, 250):
        marks = checkpoints(steps)
        assert marks[0] == 0 and marks == sorted(set(marks)) and marks[-1] < steps


@pytest.mark.parametrize(("norm", "eps"), [(Norm.LINF, 0.1), (Norm.L2, 1.0), (Norm.L1, 5.0)])
def test_stays_in_the_ball_and_the_box(norm: Norm, eps: float, standard_model: nn.Module,
                                       small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The attack's own output (before the framework projects it) is already in the ε-ball and in [0, 1]."""
    x, y = small_batch[0][:16], small_batch[1][:16]
    attack = _apgd(eps, norm, steps=10, losses=ALL_LOSSES, n_targets=2)
    torch.manual_seed(0)
    with frozen_eval_mode(standard_model):
        raw = attack.run(standard_model, x, y)
    torch.manual_seed(0)
    x_adv = attack(standard_model, x, y)
    for points in (raw, x_adv):
        assert float(distance(points - x, norm).max()) <= eps * (1 + 1e-5)
        assert float(points.min()) >= 0.0 and float(points.max()) <= 1.0
    assert torch.equal(raw, x_adv), "an output inside the ball is returned as the attack made it"
    assert _accuracy(standard_model, x_adv, y) <= _accuracy(standard_model, x, y)


@pytest.mark.parametrize(("norm", "eps"), [(Norm.LINF, 0.05), (Norm.L2, 0.5), (Norm.L1, 2.0)])
def test_an_example_does_not_depend_on_its_batch(norm: Norm, eps: float, rowwise_model: nn.Module,
                                                 small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """With per-example generators, 12 examples attacked together, as 5 + 7, or in reverse order give
    bit-identical results: examples fooled early (or misclassified from the start) leave the batch without
    changing what the others go through."""
    x, y = small_batch[0][:12], small_batch[1][:12]
    seeds = [1000 + 7 * i for i in range(12)]
    attack = _apgd(eps, norm, steps=30, restarts=2, losses=ALL_LOSSES, n_targets=2)
    with randomness.per_example_generators(seeds):
        together = attack(rowwise_model, x, y)
    with randomness.per_example_generators(seeds[:5]):
        first = attack(rowwise_model, x[:5], y[:5])
    with randomness.per_example_generators(seeds[5:]):
        second = attack(rowwise_model, x[5:], y[5:])
    reverse = torch.arange(11, -1, -1)
    with randomness.per_example_generators([seeds[i] for i in reverse]):
        reversed_batch = attack(rowwise_model, x[reverse], y[reverse])
    assert torch.equal(together, torch.cat([first, second]))
    assert torch.equal(together[reverse], reversed_batch)
    # the case that matters: in the batch, some examples are fooled and leave while others are still attacked
    with torch.no_grad():
        clean_correct = rowwise_model(x).argmax(1) == y
        still_correct = rowwise_model(together).argmax(1) == y
    assert bool((clean_correct & ~still_correct).any()) and bool(still_correct.any()), \
        "the fixture no longer gives a batch with both fooled and surviving examples: change eps"


def test_the_same_seeds_give_the_same_examples(rowwise_model: nn.Module,
                                               small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch[0][:12], small_batch[1][:12]
    attack = APGD(0.05, Norm.LINF, steps=20)
    runs = []
    for seeds in (range(12), range(12), range(100, 112)):
        with randomness.per_example_generators(list(seeds)):
            runs.append(attack(rowwise_model, x, y))
    torch.manual_seed(3)
    global_rng = attack(rowwise_model, x, y)
    torch.manual_seed(3)
    assert torch.equal(attack(rowwise_model, x, y), global_rng), "the same global seed, the same examples"
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2]), "other seeds, other random starts"


def test_misclassified_inputs_are_returned_unattacked(small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A misclassified input is its own first misclassified point: one forward pass, no gradient."""
    x = small_batch[0][:8]
    counter = PassCounter(_Constant())  # predicts class 0, the labels say 1
    x_adv = APGD(0.3, Norm.LINF, steps=5)(counter, x, torch.ones(8, dtype=torch.long))
    assert torch.equal(x_adv, x)
    assert (counter.forward_passes, counter.backward_passes) == (8, 0)


@pytest.mark.parametrize("attack_id", ["apgd-linf", "apgd-l2", "apgd-l1"])
def test_declared_passes_are_reached_when_nobody_is_fooled(attack_id: str,
                                                           small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The registry's pass counts are upper bounds, taken exactly by a model that is never fooled."""
    spec = REGISTRY.get(attack_id)
    spec = replace(spec, params={**spec.params, "steps": 4, "restarts": 2, "n_targets": 2})
    x = small_batch[0][:3]
    counter = PassCounter(_Constant())
    spec.resolve({"Linf": 0.3, "L2": 2.0, "L1": 10.0}).build()(counter, x, torch.zeros(3, dtype=torch.long))
    declared = spec.passes_per_example()
    assert declared == {"forward": counter.forward_passes / 3, "backward": counter.backward_passes / 3}


@pytest.mark.parametrize(("apgd", "pgd", "eps"), [("apgd-linf", "pgd-linf", {"Linf": 0.1}),
                                                  ("apgd-l2", "pgd-l2", {"L2": 1.0}),
                                                  ("apgd-l1", "pgd-l1", {"L1": 3.0})])
def test_at_least_as_strong_as_pgd(apgd: str, pgd: str, eps: dict[str, float], standard_model: nn.Module,
                                   small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """At an ε where PGD leaves examples standing, the registry's APGD leaves no more on the same examples."""
    x, y = small_batch
    accuracies = {}
    for attack_id in (pgd, apgd):
        torch.manual_seed(0)
        accuracies[attack_id] = _accuracy(standard_model, REGISTRY.get(attack_id).resolve(eps).build()(
            standard_model, x, y), y)
    assert accuracies[apgd] <= accuracies[pgd] <= _accuracy(standard_model, x, y)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: APGD(10.0, Norm.L1), "for L1 use APGDL1"),
    (lambda: APGDL1(0.3, Norm.LINF), "APGD-L1 is an L1 attack"),
    (lambda: APGDL1(10.0, Norm.L1, steps=2), "steps must be at least 3"),
    (lambda: APGDL1(10.0, Norm.L1, losses="ce,hinge"), "hinge"),
    (lambda: APGD(0.3, Norm.LINF, losses=("ce", "xent")), "xent"),
    (lambda: APGD(0.3, Norm.LINF, losses="ce,dlr-untargeted"), "dlr-untargeted"),
    (lambda: APGD(0.3, Norm.LINF, losses=()), "loss"),
    (lambda: APGD(0.3, Norm.LINF, steps=0), "steps must be at least 1"),
    (lambda: APGD(0.3, Norm.LINF, n_targets=0), "n_targets must be at least 1"),
])
def test_bad_settings_are_refused_in_one_line(make, message: str) -> None:  # noqa: ANN001
    with pytest.raises(UsageError, match=message) as raised:
        make()
    assert "\n" not in str(raised.value)


def test_a_loss_needing_more_classes_is_refused(small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x = small_batch[0][:2]
    with pytest.raises(UsageError, match="dlr-targeted needs at least 4 classes"):
        APGD(0.3, Norm.LINF, steps=2)(_Constant(num_classes=3), x, torch.zeros(2, dtype=torch.long))


def test_a_registry_entry_with_a_bad_loss_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "mine.toml").write_text(
        '[[attack]]\nid = "my-apgd"\nversion = 1\nfamily = "linf"\nnorm = "Linf"\n'
        'implementation = "midbench.attacks.apgd:APGD"\ncitation = "x"\nparams = { losses = ["ce", "cw"] }\n')
    with pytest.raises(UsageError, match=r"mine.toml \[\[attack\]\] #1 \(my-apgd\).*'cw'") as raised:
        load_registry([tmp_path])
    assert "\n" not in str(raised.value)


# ---------------------------------------------------------------------------------------------- l1-APGD


def _bisection_projection(delta: torch.Tensor, clean: torch.Tensor, eps: float) -> torch.Tensor:
    """The same projection by bisection on the threshold λ (200 halvings, float64): slow but obviously right."""
    size, sign = delta.flatten(1).abs().double(), delta.flatten(1).sign().double()
    room = torch.where(delta > 0, 1 - clean, clean).flatten(1).double()
    low, high = torch.zeros(len(size), dtype=torch.float64), size.amax(dim=1)
    for _ in range(200):
        middle = (low + high) / 2
        over = (size - middle[:, None]).clamp_min(0).minimum(room).sum(dim=1) > eps
        low, high = torch.where(over, middle, low), torch.where(over, high, middle)
    return (sign * (size - high[:, None]).clamp_min(0).minimum(room)).view_as(delta)


@pytest.mark.parametrize("eps", [0.3, 4.0, 40.0, 1000.0])
def test_the_l1_box_projection_is_the_closest_feasible_point(eps: float) -> None:
    """Against bisection on the threshold: the same point to float precision, inside the ball and the box, and no
    farther from the input than the feasible point Duchi's projection followed by clipping gives."""
    from midbench.attacks.norms import project_l1

    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(16, 1, 8, 8, generator=generator)
    clean[clean < 0.4] = 0.0  # MNIST-like: many coordinates on the box's face
    delta = 3 * torch.randn(16, 1, 8, 8, generator=generator)
    projected = project_l1_box(delta, clean, eps)
    assert torch.allclose(projected.double(), _bisection_projection(delta, clean, eps), atol=1e-5)
    assert float(distance(projected, Norm.L1).max()) <= eps * (1 + 1e-6)
    assert float((clean + projected).min()) >= 0.0 and float((clean + projected).max()) <= 1.0
    clipped = (clean + project_l1(delta, eps)).clamp(0, 1) - clean
    assert bool(((delta - projected).flatten(1).norm(dim=1) <= (delta - clipped).flatten(1).norm(dim=1) + 1e-5).all())


def test_l1_phases_share_the_iterations_and_end_at_eps() -> None:
    for steps in (3, 10, 100, 101):
        plan = phases(steps, large_radii=True)
        assert [scale for scale, _ in plan] == [3.0, 2.0, 1.0]
        assert sum(length for _, length in plan) == steps and all(length >= 1 for _, length in plan)
    assert phases(7, large_radii=False) == [(1.0, 7)]
