"""Losses and distributions of the fill models.

From the thesis: the angular MSE on (sin, cos) pairs and the von Mises likelihood, here on the geodesic
angle theta between the predicted and the true rotation (cos theta = (trace(R^T R') - 1) / 2, no arccos);
plus a Gaussian likelihood for moving-joint positions and a forward-kinematics position term.
"""

from __future__ import annotations

import math

import torch


def von_mises_nll(cos_theta: torch.Tensor, log_kappa: torch.Tensor) -> torch.Tensor:
    """-log p(theta) for theta ~ von Mises(0, kappa): kappa (1 - cos theta) + log(2 pi I0e(kappa))."""
    kappa = log_kappa.exp()
    return kappa * (1.0 - cos_theta) + torch.log(2 * math.pi * torch.special.i0e(kappa))


def angular_mse(cos_theta: torch.Tensor) -> torch.Tensor:
    """Squared distance of (sin theta, cos theta) to (0, 1), i.e. 2 (1 - cos theta)."""
    return 2.0 * (1.0 - cos_theta)


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_sigma: torch.Tensor) -> torch.Tensor:
    return 0.5 * ((x - mean) / log_sigma.exp()) ** 2 + log_sigma + 0.5 * math.log(2 * math.pi)


def gaussian_entropy(log_sigma: torch.Tensor) -> torch.Tensor:
    return log_sigma + 0.5 * math.log(2 * math.pi * math.e)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)
