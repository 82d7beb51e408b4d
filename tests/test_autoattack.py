"""midbench's component-by-component AutoAttack equals the reference ``run_standard_evaluation``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midbench.attacks.autoattack import AutoAttackStandard
from midbench.attacks.norms import Norm


@pytest.mark.slow
@pytest.mark.parametrize(("norm", "eps"), [(Norm.LINF, 0.1), (Norm.L2, 1.5)])
def test_same_robust_mask_as_reference(norm: Norm, eps: float, mlp_model: nn.Module,
                                       small_batch: tuple[torch.Tensor, torch.Tensor]) -> None:
    from pyautoattack import AutoAttack

    # 20 examples in batches of 8: several batches per component, the last one short, as in real runs
    x, y = small_batch[0][:20], small_batch[1][:20]
    model = mlp_model
    rng_before = torch.get_rng_state()
    torch.manual_seed(123)
    expected_rng = torch.get_rng_state()
    torch.set_rng_state(rng_before)

    with torch.no_grad():
        clean = model(x).argmax(1) == y
    ours = AutoAttackStandard(eps, norm, seed=0, batch_size=8)
    # midbench attacks only the clean-correct points (robust-points-only), exactly as the reference does
    torch.manual_seed(123)
    x_ours = x.clone()
    x_ours[clean] = ours(model, x[clean], y[clean])
    assert torch.equal(torch.get_rng_state(), expected_rng), "the global RNG must be restored"
    with torch.no_grad():
        mask_ours = model(x_ours).argmax(1) == y

    reference = AutoAttack(model, norm=norm.value, eps=eps, version="standard", device="cpu", seed=0)
    x_ref, _ = reference.run_standard_evaluation(x, y, batch_size=8)
    with torch.no_grad():
        mask_ref = model(x_ref).argmax(1) == y

    assert torch.equal(mask_ours, mask_ref)
    assert list(ours.component_accuracy) == ["apgd-ce", "apgd-t", "fab-t", "square"]
    accuracies = list(ours.component_accuracy.values())
    assert accuracies == sorted(accuracies, reverse=True), "each component only removes robust points"
