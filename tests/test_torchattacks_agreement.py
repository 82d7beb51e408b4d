"""Native PGD agrees with torchattacks' PGD (runs when the `torchattacks` extra is installed, as in CI)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midbench.attacks.gradient import PGD
from midbench.attacks.norms import Norm


@pytest.mark.parametrize("eps", [0.05, 0.1])
def test_native_pgd_matches_torchattacks(eps: float, standard_model: nn.Module, mnist5k_test: object) -> None:
    torchattacks = pytest.importorskip("torchattacks")
    data = mnist5k_test.subset(torch.arange(200))
    x, y = data.as_float(), data.labels
    step = eps / 4
    torch.manual_seed(0)
    ours = PGD(eps, Norm.LINF, steps=10, step_size=step)(standard_model, x, y)
    torch.manual_seed(0)
    theirs = torchattacks.PGD(standard_model.eval(), eps=eps, alpha=step, steps=10, random_start=True)(x, y)
    with torch.no_grad():
        accuracy_ours = (standard_model(ours).argmax(1) == y).float().mean().item()
        accuracy_theirs = (standard_model(theirs).argmax(1) == y).float().mean().item()
    # Same algorithm, same random start: robust accuracy within 1% (the only difference is a summed vs
    # averaged loss, which at most flips the sign of exactly-zero gradient entries).
    assert abs(accuracy_ours - accuracy_theirs) <= 0.01


def test_targeted_torchattacks_entry_prints_nothing(capfd: pytest.CaptureFixture[str]) -> None:
    """torchattacks announces every change of attack mode on stdout; midbench's output must stay clean."""
    pytest.importorskip("torchattacks")
    from midbench.attacks.torchattacks_adapter import TorchattacksAttack

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10)).eval()
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    TorchattacksAttack(0.0, None, "JSMA", target="random", theta=1.0, gamma=0.5)(model, x, y)
    assert capfd.readouterr().out == ""
