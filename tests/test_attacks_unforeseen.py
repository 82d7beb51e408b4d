"""The unforeseen attacks of Kang et al. (2019): JPEG (midbench.attacks.jpeg) and Elastic (midbench.attacks.elastic).

Neither is bounded by an Lp ball of the pixels, so the budget is checked on what each reports (``last_change``
in quantisation steps, ``last_flow`` in pixels) and the images are checked to be that transformation of the
input. The registry-wide contract, determinism and pass-count tests cover them through their registry entries.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from midbench.attacks import randomness
from midbench.attacks.elastic import ElasticAttack, gaussian_kernel, smooth_flow
from midbench.attacks.jpeg import BLOCK, JpegAttack, JpegCodec, dct_matrix, quantisation_steps
from midbench.attacks.parametric import OPTIMIZERS
from midbench.attacks.spatial import flow_warp
from midbench.errors import UsageError


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


# --- the transformations ---------------------------------------------------------------------------------------


def test_dct_is_orthonormal_and_its_dc_term_is_the_block_mean() -> None:
    dct = dct_matrix(BLOCK, torch.zeros(1, dtype=torch.float64))
    assert torch.allclose(dct @ dct.T, torch.eye(BLOCK, dtype=torch.float64), atol=1e-12)
    # T.81's DC coefficient of a block is 8 × its mean (after the level shift); the others vanish on a flat block
    codec = JpegCodec(torch.zeros(1, 1, 8, 8, dtype=torch.float64))
    coefficients = codec.encode(torch.full((1, 1, 8, 8), 0.75, dtype=torch.float64))
    assert math.isclose(float(coefficients[0, 0, 0, 0, 0, 0]), 8 * 0.25, rel_tol=1e-12)
    assert float(coefficients.flatten()[1:].abs().max()) < 1e-12


@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32), (1, 3, 13, 21)])
def test_codec_round_trip_is_exact(shape: tuple[int, ...]) -> None:
    """Encoding then decoding returns the image (no rounding is modelled), for grey and colour images whose
    sides are not multiples of 8 (padded by repeating the edge, then cropped)."""
    x = torch.rand(shape, dtype=torch.float64)
    codec = JpegCodec(x)
    coefficients = codec.encode(x)
    assert coefficients.shape == (shape[0], shape[1], -(-shape[2] // 8), -(-shape[3] // 8), 8, 8)
    assert torch.allclose(codec.decode(coefficients), x, atol=1e-12)


def test_quantisation_tables_are_t81_annex_k() -> None:
    steps = quantisation_steps(3, torch.zeros(1)) * 255
    assert steps[0, 0, 0] == 16 and steps[0, 7, 7] == 99 and steps[0, 6, 5] == 121  # luminance, Table K.1
    assert steps[1, 0, 0] == 17 and steps[2, 3, 1] == 66 and steps[1, 7, 7] == 99  # chrominance, Table K.2
    assert torch.equal(quantisation_steps(1, torch.zeros(1))[0], steps[0] / 255)  # grey images: luminance


def test_gaussian_kernel_is_normalised_so_smoothing_keeps_the_bound() -> None:
    for sigma in (0.0, 0.5, 2.0):
        kernel = gaussian_kernel(sigma, torch.zeros(1, dtype=torch.float64))
        assert math.isclose(float(kernel.sum()), 1.0, rel_tol=1e-12) and float(kernel.min()) >= 0
        assert kernel.numel() == 2 * math.ceil(3 * sigma) + 1
    flow = torch.rand(3, 2, 10, 10, dtype=torch.float64) * 2 - 1
    smoothed = smooth_flow(flow, gaussian_kernel(2.0, flow))
    assert smoothed.shape == flow.shape and float(smoothed.abs().max()) <= 1.0
    constant = torch.full((1, 2, 10, 10), 0.7, dtype=torch.float64)
    assert torch.allclose(smooth_flow(constant, gaussian_kernel(2.0, constant)), constant, atol=1e-12)


# --- the attacks -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_jpeg_respects_its_budget_and_returns_the_decoded_change(optimizer: str, standard_model: nn.Module,
                                                                  small_batch: tuple[torch.Tensor, torch.Tensor]
                                                                  ) -> None:
    x, y = small_batch[0][:16], small_batch[1][:16]
    attack = JpegAttack(quant_steps=0.5, steps=5, optimizer=optimizer)
    x_adv = attack(standard_model, x, y)
    assert attack.last_change is not None
    assert float(attack.last_change.abs().max()) <= 0.5 + 1e-6
    codec = JpegCodec(x)
    steps = quantisation_steps(1, x).view(1, 1, 1, 1, 8, 8)
    expected = codec.decode(codec.encode(x) + attack.last_change * steps).clamp(0, 1)
    assert torch.allclose(x_adv, expected, atol=1e-5)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_elastic_respects_its_budget_and_returns_the_warped_image(optimizer: str, standard_model: nn.Module,
                                                                 small_batch: tuple[torch.Tensor, torch.Tensor]
                                                                 ) -> None:
    x, y = small_batch[0][:16], small_batch[1][:16]
    attack = ElasticAttack(max_flow=1.5, sigma=2.0, steps=5, optimizer=optimizer)
    x_adv = attack(standard_model, x, y)
    assert attack.last_flow is not None and attack.last_flow.shape == (16, 2, 28, 28)
    assert float(attack.last_flow.abs().max()) <= 1.5 + 1e-6
    assert torch.allclose(x_adv, flow_warp(x, attack.last_flow), atol=1e-6)


@pytest.mark.parametrize("make", [lambda: JpegAttack(quant_steps=0.0, steps=3),
                                  lambda: ElasticAttack(max_flow=0.0, steps=3)], ids=["jpeg", "elastic"])
def test_zero_budget_is_the_identity(make, standard_model: nn.Module,  # noqa: ANN001
                                     small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Up to float rounding of the transform (grid_sample's coordinates, the DCT round trip)."""
    x, y = small_batch
    assert torch.allclose(make()(standard_model, x, y), x, atol=1e-5)


