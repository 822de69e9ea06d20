"""Rig conventions as an augmentation and a bench perturbation: twists that move no joint position."""

import numpy as np
import pytest

from training.inbetween.datasets import RigConventions, WindowSampler
from training.motion.clip import Clip
from training.motion.conventions import BENCH_TWISTS, GROUND_JOINTS, apply_twists, ground, random_twists, twist_joints
from training.motion.rotations import quat_angle, quat_normalize
from training.motion.skeleton import forward_kinematics, get_schema


def _motion(schema, n=3, t=20, seed=0):
    rng = np.random.default_rng(seed)
    offsets = rng.normal(size=(schema.n_joints, 3)) * 10
    rot = quat_normalize(rng.normal(size=(n, t, schema.n_joints, 4)))
    trans = np.broadcast_to(offsets, (n, t, schema.n_joints, 3)).copy()
    trans[..., list(schema.moving), :] += rng.normal(size=(n, t, len(schema.moving), 3))
    return rot, trans


@pytest.mark.parametrize("skeleton", ["body", "hand"])
def test_twists_move_no_joint_and_turn_each_joint_about_its_bone_by_its_angle(skeleton):
    schema = get_schema(skeleton)
    rot, trans = _motion(schema)
    angles = random_twists(np.random.default_rng(1), rot.shape[0], schema, 45.0, 15.0)
    assert np.abs(angles).max() > 0
    new_rot, new_trans = apply_twists(rot, trans, angles, schema)
    g0, p0 = forward_kinematics(rot, trans, schema.parents)
    g1, p1 = forward_kinematics(new_rot, new_trans, schema.parents)
    assert np.abs(p1 - p0).max() < 1e-9 * max(1.0, np.abs(p0).max())
    # each global rotation differs from the original by exactly its joint's (constant) twist angle
    np.testing.assert_allclose(quat_angle(g0, g1), np.broadcast_to(np.abs(angles)[:, None], g0.shape[:-1]), atol=1e-7)
    # moving joints and joints with several children keep their rotations
    limit, _ = twist_joints(schema, 45.0, 15.0)
    np.testing.assert_allclose(quat_angle(g0, g1)[..., limit == 0], 0.0, atol=1e-7)


def test_a_knee_stays_a_hinge_about_a_tilted_axis():
    schema = get_schema("body")
    thigh, knee = schema.index("UpperLeg_L"), schema.index("LowerLeg_L")
    t = 30
    rot = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (1, t, schema.n_joints, 1))
    bend = np.linspace(0.0, 1.5, t)  # a knee bending about its hinge (the shin's y axis, as in Bandai)
    rot[0, :, knee] = np.stack([np.zeros(t), np.sin(bend / 2), np.zeros(t), np.cos(bend / 2)], -1)
    trans = np.zeros((1, t, schema.n_joints, 3))
    trans[..., 1:, 0] = 10.0  # every bone along its parent's x axis
    angles = random_twists(np.random.default_rng(3), 1, schema, 0.0, 15.0, full=True)
    assert abs(abs(np.degrees(angles[0, thigh])) - 15.0) < 1e-9 and angles[0, thigh] == angles[0, knee]
    new_rot, _ = apply_twists(rot, trans, angles, schema)
    q = new_rot[0, :, knee]
    axis = q[1:, :3] / np.linalg.norm(q[1:, :3], axis=-1, keepdims=True)
    np.testing.assert_allclose(axis, np.broadcast_to(axis[0], axis.shape), atol=1e-9)  # one axis: a hinge
    tilt = np.degrees(np.arccos(abs(axis[0, 1])))
    assert abs(tilt - 15.0) < 1e-6


def test_twists_are_seeded_and_the_bench_set_turns_only_its_joints():
    schema = get_schema("body")
    a = random_twists(np.random.default_rng(7), 5, schema, 45.0, 15.0, joints=BENCH_TWISTS["body"], full=True)
    b = random_twists(np.random.default_rng(7), 5, schema, 45.0, 15.0, joints=BENCH_TWISTS["body"], full=True)
    np.testing.assert_array_equal(a, b)
    turned = {schema.joints[j] for j in np.flatnonzero(np.abs(a).max(0) > 0)}
    assert turned == set(BENCH_TWISTS["body"]) | {"UpperLeg_L", "LowerLeg_L", "UpperLeg_R", "LowerLeg_R"}
    deg = np.degrees(np.abs(a))
    assert set(np.round(deg[deg > 0], 9)) == {45.0, 15.0}
    none = random_twists(np.random.default_rng(7), 50, schema, 45.0, 15.0, share=0.0)
    assert not none.any()


def test_the_sampler_turns_windows_seeded_and_only_when_asked():
    schema = get_schema("body")
    rot, trans = _motion(schema, n=2, t=80)
    clips = [Clip(schema, 30.0, rot[i], trans[i], name=str(i)) for i in range(2)]
    plain = WindowSampler(clips, 65)
    turned = WindowSampler(clips, 65, conventions=RigConventions(45.0, 15.0))
    r0, t0, _ = plain.windows(np.random.default_rng(5), 8)
    r1, t1, _ = turned.windows(np.random.default_rng(5), 8)
    r2, t2, _ = turned.windows(np.random.default_rng(5), 8)
    np.testing.assert_array_equal(r1, r2)
    np.testing.assert_array_equal(t1, t2)
    assert quat_angle(r0, r1).max() > 0.1  # the same windows, turned
    _, p0 = forward_kinematics(r0, t0, schema.parents)
    _, p1 = forward_kinematics(r1, t1, schema.parents)
    assert np.abs(p1 - p0).max() < 1e-9
    # the root's rotation (the canonical frame) is untouched
    np.testing.assert_allclose(quat_angle(r0[..., schema.root, :], r1[..., schema.root, :]), 0.0, atol=1e-6)


def test_the_ground_is_the_range_of_each_clips_lowest_ankle():
    """A body's ``ground``: each clip's lowest ankle height (either ankle, any frame), their median and range."""
    schema = get_schema("body")
    feet = [schema.index(n) for n in GROUND_JOINTS["body"]]
    clips = []
    for low in (11.0, 12.5, 11.5):
        pos = np.random.default_rng(int(low * 10)).uniform(20.0, 90.0, size=(30, schema.n_joints, 3))
        pos[17, feet[1], 1] = low
        clips.append(pos)
    g = ground(schema, clips)
    assert g == {"joints": list(GROUND_JOINTS["body"]), "height": 11.5, "low": 11.0, "high": 12.5}
