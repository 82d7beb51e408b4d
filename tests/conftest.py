"""Shared fixtures: tiny models trained once per session on the embedded mnist5k data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from midbench.config import TrainConfig
from midbench.data import load_split
from midbench.data.datasets import TensorSplit
from midbench.training import train


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``-n``, pyproject's addopts) every worker is one process per core: one torch thread
    each, for the worker and the processes its tests start, so the workers do not fight over the cores."""
    import os

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


#: the files whose tests take longest (minutes each; docs/performance.md, "The test suite and CI on 2 cores"),
#: longest first
LONGEST_FILES = ("test_demo.py", "test_gpu_check.py", "test_mid.py", "test_seeds.py", "test_sweep.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the ``cuda`` tests without a GPU; run the files with slow tests first, the longest of them first.

    pytest-xdist (``--dist loadfile``) hands whole files to its workers in this order, so a file of several
    minutes started last would keep one worker busy while the others wait: started first, the short files fill
    in around it. The order changes no result (every test is independent of the others)."""
    slow_files = {item.path.name for item in items if "slow" in item.keywords}

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        return (0 if name in slow_files else 1,
                LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES))

    items.sort(key=rank)  # stable: the collection order within each group
    if torch.cuda.is_available():
        return
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip_cuda)


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network for the test, whatever a library tries: name lookups and connections fail as they do on a
    machine without one, so a test of a download path exercises its failure without reaching the network."""
    import socket

    def unreachable(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known (the test runs offline)")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)


@pytest.fixture(scope="session")
def mnist5k_test() -> TensorSplit:
    return load_split("mnist5k", "test")


@pytest.fixture(scope="session")
def small_batch(mnist5k_test: TensorSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """The first 64 test images (float in [0, 1]) and labels: the split is interleaved by class, 6–7 of each."""
    subset = mnist5k_test.subset(torch.arange(64))
    return subset.as_float(), subset.labels.clone()


def _train(out: Path, **overrides: object) -> Path:
    config = TrainConfig.of(**{"arch": "test-cnn", "epochs": 1, "batch_size": 64, "val_size": 50, "lr": 3e-3,
                            "device": "cpu", **overrides})
    return train(config, out, progress=False).checkpoint


@pytest.fixture(scope="session")
def standard_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test-cnn trained with the standard method for 3 epochs (≈ 90% clean, no robustness)."""
    return _train(tmp_path_factory.mktemp("standard"), method="standard", epochs=3)


@pytest.fixture(scope="session")
def pgd_at_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test-cnn trained one epoch with PGD-AT (3 steps) on 1,000 images."""
    return _train(tmp_path_factory.mktemp("pgd_at"), method="pgd-at", attack_steps=3, n_train=1000)


@pytest.fixture(scope="session")
def mlp_model(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    """A test-mlp trained one epoch (standard): the cheapest real classifier, for expensive attacks."""
    from midbench.artifacts.loading import load_classifier

    checkpoint = _train(tmp_path_factory.mktemp("mlp"), method="standard", arch="test-mlp", val_size=0)
    return load_classifier(checkpoint).model.eval()


@pytest.fixture(scope="session")
def standard_model(standard_checkpoint: Path) -> nn.Module:
    from midbench.artifacts.loading import load_classifier

    return load_classifier(standard_checkpoint).model.eval()


@pytest.fixture(scope="session")
def colour_model_and_batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A small random convolutional net on 3 × 32 × 32 inputs, 24 random colour images and the net's own labels
    (so clean accuracy is 100%): what the attacks that need colour are checked on."""
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10)).eval()
    x = torch.rand(24, 3, 32, 32, generator=generator)
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y
