"""L2Q, L2P and NPSS on cases small enough to compute by hand, and the two baselines."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from training.inbetween import baselines, metrics
from training.motion.rotations import axis_angle_to_quat, quat_angle

S = np.sqrt(0.5)  # sin 45 = cos 45
IDENTITY = [0.0, 0.0, 0.0, 1.0]
ROT_Z_90 = [0.0, 0.0, S, S]


# --- L2Q --------------------------------------------------------------------------------------------


def test_l2q_is_sign_insensitive() -> None:
    gt = Rotation.random(2 * 5 * 3, random_state=0).as_quat().reshape(2, 5, 3, 4)
    assert metrics.l2q(gt, gt) == 0.0
    assert metrics.l2q(-gt, gt) == 0.0
    mixed = gt.copy()
    mixed[:, ::2, 1] *= -1
    assert metrics.l2q(mixed, gt) == pytest.approx(0.0, abs=1e-15)


def test_l2q_by_hand() -> None:
    # one window, two frames, two joints; the ground truth is the identity everywhere
    gt = np.tile(IDENTITY, (1, 2, 2, 1)).astype(float)
    pred = gt.copy()
    pred[0, 0, 0] = ROT_Z_90  # frame 0: one joint turned 90 degrees
    pred[0, 1, :] = ROT_Z_90  # frame 1: both joints turned
    pred[0, 1, 1] *= -1  # (the sign of a quaternion does not count)
    # |(0, 0, s, s) - (0, 0, 0, 1)|^2 = s^2 + (s - 1)^2 = 2 - sqrt(2) per turned joint
    d = 2.0 - np.sqrt(2.0)
    expected = (np.sqrt(d) + np.sqrt(2 * d)) / 2.0
    assert metrics.l2q(pred, gt) == pytest.approx(expected, rel=1e-12)


# --- L2P --------------------------------------------------------------------------------------------


def test_training_l2q_term_is_the_benchmark_l2q() -> None:
    """The differentiable L2Q of training (global rotations, quaternion distance from cos theta) gives
    the benchmark's number on the same motion."""
    import torch

    from training.motion.skeleton import HAND, forward_kinematics
    from training.motion.torch_rotations import cos_angle_between, global_rotations, quat_distance_sq, quat_to_matrix

    n, t, j = 3, 5, HAND.n_joints
    gt = Rotation.random(n * t * j, random_state=1).as_quat().reshape(n, t, j, 4)
    turn = Rotation.from_rotvec(np.random.default_rng(2).normal(scale=0.3, size=(n * t * j, 3)))
    pred = (Rotation.from_quat(gt.reshape(-1, 4)) * turn).as_quat().reshape(n, t, j, 4)
    zero = np.zeros((n, t, j, 3))
    g_rot = [forward_kinematics(q, zero, HAND.parents)[0] for q in (pred, gt)]
    expected = metrics.l2q(*g_rot)
    g_pred = global_rotations(quat_to_matrix(torch.tensor(pred)), HAND.parents)
    g_gt = global_rotations(quat_to_matrix(torch.tensor(gt)), HAND.parents)
    got = torch.sqrt(quat_distance_sq(cos_angle_between(g_pred, g_gt)).sum(-1)).mean().item()
    assert expected > 0.5
    assert got == pytest.approx(expected, rel=1e-9)


def test_l2p_standardised_by_hand() -> None:
    gt = np.array([[[[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]]]])  # (N=1, T=1, J=2, 3)
    pred = np.array([[[[2.0, 0.0, 0.0], [1.0, 5.0, 7.0]]]])
    mean = np.array([[10.0, 20.0, 30.0], [-1.0, -2.0, -3.0]])  # the mean cancels in the difference
    std = np.array([[2.0, 1.0, 1.0], [1.0, 3.0, 0.0]])  # a zero std counts as 1
    # standardised differences: joint 0 (2/2, 0, 0), joint 1 (0, 3/3, 4/1)
    expected = np.sqrt(1.0**2 + 1.0**2 + 4.0**2)
    assert metrics.l2p(pred, gt, mean, std) == pytest.approx(expected, rel=1e-12)
    # averaged over frames: a second frame that is exact halves it
    pred2 = np.concatenate([pred, gt], axis=1)
    gt2 = np.concatenate([gt, gt], axis=1)
    assert metrics.l2p(pred2, gt2, mean, std) == pytest.approx(expected / 2, rel=1e-12)
    assert metrics.l2p(gt, gt, mean, std) == 0.0


