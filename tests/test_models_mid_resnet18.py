"""ResNet-18 (He et al. 2016) split into encoder/head with a decoder for MID (Zhang et al. 2024)."""

from __future__ import annotations

import pytest
import torch

from midbench.models import build_model
from midbench.models.factory import MODELS
from midbench.models.mid_resnet18 import BasicBlock

SHAPE = (3, 32, 32)


def _tiny(classes: int = 10) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The tiny variant's classifier and decoder, built through the registry like MID builds them."""
    info = MODELS.get("test-resnet-ae")
    assert info.decoder is not None
    return info.factory(classes, SHAPE), info.decoder(SHAPE)


def test_tiny_shapes() -> None:
    torch.manual_seed(0)
    net, decoder = _tiny(classes=7)
    x = torch.rand(2, *SHAPE)
    feature = net.encoder(x)
    assert feature.shape == (2, 64, 4, 4)  # last stage's width, 32 / 8
    assert net.head(feature).shape == (2, 7)
    assert net(x).shape == (2, 7)
    assert decoder(feature, None).shape == x.shape


def test_full_resnet18_has_two_blocks_per_stage() -> None:
    net = MODELS.get("resnet18").factory(10, SHAPE).eval()
    with torch.no_grad():
        feature = net.encoder(torch.rand(2, *SHAPE))
    assert feature.shape == (2, 512, 4, 4)
    stages = [net.encoder.layer1, net.encoder.layer2, net.encoder.layer3, net.encoder.layer4]
    assert [sum(isinstance(m, BasicBlock) for m in stage.modules()) for stage in stages] == [2, 2, 2, 2]
    assert sum(isinstance(m, BasicBlock) for m in net.modules()) == 8
    # ResNet-18 on CIFAR-10 has ≈ 11.17M parameters.
    assert 11.1e6 < sum(p.numel() for p in net.parameters()) < 11.25e6


def test_return_context_gives_the_same_feature() -> None:
    torch.manual_seed(0)
    net, _ = _tiny()
    net.eval()
    x = torch.rand(2, *SHAPE)
    with torch.no_grad():
        feature, context = net.encoder(x, return_context=True)
        assert torch.equal(net.encoder(x), feature)
    assert context is None


def test_build_model_exposes_encoder_head_and_decoder() -> None:
    model = build_model("resnet18", 10, SHAPE)
    assert isinstance(model.net.encoder, torch.nn.Module)
    assert isinstance(model.net.head, torch.nn.Module)
    assert MODELS.get("resnet18").decoder is not None


@pytest.mark.parametrize("arch", ["resnet18", "test-resnet-ae"])
def test_decoder_rejects_sizes_not_divisible_by_8(arch: str) -> None:
    decoder = MODELS.get(arch).decoder
    assert decoder is not None
    with pytest.raises(ValueError, match="divisible by 8"):
        decoder((1, 28, 28))


def test_decoder_loss_reaches_the_encoder() -> None:
    torch.manual_seed(0)
    net, decoder = _tiny()
    x = torch.rand(2, *SHAPE)
    feature, context = net.encoder(x, return_context=True)
    torch.nn.functional.mse_loss(decoder(feature, context), x).backward()
    grads = [p.grad for p in net.encoder.parameters()]
    assert all(g is not None for g in grads)
    assert net.encoder.conv1.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.head.parameters())
