"""Model registry and factory. Every model takes images in [0, 1]; normalisation is its first layer."""

from midbench.models.factory import MODELS, ModelInfo, build_model

__all__ = ["MODELS", "ModelInfo", "build_model"]
