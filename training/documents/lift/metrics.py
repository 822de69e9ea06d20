"""Pose metrics of the lifting benchmark (Human3.6M protocols 1 and 2): MPJPE and Procrustes-aligned MPJPE."""

from __future__ import annotations

import numpy as np


def mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint position error: the mean Euclidean distance between predicted and true joints
    (..., J, 3), in the units of the input (the lifting benchmark: millimetres)."""
    return float(np.mean(np.linalg.norm(pred - gt, axis=-1)))


def procrustes_align(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``pred`` (N, J, 3) moved onto ``gt`` by the best similarity transform (scale, rotation without
    reflection, translation) of each pose: what Procrustes-aligned MPJPE (Human3.6M protocol 2) scores."""
    mu_p, mu_g = pred.mean(axis=1, keepdims=True), gt.mean(axis=1, keepdims=True)
    p, g = pred - mu_p, gt - mu_g
    u, s, vt = np.linalg.svd(np.einsum("nji,njk->nik", p, g))  # p^T g = U S V^T: p @ (U V^T) best matches g
    d = np.sign(np.linalg.det(np.einsum("nij,njk->nik", u, vt)))
    s[:, -1] *= d
    vt[:, -1] *= d[:, None]
    rot = np.einsum("nij,njk->nik", u, vt)  # applied as p @ rot
    scale = s.sum(axis=1) / np.maximum(np.sum(p**2, axis=(1, 2)), 1e-12)
    return scale[:, None, None] * (p @ rot) + mu_g


def pa_mpjpe(pred: np.ndarray, gt: np.ndarray) -> float:
    """MPJPE after Procrustes alignment of each predicted pose (N, J, 3) to its ground truth."""
    return mpjpe(procrustes_align(pred, gt), gt)
