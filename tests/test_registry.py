"""The generic registry and the golden lists of registered component names."""

from __future__ import annotations

import pytest

from midbench.errors import UsageError
from midbench.registry import Registry


def test_unknown_name_suggests_close_matches() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("pgd-at", 1, "madry")
    registry.add("standard", 2)
    assert registry.get("madry") == 1
    with pytest.raises(UsageError, match=r"Did you mean 'pgd-at'"):
        registry.get("pgd-att")


def test_duplicate_registration_is_refused() -> None:
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(ValueError):
        registry.add("a", 2)


def test_golden_component_names() -> None:
    """Adding or removing a dataset, architecture or method must be deliberate: update this list."""
    from midbench.data.registry import DATASETS, get_dataset
    from midbench.defenses.base import METHODS
    from midbench.defenses.base import _register_builtin as register_methods
    from midbench.models.factory import MODELS
    from midbench.models.factory import _register_builtin as register_models

    get_dataset("mnist5k")
    register_models()
    register_methods()
    assert DATASETS.names() == ["cifar10", "cifar100", "fashion-mnist", "mnist", "mnist5k", "svhn"]
    assert MODELS.names() == ["lenet", "preact-resnet18", "small-cnn", "test-cnn", "test-mlp", "test-resnet",
                              "test-wrn", "wrn-28-10", "wrn-34-10"]
    assert METHODS.names() == ["pgd-at", "standard"]


def test_golden_attack_ids() -> None:
    from midbench.attacks.specs import load_registry

    registry = load_registry()
    assert sorted(registry.attacks) == ["autoattack-l2", "autoattack-linf", "fgsm-l2", "fgsm-linf", "pgd-l2",
                                        "pgd-linf"]
    assert sorted(registry.suites) == ["autoattack", "default-unknown", "smoke"]