@pytest.mark.parametrize("make", [lambda s: JpegAttack(quant_steps=s, steps=20),
                                  lambda s: ElasticAttack(max_flow=2.0 * s, sigma=2.0, steps=20)],
                         ids=["jpeg", "elastic"])
def test_full_strength_breaks_an_undefended_model(make, standard_model: nn.Module,  # noqa: ANN001
                                                  small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The registry's full budgets. One quantisation step on every coefficient lets the attacker move a pixel
    by up to the sum of the table's entries over 8 (far beyond the image's range); two pixels of smooth flow
    in any direction move MNIST strokes by about their own width. An undefended model trained for one epoch
    without augmentation cannot withstand either on most of its correct predictions, so at least half of them
    must fall; a tenth of the budget must leave at least as many standing (a weaker attacker)."""
    x, y = small_batch
    clean = _accuracy(standard_model, x, y)
    torch.manual_seed(0)
    full = _accuracy(standard_model, make(1.0)(standard_model, x, y), y)
    torch.manual_seed(0)
    tenth = _accuracy(standard_model, make(0.1)(standard_model, x, y), y)
    assert clean > 0.6
    assert full <= 0.5 * clean
    assert full <= tenth <= clean


@pytest.mark.parametrize("make", [lambda: JpegAttack(quant_steps=0.5, steps=4),
                                  lambda: ElasticAttack(max_flow=1.0, steps=4),
                                  lambda: JpegAttack(quant_steps=0.5, steps=4, restarts=3, losses="ce,margin"),
                                  lambda: ElasticAttack(max_flow=1.0, steps=4, restarts=3, losses=["margin"]),
                                  lambda: JpegAttack(quant_steps=0.5, steps=4, restarts=2, optimizer="apgd",
                                                     losses="ce,dlr-targeted", n_targets=2),
                                  lambda: ElasticAttack(max_flow=1.0, steps=4, restarts=2, optimizer="apgd",
                                                        losses="margin,dlr-targeted", n_targets=2)],
                         ids=["jpeg", "elastic", "jpeg-restarts", "elastic-restarts", "jpeg-apgd", "elastic-apgd"])
def test_an_example_attack_does_not_depend_on_its_batch(make, standard_model: nn.Module,  # noqa: ANN001
                                                        small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    """With per-example generators (what the profile uses), attacking examples 0–7 together or 0–3 alone gives
    the same result for 0–3: what lets the nested profile skip examples already broken."""
    x, y = small_batch[0][:8], small_batch[1][:8]
    with randomness.per_example_generators(list(range(8))):
        together = make()(standard_model, x, y)
    with randomness.per_example_generators(list(range(4))):
        alone = make()(standard_model, x[:4], y[:4])
    assert torch.allclose(together[:4], alone, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: JpegAttack(quant_steps=0.1, steps=5),
                                  lambda: ElasticAttack(max_flow=0.2, steps=5)], ids=["jpeg", "elastic"])
def test_restarts_run_while_an_example_stands_and_never_lose_a_broken_one(
        make, standard_model: nn.Module, small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:  # noqa: ANN001
    """The first restart is the single run itself (the same random start from each example's generator), and an
    example keeps its first fooling iterate, so restarts only add broken examples. At a tenth of the budget most
    examples stand, so every restart runs: four restarts cost four times the passes of one run."""
    from midbench.evaluation.counting import PassCounter

    x, y = small_batch
    seeds = list(range(len(y)))

    def fooled(attack: JpegAttack | ElasticAttack) -> tuple[torch.Tensor, int]:
        counter = PassCounter(standard_model)
        with randomness.per_example_generators(seeds):
            x_adv = attack(counter, x, y)
        with torch.no_grad():
            return standard_model(x_adv).argmax(1) != y, counter.forward_passes

    once, again = make(), make()
    again.restarts, again.losses = 4, ("ce", "margin")
    (single, single_passes), (restarted, restarted_passes) = fooled(once), fooled(again)
    assert bool((single <= restarted).all())
    assert not bool(restarted.all())
    assert restarted_passes == 4 * single_passes


@pytest.mark.parametrize("make", [lambda: JpegAttack(quant_steps=0.1, steps=5, optimizer="apgd"),
                                  lambda: ElasticAttack(max_flow=0.2, steps=5, optimizer="apgd")],
                         ids=["jpeg", "elastic"])
def test_apgd_on_the_variables_only_adds_broken_examples_with_more_runs(
        make, standard_model: nn.Module, small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:  # noqa: ANN001
    """Under APGD the first run of the cross-entropy is the same with or without more stages and restarts (each
    example's first random start comes from its own generator), and later runs attack only the examples still
    standing and keep every break: the broken set can only grow, and a broken example's reported success is
    the model's verdict on the returned image."""
    x, y = small_batch
    seeds = list(range(len(y)))

    def fooled(attack: JpegAttack | ElasticAttack) -> torch.Tensor:
        with randomness.per_example_generators(seeds):
            x_adv = attack(standard_model, x, y)
        with torch.no_grad():
            wrong = standard_model(x_adv).argmax(1) != y
        assert torch.equal(wrong, attack.last_success)
        return wrong

    once, more = make(), make()
    more.restarts, more.losses, more.n_targets = 3, ("ce", "dlr-targeted"), 2
    single, several = fooled(once), fooled(more)
    assert bool((single <= several).all())
    assert not bool(several.all())  # at a tenth of the budget most examples stand: the runs all ran


def test_the_cosine_schedule_starts_at_the_step_size_and_decays_towards_zero() -> None:
    from midbench.attacks.parametric import step_sizes

    assert step_sizes(0.5, 4, "constant") == [0.5] * 4
    cosine = step_sizes(0.5, 20, "cosine")
    assert cosine[0] == 0.5 and all(a > b for a, b in zip(cosine, cosine[1:], strict=False))
    assert 0 < cosine[-1] < 0.01  # the last step refines; it is never a step backwards


def test_the_margin_loss_is_negative_exactly_on_correct_predictions() -> None:
    from midbench.attacks.parametric import attack_loss

    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    labels = torch.tensor([0, 0])
    per_example = [float(attack_loss(logits[i:i + 1], labels[i:i + 1], "margin", False)) for i in range(2)]
    assert per_example == [-2.0, 2.0]  # max_{j≠y} z_j − z_y
    assert float(attack_loss(logits[:1], torch.tensor([1]), "margin", True)) == -2.0  # z_t − max_{j≠t} z_j


@pytest.mark.parametrize("make", [lambda: JpegAttack(quant_steps=-1.0), lambda: JpegAttack(steps=0),
                                  lambda: ElasticAttack(max_flow=-1.0), lambda: ElasticAttack(sigma=-0.5),
                                  lambda: ElasticAttack(relative_step=-0.1), lambda: JpegAttack(restarts=0),
                                  lambda: ElasticAttack(losses="hinge"), lambda: JpegAttack(losses=[]),
                                  lambda: JpegAttack(schedule="linear"), lambda: ElasticAttack(schedule=""),
                                  lambda: ElasticAttack(optimizer="adam"),
                                  lambda: JpegAttack(optimizer="apgd", schedule="cosine"),
                                  lambda: ElasticAttack(optimizer="apgd", losses="hinge"),
                                  lambda: JpegAttack(optimizer="pgd", losses="dlr-targeted"),
                                  lambda: ElasticAttack(optimizer="apgd", target="least-likely"),
                                  lambda: JpegAttack(optimizer="apgd", n_targets=0)])
def test_bad_parameters_are_refused(make) -> None:  # noqa: ANN001
    with pytest.raises(UsageError):
        make()


def test_a_norm_is_refused() -> None:
    from midbench.attacks.norms import Norm

    for cls in (JpegAttack, ElasticAttack):
        with pytest.raises(UsageError, match="no norm"):
            cls(eps=0.3, norm=Norm.LINF)
