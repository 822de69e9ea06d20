"""In-betweening metrics of the LaFAN1 benchmark (Harvey et al. 2020): L2Q, L2P and NPSS.

All take batches of windows restricted to the scored frames: (N, T, J, C) arrays of global quaternions
or positions in the window's canonical frame.
"""

from __future__ import annotations

import numpy as np

from training.motion.rotations import quat_align


def l2q(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean over windows and frames of the L2 norm, over all joints, of the difference of global
    quaternions, with each predicted quaternion sign-aligned to the ground truth."""
    pred = quat_align(pred, gt)
    return float(np.mean(np.sqrt(np.sum((pred - gt) ** 2, axis=(-2, -1)))))


def l2p(pred: np.ndarray, gt: np.ndarray, mean: np.ndarray, std: np.ndarray) -> float:
    """Mean over windows and frames of the L2 norm, over all joints and axes, of the difference of
    global positions standardised per joint-axis by the training set's ``mean`` and ``std`` (J, 3)."""
    std = np.where(std > 1e-8, std, 1.0)
    d = (pred - mean) / std - (gt - mean) / std
    return float(np.mean(np.sqrt(np.sum(d**2, axis=(-2, -1)))))


def npss(pred: np.ndarray, gt: np.ndarray) -> float:
    """Normalised Power Spectrum Similarity (Gopalakrishnan et al. 2019) on flattened features
    (N, T, D): the earth mover's distance between the normalised cumulative power spectra over time,
    averaged over windows and dimensions weighted by the ground truth's power. Dimensions whose ground
    truth has zero power carry no weight."""
    pred = pred.reshape(pred.shape[0], pred.shape[1], -1)
    gt = gt.reshape(gt.shape[0], gt.shape[1], -1)
    gt_power = np.real(np.fft.fft(gt, axis=1)) ** 2
    pred_power = np.real(np.fft.fft(pred, axis=1)) ** 2
    gt_total = gt_power.sum(axis=1)
    pred_total = pred_power.sum(axis=1)
    weight = np.where(gt_total > 0.0, gt_total, 0.0)
    if weight.sum() == 0.0:
        return 0.0
    gt_cdf = np.cumsum(gt_power / np.where(gt_total > 0, gt_total, 1.0)[:, None], axis=1)
    pred_cdf = np.cumsum(pred_power / np.where(pred_total > 0, pred_total, 1.0)[:, None], axis=1)
    emd = np.sum(np.abs(pred_cdf - gt_cdf), axis=1)
    return float(np.sum(emd * weight) / weight.sum())
