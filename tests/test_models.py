"""Every registered architecture builds for every dataset shape and takes inputs in [0, 1]."""

from __future__ import annotations

import pytest
import torch

from midbench.models import build_model
from midbench.models.factory import MODELS

LARGE = {"preact-resnet18", "wrn-34-10", "wrn-28-10"}


@pytest.mark.parametrize("arch", [pytest.param(a, marks=pytest.mark.slow) if a in LARGE else a for a in MODELS.names()])
@pytest.mark.parametrize(("shape", "classes"), [((1, 28, 28), 10), ((3, 32, 32), 100)])
def test_forward_shape(arch: str, shape: tuple[int, int, int], classes: int) -> None:
    model = build_model(arch, classes, shape).eval()
    with torch.no_grad():
        logits = model(torch.rand(2, *shape))
    assert logits.shape == (2, classes)
    assert torch.isfinite(logits).all()


def test_normalisation_is_inside_the_model() -> None:
    mean, std = (0.5, 0.25, 0.0), (0.5, 0.5, 1.0)
    model = build_model("test-cnn", 10, (3, 32, 32), mean, std)
    x = torch.rand(1, 3, 32, 32)
    expected = (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert torch.allclose(model.normalize(x), expected)
    assert "normalize.mean" in model.state_dict()


def test_parameter_counts_match_the_papers() -> None:
    """PreAct ResNet-18 ≈ 11.17M and WRN-34-10 ≈ 46.16M parameters on CIFAR-10 (published sizes)."""
    counts = {arch: sum(p.numel() for p in build_model(arch, 10, (3, 32, 32)).parameters())
              for arch in ("preact-resnet18", "wrn-34-10")}
    assert 11.1e6 < counts["preact-resnet18"] < 11.25e6
    assert 46.1e6 < counts["wrn-34-10"] < 46.2e6
