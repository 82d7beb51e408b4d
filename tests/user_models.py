"""Classifiers for ``midbench eval --model tests_module:factory``: an honest one and deliberately broken twins.

Every factory builds the tiny ``test-cnn`` architecture behind midbench's normalisation layer, so each accepts the
state dict of a midbench ``test-cnn`` checkpoint (``--weights``) and differs from the honest model only in its
forward pass. Each broken twin shows one symptom of ``midbench.evaluation.sanity``.
"""

from __future__ import annotations

import torch
from torch import nn

from midbench.models.factory import NormalizedClassifier
from midbench.models.small import TestCNN

#: grey levels of the quantising defense: fine enough (steps of 1/15, well under ε = 0.3) that it takes no
#: robustness away from or adds none to the model — it only hides the gradient
LEVELS = 16


class HonestCNN(NormalizedClassifier):
    """``test-cnn`` exactly as midbench builds it."""

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        super().__init__(TestCNN(num_classes, input_shape), (0.0,) * input_shape[0], (1.0,) * input_shape[0])


class QuantisedCNN(HonestCNN):
    """Input quantisation to :data:`LEVELS` grey levels: ``round`` has a zero derivative, so every input gradient
    is exactly zero — gradient masking, not robustness (Athalye, Carlini & Wagner 2018 break such defenses)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.round(x * (LEVELS - 1)) / (LEVELS - 1))


class SoftmaxCNN(HonestCNN):
    """Returns probabilities instead of logits."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x).softmax(dim=1)


class NoisyCNN(HonestCNN):
    """Adds Gaussian noise to its input even in eval mode (a randomised defense)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x + 0.1 * torch.randn_like(x)).clamp(0, 1))


class PurifyingCNN(HonestCNN):
    """"Purifies" its input with one gradient step that lowers its own prediction entropy (test-time
    optimisation): the forward calls ``torch.autograd.grad``, imported by name so patching would miss it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.autograd import grad

        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            probabilities = super().forward(z).softmax(dim=1)
            entropy = -(probabilities * probabilities.clamp_min(1e-12).log()).sum()
            (direction,) = grad(entropy, z)
        return super().forward((x - 0.01 * direction.sign()).clamp(0, 1))


class DetachedCNN(HonestCNN):
    """Classifies under ``no_grad``: its output carries no gradient at all."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return super().forward(x)


def honest_cnn(num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Module:
    return HonestCNN(num_classes, input_shape)


def quantised_cnn(num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28)) -> nn.Module:
    return QuantisedCNN(num_classes, input_shape)


def no_argument_factory() -> nn.Module:
    """A factory without parameters (MNIST-shaped)."""
    return HonestCNN()


def not_a_module() -> str:
    return "not a model"


def failing_factory() -> nn.Module:
    raise RuntimeError("cannot build this model")


def three_class_cnn() -> nn.Module:
    """Fits MNIST inputs but has three classes: incompatible with a 10-class dataset."""
    return HonestCNN(num_classes=3)


#: a ready-made instance (``--model tests_module:INSTANCE``): used as is, never called
INSTANCE = HonestCNN()
