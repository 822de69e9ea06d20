"""Rotation conventions and conversions against scipy, and curve continuity (no sign or 360 jumps)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from training.motion import rotations as R
from training.motion.rotations import EULER_ORDERS


def random_quats(n: int, seed: int = 0) -> np.ndarray:
    return Rotation.random(n, random_state=seed).as_quat()


def same_rotation(a: np.ndarray, b: np.ndarray, atol: float = 1e-9) -> bool:
    """Equal as rotations: q and -q are the same rotation."""
    return bool(np.all(np.abs(np.abs(np.sum(a * b, axis=-1)) - 1.0) < atol))


def test_euler_orders_are_the_six_tait_bryan_orders() -> None:
    assert sorted(EULER_ORDERS) == sorted({"XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"})
    with pytest.raises(ValueError, match="unknown Euler order"):
        R.euler_to_quat(np.zeros(3), "XYX")


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_euler_to_quat_matches_scipy_intrinsic(order: str) -> None:
    rng = np.random.default_rng(1)
    e = rng.uniform(-180, 180, size=(5, 7, 3))
    q = R.euler_to_quat(e, order)
    assert q.shape == (5, 7, 4)
    expected = Rotation.from_euler(order, e.reshape(-1, 3), degrees=True).as_quat().reshape(5, 7, 4)
    assert same_rotation(q, expected)
    # radians too
    assert same_rotation(R.euler_to_quat(np.deg2rad(e), order, degrees=False), expected)


@pytest.mark.parametrize("order", EULER_ORDERS)
def test_quat_to_euler_matches_scipy_and_round_trips(order: str) -> None:
    q = random_quats(200, seed=2)
    e = R.quat_to_euler(q, order)
    assert np.allclose(e, Rotation.from_quat(q).as_euler(order, degrees=True), atol=1e-9)
    assert same_rotation(R.euler_to_quat(e, order), q)
    # the middle angle of a Tait-Bryan triple lies in [-90, 90]
    assert np.all(np.abs(e[:, 1]) <= 90.0 + 1e-9)


def test_6d_round_trip_and_gram_schmidt() -> None:
    q = random_quats(100, seed=3)
    d6 = R.quat_to_6d(q)
    assert d6.shape == (100, 6)
    m = Rotation.from_quat(q).as_matrix()
    assert np.allclose(d6[:, :3], m[:, :, 0]) and np.allclose(d6[:, 3:], m[:, :, 1])
    assert same_rotation(R.sixd_to_quat(d6), q)
    # a perturbed, unnormalised 6D vector still gives a proper rotation whose first column is along a
    noisy = 3.0 * d6 + 0.05 * np.random.default_rng(4).normal(size=d6.shape)
    mm = R.sixd_to_matrix(noisy)
    assert np.allclose(mm.transpose(0, 2, 1) @ mm, np.eye(3), atol=1e-12)
    assert np.allclose(np.linalg.det(mm), 1.0)
    a = noisy[:, :3] / np.linalg.norm(noisy[:, :3], axis=-1, keepdims=True)
    assert np.allclose(mm[:, :, 0], a)


def test_axis_angle_round_trip() -> None:
    q = random_quats(100, seed=5)
    v = R.quat_to_axis_angle(q)
    assert np.all(np.linalg.norm(v, axis=-1) <= np.pi + 1e-12)
    assert np.allclose(v, Rotation.from_quat(q).as_rotvec())
    assert same_rotation(R.axis_angle_to_quat(v), q)
    # the sign of the quaternion does not matter
    assert np.allclose(R.quat_to_axis_angle(-q), v)
    # tiny rotations stay exact (no 0/0)
    small = np.array([1e-12, -2e-12, 3e-12])
    assert np.allclose(R.quat_to_axis_angle(R.axis_angle_to_quat(small)), small, rtol=1e-6, atol=0)
    assert np.array_equal(R.quat_to_axis_angle(R.quat_identity()), np.zeros(3))


def test_quat_mul_and_apply_match_scipy() -> None:
    a, b = random_quats(50, seed=6), random_quats(50, seed=7)
    ab = R.quat_mul(a, b)
    assert same_rotation(ab, (Rotation.from_quat(a) * Rotation.from_quat(b)).as_quat())
    v = np.random.default_rng(8).normal(size=(50, 3))
    assert np.allclose(R.quat_apply(a, v), Rotation.from_quat(a).apply(v))
    # "apply b, then a"
    assert np.allclose(R.quat_apply(ab, v), R.quat_apply(a, R.quat_apply(b, v)))
    # broadcasting over leading dimensions
    assert R.quat_mul(a[:, None], b[None, :5]).shape == (50, 5, 4)
    assert np.allclose(R.quat_mul(a, R.quat_conj(a)), R.quat_identity((50,)))


def test_slerp_endpoints_midpoint_and_shorter_arc() -> None:
    q0, q1 = random_quats(20, seed=9), random_quats(20, seed=10)
    assert same_rotation(R.quat_slerp(q0, q1, 0.0), q0)
    assert same_rotation(R.quat_slerp(q0, q1, 1.0), q1)
    total = R.quat_angle(q0, q1)
    mid = R.quat_slerp(q0, q1, 0.5)
    assert np.allclose(R.quat_angle(q0, mid), total / 2)
    assert np.allclose(R.quat_angle(mid, q1), total / 2)
    quarter = R.quat_slerp(q0, q1, np.full(20, 0.25))
    assert np.allclose(R.quat_angle(q0, quarter), total / 4)
    # -q1 is the same rotation: slerp takes the shorter arc either way
    assert same_rotation(R.quat_slerp(q0, -q1, 0.5), mid)
    # nearly equal rotations do not blow up
    eps = R.quat_mul(q0, R.axis_angle_to_quat(np.array([1e-9, 0.0, 0.0])))
    assert same_rotation(R.quat_slerp(q0, eps, 0.5), q0)


def test_slerp_about_one_axis_is_linear_in_angle() -> None:
    q0 = R.axis_angle_to_quat(np.array([0.0, 0.0, 0.2]))
    q1 = R.axis_angle_to_quat(np.array([0.0, 0.0, 1.4]))
    t = np.linspace(0, 1, 7)
    q = R.quat_slerp(q0[None], q1[None], t)
    assert np.allclose(R.quat_to_axis_angle(q), np.stack([0 * t, 0 * t, 0.2 + 1.2 * t], axis=-1))


def test_quat_continuous_removes_sign_flips() -> None:
    angles = np.linspace(0, 3 * np.pi, 100)
    smooth = R.axis_angle_to_quat(np.stack([0.3 * angles, angles, 0 * angles], -1))
    smooth = R.quat_continuous(smooth)
    signs = np.where(np.random.default_rng(11).random(100) < 0.5, -1.0, 1.0)
    signs[0] = 1.0
    flipped = smooth * signs[:, None]
    assert np.any(np.sum(flipped[1:] * flipped[:-1], -1) < 0)
    fixed = R.quat_continuous(flipped)
    assert np.all(np.sum(fixed[1:] * fixed[:-1], -1) > 0)
    assert np.allclose(fixed, smooth)
    # along another axis: (joints, time, 4)
    stacked = np.stack([flipped, -flipped])
    fixed2 = R.quat_continuous(stacked, axis=1)
    assert np.allclose(fixed2[0], smooth) and np.allclose(fixed2[1], -smooth)


@pytest.mark.parametrize("order", EULER_ORDERS)
@pytest.mark.parametrize("slot", [0, 1, 2])
def test_quat_to_euler_continuous_through_720_degrees(order: str, slot: int) -> None:
    axis = order[slot]
    angle = np.linspace(0.0, 720.0, 301)[1:] - 0.37  # steady turn, never exactly on 90-degree marks
    q = Rotation.from_euler(axis, angle[:, None], degrees=True).as_quat()
    plain = R.quat_to_euler(q, order)
    assert np.abs(np.diff(plain, axis=0)).max() >= 179.0  # without unwrapping it jumps
    e = R.quat_to_euler(q, order, continuous_axis=0)
    assert np.abs(np.diff(e, axis=0)).max() < 180.0
    assert same_rotation(R.euler_to_quat(e, order), q)
    # the turning angle is monotonic and covers the whole turn; the other two stay put
    d = np.diff(e[:, slot])
    assert np.all(d > 0) and e[-1, slot] - e[0, slot] == pytest.approx(angle[-1] - angle[0], abs=1e-6)
    others = [k for k in range(3) if k != slot]
    assert np.allclose(e[:, others], e[0, others], atol=1e-6)


def test_quat_to_euler_continuous_on_a_batch_axis() -> None:
    angle = np.linspace(-170, 530, 50)
    q = Rotation.from_euler("Z", angle[:, None], degrees=True).as_quat()
    e = R.quat_to_euler(np.stack([q, q], axis=1), "ZXY", continuous_axis=0)  # (time, joints, 3)
    assert np.allclose(e[:, 0, 0], angle) and np.allclose(e[:, 1, 0], angle)


def test_euler_make_continuous_picks_the_flipped_triple() -> None:
    order = "ZXY"
    prev = np.array([30.0, 85.0, -20.0])
    target = prev + np.array([1.0, 8.0, -1.0])  # the middle angle goes past 90
    # what a converter returns for `target`: the equivalent triple with the middle angle in [-90, 90]
    flipped = np.array([target[0] + 180.0, 180.0 - target[1], target[2] + 180.0])
    flipped = (flipped + 180.0) % 360.0 - 180.0
    assert same_rotation(R.euler_to_quat(flipped, order), R.euler_to_quat(target, order))
    assert abs(flipped[1]) <= 90.0
    out = R.euler_make_continuous(np.stack([prev, flipped]), order)
    assert np.allclose(out[0], prev)
    assert np.allclose(out[1], target)
    # 2*pi shifts alone: 179 -> -179 becomes 179 -> 181
    out = R.euler_make_continuous(np.array([[179.0, 10.0, 0.0], [-179.0, 10.0, 0.0]]), order)
    assert np.allclose(out[1], [181.0, 10.0, 0.0])
    # in radians
    out = R.euler_make_continuous(np.deg2rad(np.stack([prev, flipped])), order, degrees=False)
    assert np.allclose(np.rad2deg(out[1]), target)


def test_axis_angle_continuous_through_pi() -> None:
    axis = np.array([1.0, 2.0, -2.0]) / 3.0
    theta = np.linspace(0.1, 1.8 * np.pi, 200)
    q = np.concatenate([axis * np.sin(theta / 2)[:, None], np.cos(theta / 2)[:, None]], axis=-1)
    q = np.where(q[:, 3:] < 0, -q, q)  # the canonical hemisphere, as a converter would give it
    plain = R.quat_to_axis_angle(q)
    assert np.linalg.norm(plain, axis=-1).max() <= np.pi + 1e-9
    assert np.abs(np.diff(plain, axis=0)).max() > np.pi  # the axis flips when the angle passes pi
    cont = R.quat_to_axis_angle(q, continuous_axis=0)
    assert np.allclose(cont, axis * theta[:, None])
    assert np.abs(np.diff(cont, axis=0)).max() < 0.1
    assert same_rotation(R.axis_angle_to_quat(cont), q)


def test_mirror_x_is_m_r_m() -> None:
    q = random_quats(100, seed=12)
    m = np.diag([-1.0, 1.0, 1.0])
    expected = m @ Rotation.from_quat(q).as_matrix() @ m
    got = R.quat_to_matrix(R.quat_mirror_x(q))
    assert np.allclose(got, expected)
    # a mirrored rotation rotates mirrored vectors: (M R M)(M v) = M (R v)
    v = np.random.default_rng(13).normal(size=(100, 3))
    assert np.allclose(R.quat_apply(R.quat_mirror_x(q), v * [-1, 1, 1]), R.quat_apply(q, v) * [-1, 1, 1])
    # mirroring twice is the identity
    assert np.array_equal(R.quat_mirror_x(R.quat_mirror_x(q)), q)


def test_matrix_round_trip_and_shapes() -> None:
    q = random_quats(24, seed=14).reshape(2, 3, 4, 4)
    m = R.quat_to_matrix(q)
    assert m.shape == (2, 3, 4, 3, 3)
    assert same_rotation(R.matrix_to_quat(m), q)
    with pytest.raises(ValueError, match="trailing shape"):
        R.quat_to_matrix(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="zero quaternion"):
        R.quat_normalize(np.zeros(4))


def _continuous_one_by_one(angles, order, degrees=True):
    """The reference: each sample chooses among its 2*pi shifts and its flip after the previous one."""

    e = np.deg2rad(np.asarray(angles, dtype=np.float64)) if degrees else np.array(angles, dtype=np.float64)
    for i in range(1, e.shape[0]):
        prev = e[i - 1]
        a, b = R._wrap_near(e[i], prev), R._wrap_near(R._euler_flip(e[i]), prev)
        da = np.sum((a - prev) ** 2, axis=-1, keepdims=True)
        db = np.sum((b - prev) ** 2, axis=-1, keepdims=True)
        e[i] = np.where(db < da - 1e-9, b, a)
    return np.rad2deg(e) if degrees else e


@pytest.mark.parametrize("order", ["XYZ", "ZXY", "YZX"])
def test_vectorised_euler_unwrap_equals_the_sample_by_sample_one(order):
    rng = np.random.default_rng(7)
    # wild curves: big steps, near gimbal lock, through the flips, several curves side by side
    q = R.quat_normalize(np.cumsum(rng.normal(scale=0.4, size=(700, 3, 4)), axis=0))
    e = R.quat_to_euler(q, order)
    got = R.euler_make_continuous(e, order)
    assert np.abs(got - _continuous_one_by_one(e, order)).max() < 1e-9
    radians = R.quat_to_euler(q, order, degrees=False)
    assert np.abs(R.euler_make_continuous(radians, order, degrees=False)
                  - _continuous_one_by_one(radians, order, degrees=False)).max() < 1e-9
    moved = R.euler_make_continuous(np.moveaxis(e, 0, 1), order, axis=1)
    assert np.abs(np.moveaxis(moved, 1, 0) - got).max() < 1e-9