# --- NPSS -------------------------------------------------------------------------------------------


def test_npss_identical_is_zero() -> None:
    x = np.random.default_rng(0).normal(size=(3, 20, 4, 4))
    assert metrics.npss(x, x) == pytest.approx(0.0, abs=1e-12)


def test_npss_by_hand() -> None:
    # T = 4, D = 1. As in the LaFAN1 reference (fast_npss), the "power" is the squared real part of
    # the FFT. gt = (1, 2, 0, 1): X_k = sum_n x_n exp(-2 pi i k n / 4)
    #   X_0 = 4,  X_1 = 1 - 2i + i = 1 - i,  X_2 = 1 - 2 + 0 - 1 = -2,  X_3 = 1 + 2i - i = 1 + i
    # power (16, 1, 4, 1), total 22, cdf (16, 17, 21, 22) / 22.
    # pred = (1, 1, 1, 1): X = (4, 0, 0, 0), power (16, 0, 0, 0), cdf (1, 1, 1, 1).
    # EMD = |1 - 16/22| + |1 - 17/22| + |1 - 21/22| + 0 = (6 + 5 + 1) / 22 = 6 / 11
    gt = np.array([1.0, 2.0, 0.0, 1.0]).reshape(1, 4, 1)
    pred = np.ones((1, 4, 1))
    assert np.allclose(np.real(np.fft.fft(gt[0, :, 0])) ** 2, [16, 1, 4, 1])
    assert metrics.npss(pred, gt) == pytest.approx(6.0 / 11.0, rel=1e-12)

    # a second dimension whose ground truth has no power carries no weight, whatever is predicted
    gt2 = np.concatenate([gt, np.zeros((1, 4, 1))], axis=-1)
    pred2 = np.concatenate([pred, np.array([5.0, -3.0, 2.0, 0.5]).reshape(1, 4, 1)], axis=-1)
    assert metrics.npss(pred2, gt2) == pytest.approx(6.0 / 11.0, rel=1e-12)

    # dimensions are weighted by the ground truth's total power: a perfect dimension with power
    # (16, 0, 0, 0) (total 16) next to the one above (total 22): (22 * 6/11 + 16 * 0) / 38 = 6 / 19
    gt3 = np.concatenate([gt, np.ones((1, 4, 1))], axis=-1)
    pred3 = np.concatenate([pred, np.ones((1, 4, 1))], axis=-1)
    assert metrics.npss(pred3, gt3) == pytest.approx(6.0 / 19.0, rel=1e-12)

    # and windows are pooled the same way (N = 2 is the same as D = 2)
    assert metrics.npss(pred3.transpose(2, 1, 0), gt3.transpose(2, 1, 0)) == pytest.approx(6.0 / 19.0)

    # the ground truth with no power anywhere gives 0, not NaN
    assert metrics.npss(pred, np.zeros_like(gt)) == 0.0


def test_npss_flattens_joints_and_channels() -> None:
    rng = np.random.default_rng(1)
    gt, pred = rng.normal(size=(2, 8, 3, 4)), rng.normal(size=(2, 8, 3, 4))
    assert metrics.npss(pred, gt) == pytest.approx(metrics.npss(pred.reshape(2, 8, 12), gt.reshape(2, 8, 12)))
    assert metrics.npss(pred, gt) > 0.0


# --- baselines --------------------------------------------------------------------------------------


