"""CUDA paths (skipped without a GPU): training with bf16 autocast and evaluation on the device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from midbench.config import TrainConfig
from midbench.training import train

pytestmark = pytest.mark.cuda


def test_bf16_training_and_cuda_evaluation(tmp_path: Path) -> None:
    from midbench.evaluation.eval_config import EvalConfig
    from midbench.evaluation.runner import run_evaluation
    from midbench.evaluation.selection import AttackSelection

    config = TrainConfig.of(method="pgd-at", arch="test-cnn", epochs=1, attack_steps=2, n_train=512, val_size=32,
                         device="cuda", bf16=True)
    result = train(config, tmp_path / "run", progress=False)
    assert result.log[-1]["val_clean_acc"] > 0.1
    run = run_evaluation(EvalConfig(checkpoint=str(result.checkpoint), device="cuda", n_examples=64,
                                    results_dir=str(tmp_path / "results"),
                                    selection=AttackSelection(attacks=("fgsm-linf", "pgd-linf"))))
    assert run.result.device.startswith("cuda")
    assert run.result.attacks[1].robust_accuracy <= run.result.clean_accuracy


def test_cuda_device_is_refused_cleanly_without_gpu() -> None:
    """A device index beyond the GPUs present is a usage error, not a CUDA crash."""
    from midbench.errors import UsageError
    from midbench.runtime.device import resolve_device

    with pytest.raises(UsageError):
        resolve_device(f"cuda:{torch.cuda.device_count()}")
