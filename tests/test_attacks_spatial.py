"""Spatial attacks (midbench.attacks.spatial): stAdv flow fields and the rotation/translation grid.

Their threat models are not Lp balls, so the budget is checked on the transformation each attack reports
(``last_flow``, ``last_params``), and the images are checked to be that transformation of the input.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midbench.attacks.spatial import FlowField, RotationTranslation, flow_smoothness, flow_warp, rotate_translate
from midbench.attacks.specs import ResolvedAttack, accepted_parameters
from midbench.errors import UsageError


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# --- the transformations themselves -------------------------------------------------------------------------


def test_integer_flow_moves_pixels_exactly() -> None:
    """A flow of +1 column samples each pixel from its right neighbour (the last column repeats the border)."""
    x = torch.rand(2, 3, 6, 7)
    flow = torch.zeros(2, 2, 6, 7)
    flow[:, 0] = 1.0
    warped = flow_warp(x, flow)
    assert torch.allclose(warped[..., :-1], x[..., 1:], atol=1e-6)
    assert torch.allclose(warped[..., -1], x[..., -1], atol=1e-6)
    flow = torch.zeros(2, 2, 6, 7)
    flow[:, 1] = -2.0  # two rows up
    assert torch.allclose(flow_warp(x, flow)[..., 2:, :], x[..., :-2, :], atol=1e-6)


def test_flow_smoothness_counts_each_neighbour_pair_from_both_ends() -> None:
    flow = torch.zeros(1, 2, 3, 3)
    assert float(flow_smoothness(flow)) == pytest.approx(2 * 12 * 1e-4, rel=1e-3)  # 12 adjacent pairs, sqrt(1e-8)
    flow[0, 0, 1, 1] = 1.0  # one displaced pixel differs by 1 from its 4 neighbours
    assert float(flow_smoothness(flow)) == pytest.approx(2 * (4 * 1.0 + 8 * 1e-4), rel=1e-3)
    shifted = torch.ones(1, 2, 3, 3) * 0.7  # a uniform flow (a translation) is perfectly smooth
    assert float(flow_smoothness(shifted)) == pytest.approx(float(flow_smoothness(torch.zeros(1, 2, 3, 3))))


def test_rotation_and_translation_conventions() -> None:
    x = torch.rand(2, 1, 5, 5)
    none = torch.zeros(2)
    right_one = torch.tensor([[1.0, 0.0]] * 2)
    moved = rotate_translate(x, none, right_one)
    assert torch.allclose(moved[..., 1:], x[..., :-1], atol=1e-6)
    assert float(moved[..., 0].abs().max()) == 0.0, "uncovered pixels are black"
    down_two = torch.tensor([[0.0, 2.0]] * 2)
    assert torch.allclose(rotate_translate(x, none, down_two)[..., 2:, :], x[..., :-2, :], atol=1e-6)
    quarter = rotate_translate(x, torch.full((2,), 90.0), torch.zeros(2, 2))
    assert torch.allclose(quarter, torch.rot90(x, -1, dims=(-2, -1)), atol=1e-5), "+90° is clockwise as displayed"
    rectangle = torch.rand(1, 1, 4, 6)  # rotations stay rigid on non-square images
    assert torch.allclose(rotate_translate(rectangle, torch.tensor([180.0]), torch.zeros(1, 2)),
                          rectangle.flip(-1, -2), atol=1e-5)


# --- budgets, identity, grid ---------------------------------------------------------------------------------


def test_flow_never_exceeds_max_flow(standard_model: nn.Module,
                                     small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch[0][:8], small_batch[1][:8]
    # A step size well above the budget pushes flows against the bound, where a missing clamp would show.
    attack = FlowField(max_flow=0.3, steps=5, lr=0.2, tau=0.0)
    x_adv = attack(standard_model, x, y)
    assert attack.last_flow is not None and attack.last_flow.shape == (8, 2, 28, 28)
    assert float(attack.last_flow.abs().max()) <= 0.3 + 1e-6
    # The images are the reported flow applied to x (so the budget checked above is the one applied).
    assert torch.allclose(x_adv, flow_warp(x, attack.last_flow).clamp(0, 1), atol=1e-6)


def test_zero_budgets_are_the_identity(standard_model: nn.Module,
                                       small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch[0][:4], small_batch[1][:4]
    flow_attack = FlowField(max_flow=0.0, steps=2, lr=0.1)
    assert torch.allclose(flow_attack(standard_model, x, y), x, atol=1e-5)
    assert float(flow_attack.last_flow.abs().max()) == 0.0
    for angle_steps, shift_steps in ((1, 1), (2, 2)):
        grid_attack = RotationTranslation(max_angle=0.0, max_shift=0.0, angle_steps=angle_steps,
                                          shift_steps=shift_steps)
        assert torch.allclose(grid_attack(standard_model, x, y), x, atol=1e-5)
        assert float(grid_attack.last_params.abs().max()) == 0.0


def test_rotation_translation_stays_on_its_grid(standard_model: nn.Module,
                                                small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch[0][:8], small_batch[1][:8]
    attack = RotationTranslation(max_angle=20.0, max_shift=2.0, angle_steps=5, shift_steps=3)
    assert len(attack.grid()) == 5 * 3 * 3
    x_adv = attack(standard_model, x, y)
    params = attack.last_params
    assert params is not None and params.shape == (8, 3)
    angles = torch.tensor([-20.0, -10.0, 0.0, 10.0, 20.0])
    shifts = torch.tensor([-2.0, 0.0, 2.0])
    assert all(bool((angles - a).abs().min() < 1e-5) for a in params[:, 0])
    assert all(bool((shifts - s).abs().min() < 1e-5) for s in params[:, 1:].flatten())
    assert torch.allclose(x_adv, rotate_translate(x, params[:, 0], params[:, 1:]).clamp(0, 1), atol=1e-6)
    # The choice prefers fooling transformations: success is reported exactly where the output fools the model.
    with torch.no_grad():
        assert torch.equal(attack.last_success, standard_model(x_adv).argmax(1) != y)


def test_grid_attack_is_worst_of_grid(standard_model: nn.Module,
                                      small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """An example counts as broken iff some grid point misclassifies it (Engstrom et al.'s grid accuracy)."""
    x, y = small_batch[0][:8], small_batch[1][:8]
    attack = RotationTranslation(max_angle=10.0, max_shift=1.0, angle_steps=3, shift_steps=2)
    x_adv = attack(standard_model, x, y)
    fooled_somewhere = torch.zeros(8, dtype=torch.bool)
    with torch.no_grad():
        for angle, dx, dy in attack.grid():
            image = rotate_translate(x, torch.full((8,), angle), torch.tensor([[dx, dy]] * 8))
            fooled_somewhere |= standard_model(image).argmax(1) != y
        assert torch.equal(standard_model(x_adv).argmax(1) != y, fooled_somewhere)


# --- effect on an undefended model ---------------------------------------------------------------------------


@pytest.mark.slow
def test_stadv_breaks_an_undefended_model(standard_model: nn.Module,
                                          small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The registry's stadv configuration. Xiao et al. (2018) fool undefended MNIST CNNs almost always with
    unbounded flows. One pixel of flow in any direction is enough to move MNIST strokes substantially on a
    2-epoch model with no spatial augmentation, so at least half of its correct predictions must fall; the bound
    is set from that argument, not from an observed run.

    τ is 0.005, not the paper's 0.05: the smoothness penalty is in logit units, and this small model's margins
    are a few logits, so at 0.05 the penalty outweighs the margin and the attack leaves most of its budget
    unused (measured while writing this test: 0.86 → 0.72 accuracy, the bound below failed). Under a hard
    budget τ only shapes the flow; it must not decide whether the budget is used."""
    x, y = small_batch
    torch.manual_seed(0)
    attack = FlowField(max_flow=1.0, steps=100, lr=0.05, tau=0.005)
    clean = _accuracy(standard_model, x, y)
    robust = _accuracy(standard_model, attack(standard_model, x, y), y)
    assert clean > 0.6
    assert robust <= 0.5 * clean
    assert float(attack.last_flow.abs().max()) <= 1.0 + 1e-6


@pytest.mark.slow
def test_rotation_translation_breaks_an_undefended_model(standard_model: nn.Module,
                                                         small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Engstrom et al. (2019) report that the grid attack (±30°, ±3 px) takes a standard MNIST CNN from ~99% to
    about a quarter of that; a smaller model trained 2 epochs without augmentation is no more invariant, so
    halving its accuracy is a conservative bound."""
    x, y = small_batch
    attack = RotationTranslation(max_angle=30.0, max_shift=3.0, angle_steps=31, shift_steps=5)
    clean = _accuracy(standard_model, x, y)
    robust = _accuracy(standard_model, attack(standard_model, x, y), y)
    assert clean > 0.6
    assert robust <= 0.5 * clean


def test_stadv_lowers_accuracy_quickly(standard_model: nn.Module,
                                       small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """A short run cannot raise accuracy: unfooled examples keep an iterate, fooled ones a fooling flow."""
    x, y = small_batch[0][:16], small_batch[1][:16]
    attack = FlowField(max_flow=1.0, steps=5, lr=0.1)
    x_adv = attack(standard_model, x, y)
    with torch.no_grad():
        fooled = standard_model(x_adv).argmax(1) != y
        clean_wrong = standard_model(x).argmax(1) != y
    assert torch.equal(fooled, attack.last_success)
    assert bool((fooled | ~clean_wrong).all()), "examples misclassified clean stay misclassified"
    assert int(fooled.sum()) >= int(clean_wrong.sum())


def test_targeted_stadv_reports_target_hits(standard_model: nn.Module,
                                            small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch[0][:8], small_batch[1][:8]
    attack = FlowField(max_flow=1.0, steps=5, lr=0.1, target="fixed:3")
    x_adv = attack(standard_model, x, y)
    with torch.no_grad():
        assert torch.equal(attack.last_success, standard_model(x_adv).argmax(1) == 3)


# --- the attack contract -------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda: FlowField(max_flow=1.0, steps=5, lr=0.1, target="random"),
    lambda: RotationTranslation(max_angle=15.0, max_shift=2.0, angle_steps=3, shift_steps=2),
], ids=["stadv", "rot-trans"])
def test_contract(make, standard_model: nn.Module,  # noqa: ANN001
                  small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = small_batch[0][:8], small_batch[1][:8]
    model = standard_model
    model.train()
    flags_before = [p.requires_grad for p in model.parameters()]
    try:
        torch.manual_seed(0)
        x_adv = make()(model, x, y)
        torch.manual_seed(0)
        x_again = make()(model, x, y)
        assert model.training, "train mode must be restored"
    finally:
        model.eval()
    assert [p.requires_grad for p in model.parameters()] == flags_before
    assert all(p.grad is None for p in model.parameters()), "no parameter gradients may be left behind"
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert torch.equal(x_adv, x_again), "same seed, same adversarial examples"


def test_registry_style_construction() -> None:
    """Entries without a norm still pass the dataset's ε; the attacks accept and ignore it."""
    assert accepted_parameters("midbench.attacks.spatial:FlowField") == {"steps", "lr", "tau", "max_flow"}
    assert accepted_parameters("midbench.attacks.spatial:RotationTranslation") == {
        "max_angle", "max_shift", "angle_steps", "shift_steps"}
    resolved = ResolvedAttack("stadv", 1, "spatial", None, "midbench.attacks.spatial:FlowField", 0.3, None,
                              {"steps": 100, "lr": 0.05, "tau": 0.005, "max_flow": 1.0})
    attack = resolved.build()
    assert isinstance(attack, FlowField) and attack.max_flow == 1.0 and attack.norm is None
    assert attack.describe()["max_flow"] == 1.0
    grid = ResolvedAttack("rot-trans", 1, "spatial", None, "midbench.attacks.spatial:RotationTranslation", 0.3,
                          None, {"max_angle": 30, "max_shift": 3, "angle_steps": 31, "shift_steps": 5}).build()
    assert len(grid.grid()) == 31 * 5 * 5


@pytest.mark.parametrize("make", [
    lambda: FlowField(steps=0),
    lambda: FlowField(lr=0.0),
    lambda: FlowField(tau=-1.0),
    lambda: FlowField(max_flow=-0.5),
    lambda: RotationTranslation(max_angle=-1.0),
    lambda: RotationTranslation(shift_steps=0),
])
def test_bad_parameters_are_refused(make) -> None:  # noqa: ANN001
    with pytest.raises(UsageError):
        make()


def test_a_norm_is_refused() -> None:
    from midbench.attacks.norms import Norm

    with pytest.raises(UsageError, match="spatial attack"):
        FlowField(eps=0.3, norm=Norm.LINF)
    with pytest.raises(UsageError, match="spatial attack"):
        RotationTranslation(eps=0.3, norm=Norm.LINF)


def test_grid_result_does_not_depend_on_how_transformations_share_forward_passes(
        standard_model: nn.Module, small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Several transformations per forward pass is a speed-up only: the chosen transformation and image of every
    example are those of the one-transformation-per-forward loop, and a fooled example holds the first fooling
    transformation in grid order."""
    x, y = small_batch[0][:12], small_batch[1][:12]
    results = []
    for images_per_forward in (1, 5, 4096):
        attack = RotationTranslation(max_angle=30.0, max_shift=3.0, angle_steps=7, shift_steps=3)
        attack.images_per_forward = images_per_forward
        results.append((attack(standard_model, x, y), attack.last_params, attack.last_success))
    for images, params, success in results[1:]:
        assert torch.equal(images, results[0][0]) and torch.equal(params, results[0][1])
        assert torch.equal(success, results[0][2])
    _, params, success = results[0]
    grid = RotationTranslation(max_angle=30.0, max_shift=3.0, angle_steps=7, shift_steps=3).grid()
    with torch.no_grad():
        for i in torch.nonzero(success).flatten().tolist():
            for angle, dx, dy in grid:
                image = rotate_translate(x[i:i + 1], torch.tensor([angle]), torch.tensor([[dx, dy]]))
                if standard_model(image).argmax(1).item() != y[i].item():
                    assert params[i].tolist() == pytest.approx([angle, dx, dy])
                    break
