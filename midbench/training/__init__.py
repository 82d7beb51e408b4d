"""The one generic training loop."""

from midbench.training.loop import TrainResult, train

__all__ = ["TrainResult", "train"]
