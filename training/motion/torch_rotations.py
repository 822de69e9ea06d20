"""Differentiable rotation maths in torch, for losses and forward kinematics inside training.

Same conventions as :mod:`training.motion.rotations` (quaternions ``(x, y, z, w)``, 6D = first two
matrix columns); that module is the reference the tests compare these against.
"""

from __future__ import annotations

import torch


def sixd_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """(..., 6) -> (..., 3, 3) rotation matrices by Gram-Schmidt (columns x, y, z)."""
    a, b = d6[..., :3], d6[..., 3:]
    x = torch.nn.functional.normalize(a, dim=-1, eps=1e-8)
    b = b - (x * b).sum(-1, keepdim=True) * x
    y = torch.nn.functional.normalize(b, dim=-1, eps=1e-8)
    z = torch.cross(x, y, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def matrix_to_sixd(m: torch.Tensor) -> torch.Tensor:
    return torch.cat([m[..., :, 0], m[..., :, 1]], dim=-1)


def quat_to_matrix(q: torch.Tensor) -> torch.Tensor:
    q = torch.nn.functional.normalize(q, dim=-1)
    x, y, z, w = q.unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(*q.shape[:-1], 3, 3)  # fmt: skip


def cos_angle_between(m1: torch.Tensor, m2: torch.Tensor) -> torch.Tensor:
    """cos of the geodesic angle between rotation matrices: (trace(m1^T m2) - 1) / 2, no arccos needed."""
    tr = (m1 * m2).sum(dim=(-2, -1))
    return ((tr - 1.0) / 2.0).clamp(-1.0, 1.0)


def global_rotations(local_rot: torch.Tensor, parents) -> torch.Tensor:
    """Global rotation matrices (..., J, 3, 3) from local ones, parents before children."""
    g_rot: list[torch.Tensor] = []
    for j, p in enumerate(parents):
        g_rot.append(local_rot[..., j, :, :] if p < 0 else g_rot[p] @ local_rot[..., j, :, :])
    return torch.stack(g_rot, dim=-3)


def forward_kinematics(local_rot: torch.Tensor, local_trans: torch.Tensor, parents) -> torch.Tensor:
    """Global joint positions (..., J, 3) from local rotation matrices (..., J, 3, 3) and local
    translations (..., J, 3)."""
    g_rot = global_rotations(local_rot, parents)
    g_pos: list[torch.Tensor] = []
    for j, p in enumerate(parents):
        if p < 0:
            g_pos.append(local_trans[..., j, :])
        else:
            g_pos.append(g_pos[p] + (g_rot[..., p, :, :] @ local_trans[..., j, :, None])[..., 0])
    return torch.stack(g_pos, dim=-2)


def quat_distance_sq(cos_theta: torch.Tensor) -> torch.Tensor:
    """Squared distance of two sign-aligned unit quaternions, from the cos of the angle theta between
    their rotations: |q - q'|^2 = 2 - 2 cos(theta / 2) (the per-joint term of L2Q)."""
    half = torch.sqrt(((1.0 + cos_theta) / 2.0).clamp(min=1e-8))
    return 2.0 - 2.0 * half
