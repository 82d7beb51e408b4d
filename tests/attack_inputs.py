"""The model and images a registry-wide attack test runs an entry on: grey MNIST, or colour for the attacks
that need it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from midbench.attacks.specs import ResolvedAttack


def model_and_batch(spec: ResolvedAttack, request: pytest.FixtureRequest
                    ) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The undefended MNIST model and 24 test images, or for an attack that needs colour a small colour model
    with 24 colour images (conftest's ``colour_model_and_batch``)."""
    if spec.needs_colour:
        return request.getfixturevalue("colour_model_and_batch")
    x, y = request.getfixturevalue("small_batch")
    return request.getfixturevalue("standard_model"), x[:24], y[:24]
