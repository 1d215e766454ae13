"""Semantic hashing's bottleneck (Salakhutdinov & Hinton 2009): Gaussian noise on the code
layer's input. To get any signal through, the encoder must push |z| far beyond the noise, so
the sigmoid saturates to 0/1 and thresholding at z = 0 loses little."""
from __future__ import annotations

import torch
from torch import nn


def noisy_sigmoid(z: torch.Tensor, std: float) -> torch.Tensor:
    """sigmoid(z + N(0, std^2)); plain sigmoid at std 0."""
    return torch.sigmoid(z + std * torch.randn_like(z)) if std > 0 else torch.sigmoid(z)


class Binarizer(nn.Module):
    """The decoder sees sigmoid(z + noise), the noise's std ramped up to ``noise_std``."""

    def __init__(self, training):
        super().__init__()
        self.std = training.noise_std

    def forward(self, z: torch.Tensor, ramp: float = 1.0) -> torch.Tensor:
        return noisy_sigmoid(z, self.std * ramp)
