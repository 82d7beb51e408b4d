"""The generic registry and the golden lists of registered component names."""

from __future__ import annotations

import pytest

from midbench.catalog import Catalog
from midbench.errors import UsageError


def test_unknown_name_suggests_close_matches() -> None:
    registry: Catalog[int] = Catalog("widget")
    registry.add("pgd-at", 1, "madry")
    registry.add("standard", 2)
    assert registry.get("madry") == 1
    with pytest.raises(UsageError, match=r"Did you mean 'pgd-at'"):
        registry.get("pgd-att")


def test_duplicate_registration_is_refused() -> None:
    registry: Catalog[int] = Catalog("widget")
    registry.add("a", 1)
    with pytest.raises(ValueError):
        registry.add("a", 2)


def test_golden_component_names() -> None:
    """Adding or removing a dataset, architecture or method must be deliberate: update this list."""
    from midbench.data.datasets import DATASETS
    from midbench.defenses.base import METHODS
    from midbench.models.factory import MODELS

    assert DATASETS.names() == ["cifar10", "cifar100", "fashion-mnist", "imagenet", "mnist", "mnist5k", "svhn"]
    assert MODELS.names() == ["lenet", "preact-resnet18", "resnet18", "small-cnn", "test-cnn", "test-mlp",
                              "test-resnet", "test-resnet-ae", "test-wrn", "wrn-28-10", "wrn-34-10"]
    assert METHODS.names() == ["avg", "fast-at", "mart", "max", "mid", "mid-teacher", "msd", "pgd-at", "standard",
                              "trades"]


#: the optimised corruptions of attacks_registry/unforeseen_ua.toml: each is an attack and a threat model of that id
CORRUPTIONS = ["affine", "blur", "brightness-contrast", "fog", "gabor", "glitch", "hsv", "kaleidoscope",
               "perspective", "pixel", "snow", "wood"]


def test_golden_attack_ids() -> None:
    from midbench.attacks.specs import load_registry

    registry = load_registry()
    assert sorted(registry.attacks) == sorted([
        "apgd-ce-linf", "apgd-l1", "apgd-l2", "apgd-linf", "apgd-t-linf", "autoattack-l2", "autoattack-linf",
        "bim-linf", "bim-linf-t", "cw-l2", "cw-l2-t", "ddn-l2", "deepfool-l2", "deepfool-linf", "ead-l1", "elastic",
        "elastic-apgd", "fab-t-linf", "fgsm-l2", "fgsm-linf", "fgsm-linf-t", "jitter-linf", "jpeg-apgd", "jpeg-linf",
        "jsma-l0-t", "mim-l2", "mim-linf", "mim-linf-t", "noise-gaussian-l2", "noise-uniform-linf", "onepixel-l0",
        "pgd-l1", "pgd-l1-fast", "pgd-l2", "pgd-linf", "pgd-linf-t", "pixle-l0", "rot-trans", "rot-trans-coarse",
        "spsa-linf", "square-linf", "stadv", "stadv-fast", *CORRUPTIONS,
        *(f"{corruption}-apgd" for corruption in CORRUPTIONS)])
    assert sorted(registry.suites) == ["autoattack", "default-unknown", "lp-union", "mid-mnist-known",
                                       "mid-mnist-unknown", "smoke", "unforeseen", "unforeseen-ua",
                                       "unknown-profile", "unknown-profile-ua"]
    assert sorted(registry.threat_models) == sorted(["elastic", "flow", "jpeg", "l0", "l1", "l2", "linf", "noise",
                                                      "rot-trans", *CORRUPTIONS])
    families = {spec.family for spec in registry.attacks.values()}
    assert {"linf", "l2", "l1", "l0", "spatial", "frequency", "noise"} <= families