def linear_motion(n: int = 2, t: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """Each joint turns at a constant speed about its own fixed axis and each translation moves on a
    straight line at constant speed: interpolation between any two frames is exact."""
    rng = np.random.default_rng(2)
    time = np.arange(t, dtype=float)
    rot = np.empty((n, t, 3, 4))
    trans = np.empty((n, t, 3, 3))
    for w in range(n):
        for j in range(3):
            axis = rng.normal(size=3)
            axis /= np.linalg.norm(axis)
            start = Rotation.random(random_state=10 * w + j)
            speed = rng.uniform(-0.12, 0.12)  # < pi over the longest gap
            turn = Rotation.from_rotvec(axis[None] * (speed * time)[:, None])
            rot[w, :, j] = (start * turn).as_quat()
            trans[w, :, j] = rng.normal(size=3) + rng.normal(size=3) * time[:, None]
    return rot, trans


def masked(rot: np.ndarray, trans: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = known[None, :, None, None]
    return np.where(k, rot, np.nan), np.where(k, trans, np.nan)


def protocol_mask(t: int = 21, context: int = 10) -> np.ndarray:
    known = np.zeros(t, dtype=bool)
    known[:context] = True
    known[-1] = True
    return known


def test_interpolate_recovers_linear_motion() -> None:
    rot, trans = linear_motion()
    known = protocol_mask()
    r, t = baselines.interpolate(*masked(rot, trans, known), known)
    assert np.isfinite(r).all() and np.isfinite(t).all()
    assert quat_angle(r, rot).max() < 1e-7
    assert np.allclose(t, trans, atol=1e-12)
    # known frames are returned unchanged
    assert np.array_equal(r[:, known], rot[:, known]) and np.array_equal(t[:, known], trans[:, known])
    # sparse keys, with leading and trailing gaps that hold the nearest key
    keys = np.zeros(21, dtype=bool)
    keys[[3, 9, 16]] = True
    r, t = baselines.interpolate(*masked(rot, trans, keys), keys)
    assert quat_angle(r[:, 3:17], rot[:, 3:17]).max() < 1e-7
    assert np.allclose(t[:, 3:17], trans[:, 3:17])
    assert np.array_equal(t[:, :3], np.repeat(trans[:, 3:4], 3, axis=1))
    assert np.array_equal(t[:, 17:], np.repeat(trans[:, 16:17], 4, axis=1))
    assert np.allclose(r[:, :3], np.repeat(rot[:, 3:4], 3, axis=1), atol=1e-15, rtol=0)
    assert np.allclose(r[:, 17:], np.repeat(rot[:, 16:17], 4, axis=1), atol=1e-15, rtol=0)


def test_interpolate_takes_the_shorter_arc_and_ignores_sign() -> None:
    # 0 and 90 degrees about z, the end key given with the opposite sign: the midpoint is 45 degrees
    rot = np.array([IDENTITY, IDENTITY, [0.0, 0.0, -S, -S]])[None, :, None, :]
    trans = np.zeros((1, 3, 1, 3))
    known = np.array([True, False, True])
    r, _ = baselines.interpolate(rot, trans, known)
    assert quat_angle(r[0, 1, 0], axis_angle_to_quat(np.array([0.0, 0.0, np.pi / 4]))) < 1e-12


def test_zero_velocity_holds_the_last_known_frame() -> None:
    rot, trans = linear_motion()
    known = protocol_mask()
    r, t = baselines.zero_velocity(*masked(rot, trans, known), known)
    assert np.isfinite(r).all() and np.isfinite(t).all()
    gap = ~known
    assert np.array_equal(r[:, gap], np.repeat(rot[:, 9:10], gap.sum(), axis=1))
    assert np.array_equal(t[:, gap], np.repeat(trans[:, 9:10], gap.sum(), axis=1))
    assert np.array_equal(r[:, known], rot[:, known]) and np.array_equal(t[:, known], trans[:, known])
    # before the first key, the first key is held
    keys = np.zeros(21, dtype=bool)
    keys[[4, 12]] = True
    _, t = baselines.zero_velocity(*masked(rot, trans, keys), keys)
    assert np.array_equal(t[:, :4], np.repeat(trans[:, 4:5], 4, axis=1))
    assert np.array_equal(t[:, 5:12], np.repeat(trans[:, 4:5], 7, axis=1))
    assert np.array_equal(t[:, 13:], np.repeat(trans[:, 12:13], 8, axis=1))


def test_baselines_need_a_key() -> None:
    rot, trans = linear_motion(n=1, t=5)
    for fill in baselines.BASELINES.values():
        with pytest.raises(ValueError, match="no known frame"):
            fill(rot, trans, np.zeros(5, dtype=bool))
