"""ModelState: what a trained model is, as plain data (two configs and float32 arrays), which
storage writes and reads back. No torch here, so that reading a collection's file does not
load it."""
from __future__ import annotations

from dataclasses import dataclass

from .config import ModelConfig, TrainConfig


@dataclass
class ModelState:
    """Everything a trained model is: what rebuilds the network, how it was trained, and its
    tensors by state-dict name (float32 numpy arrays)."""

    model: ModelConfig
    training: TrainConfig
    weights: dict
