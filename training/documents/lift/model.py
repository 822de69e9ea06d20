"""LiftModel: 3D pose from 2D joint positions (the CS764 report, after Martinez et al. 2017).

A plain residual MLP: Linear(2J -> hidden), ``blocks`` residual blocks of two
(Linear(hidden), BatchNorm, ReLU, Dropout) layers with a skip around each block, Linear(hidden -> 3J).
With the report's settings (J = 15, hidden = 1024, two blocks, dropout 0.5) it is 30 -> 1024 -> 45 and
has 4,284,461 parameters.

The model reads root-relative 2D joint positions in pixels and returns root-relative 3D positions in
millimetres in the camera's frame. Inputs and outputs are standardised inside the model with the
training set's statistics (buffers set by :meth:`LiftModel.set_normalisation`), so a checkpoint is
self-contained and callers never handle normalised units.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class LiftConfig:
    """Architecture of the LiftModel; the defaults are the report's network."""

    n_joints: int = 15
    hidden: int = 1024
    blocks: int = 2
    dropout: float = 0.5


class ResidualBlock(nn.Module):
    """Two (Linear, BatchNorm, ReLU, Dropout) layers with an identity skip around them."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):
            layers += [nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Dropout(dropout)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class LiftModel(nn.Module):
    """(B, J, 2) root-relative pixels -> (B, J, 3) root-relative millimetres (camera frame)."""

    def __init__(self, config: LiftConfig) -> None:
        super().__init__()
        self.config = config
        j = config.n_joints
        self.inp = nn.Linear(2 * j, config.hidden)
        self.blocks = nn.Sequential(*[ResidualBlock(config.hidden, config.dropout) for _ in range(config.blocks)])
        self.out = nn.Linear(config.hidden, 3 * j)
        # identity normalisation until the training set's statistics are set
        self.register_buffer("in_mean", torch.zeros(2 * j))
        self.register_buffer("in_std", torch.ones(2 * j))
        self.register_buffer("out_mean", torch.zeros(3 * j))
        self.register_buffer("out_std", torch.ones(3 * j))

    def set_normalisation(self, x2d: torch.Tensor, y3d: torch.Tensor) -> None:
        """Standardise by the per-coordinate mean and std of training inputs (N, J, 2) and targets (N, J, 3)."""
        x, y = x2d.reshape(len(x2d), -1).double(), y3d.reshape(len(y3d), -1).double()
        self.in_mean.copy_(x.mean(0))
        self.in_std.copy_(x.std(0).clamp_min(1e-6))
        self.out_mean.copy_(y.mean(0))
        self.out_std.copy_(y.std(0).clamp_min(1e-6))

    def forward(self, x2d: torch.Tensor) -> torch.Tensor:
        b, j = x2d.shape[0], self.config.n_joints
        x = (x2d.reshape(b, 2 * j) - self.in_mean) / self.in_std
        y = self.out(self.blocks(self.inp(x)))
        return (y * self.out_std + self.out_mean).reshape(b, j, 3)


def n_parameters(config: LiftConfig) -> int:
    """Closed-form parameter count (weights, biases, BatchNorm affine) for checking a built model."""
    j, h = config.n_joints, config.hidden
    per_block = 2 * (h * h + h + 2 * h)
    return (2 * j * h + h) + config.blocks * per_block + (h * 3 * j + 3 * j)
