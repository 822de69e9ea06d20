"""Skeleton schemas, forward kinematics, mirroring, resampling and the protocol frame rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from training.motion import bvh, clip, skeleton, windows
from training.motion.rotations import quat_angle, quat_mirror_x

LEFT_HAND = "manipnet/teapot3/leftHand.bvh"
RIGHT_HAND = "manipnet/teapot3/rightHand.bvh"
BODY_FILE = "bandai/dataset-1/dataset-1_walk-back_angry_001.bvh"


def q_axis(axis: str, deg: float) -> np.ndarray:
    return Rotation.from_euler(axis, deg, degrees=True).as_quat()


def test_forward_kinematics_three_joint_chain_by_hand() -> None:
    parents = (-1, 0, 1)
    rot = np.stack([q_axis("z", 90), q_axis("x", 90), q_axis("y", 30)])
    trans = np.array([[1.0, 2.0, 3.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    g_rot, g_pos = skeleton.forward_kinematics(rot, trans, parents)
    # root at its translation; Rz(90) takes x to y, so joint 1 is one unit along +y from the root;
    # Rz(90) Rx(90) takes y to z (Rx: y -> z, then Rz leaves z alone): joint 2 is one unit above joint 1
    assert np.allclose(g_pos, [[1.0, 2.0, 3.0], [1.0, 3.0, 3.0], [1.0, 3.0, 4.0]])
    rz, rx, ry = (Rotation.from_quat(q) for q in rot)
    assert quat_angle(g_rot[0], rz.as_quat()) < 1e-12
    assert quat_angle(g_rot[1], (rz * rx).as_quat()) < 1e-12
    assert quat_angle(g_rot[2], (rz * rx * ry).as_quat()) < 1e-12
    # leading (frames) dimensions broadcast, frame by frame
    rot2 = np.stack([rot, np.tile([0.0, 0.0, 0.0, 1.0], (3, 1))])
    g_rot2, g_pos2 = skeleton.forward_kinematics(rot2, np.stack([trans, trans]), parents)
    assert np.allclose(g_pos2[0], g_pos)
    assert np.allclose(g_pos2[1], [[1.0, 2.0, 3.0], [2.0, 2.0, 3.0], [2.0, 3.0, 3.0]])


def test_forward_kinematics_rejects_unordered_parents() -> None:
    with pytest.raises(ValueError, match="parents must come before"):
        skeleton.forward_kinematics(np.zeros((2, 4)) + [0, 0, 0, 1], np.zeros((2, 3)), (1, -1))


def test_schemas() -> None:
    hand, body = skeleton.get_schema("hand"), skeleton.get_schema("body")
    assert hand.n_joints == 17 and body.n_joints == 22
    for s in (hand, body):
        skeleton.check_topological(s.parents)
        assert len(s.parents) == s.n_joints and s.parents[0] == -1
        assert sum(p < 0 for p in s.parents) == 1
    assert body.joints[body.root] == "Hips" and hand.joints[hand.root] == "WRIST"
    assert body.index("Toes_R") == 21 and body.parents[body.index("UpperLeg_L")] == body.index("Hips")
    assert [hand.joints[c] for c in hand.children()[0]] == [
        "THUMB_CMC_FE",
        "INDEX_MCP",
        "MIDDLE_MCP",
        "RING_MCP",
        "PINKY_MCP",
    ]
    with pytest.raises(KeyError, match="unknown skeleton"):
        skeleton.get_schema("tail")
    with pytest.raises(KeyError, match="unknown joint"):
        body.index("Tail")


@pytest.mark.data
@pytest.mark.parametrize(("rel", "schema", "n_joints"), [(LEFT_HAND, "hand", 17), (BODY_FILE, "body", 22)])
def test_load_real_file_into_schema(data_root: Path, rel: str, schema: str, n_joints: int) -> None:
    c = clip.load(data_root / rel, schema)
    raw = bvh.read(data_root / rel)
    assert c.schema.n_joints == n_joints and c.n_frames == raw.n_frames
    assert c.rotations.shape == (raw.n_frames, n_joints, 4) and c.translations.shape == (raw.n_frames, n_joints, 3)
    assert c.fps == pytest.approx(raw.fps)
    assert np.allclose(np.linalg.norm(c.rotations, axis=-1), 1.0)
    assert np.all(np.sum(c.rotations[1:] * c.rotations[:-1], axis=-1) > 0)  # hemisphere-continuous
    # joint by joint, the clip holds the file's rotations and translations in schema order
    order = [raw.names.index(n) for n in c.schema.joints]
    assert quat_angle(c.rotations, raw.local_rotations()[:, order]).max() < 1e-6
    assert np.array_equal(c.translations, raw.local_translations()[:, order])
    # FK of the clip equals FK of the file
    _, pos = c.fk()
    _, raw_pos = skeleton.forward_kinematics(raw.local_rotations(), raw.local_translations(), raw.parents)
    assert np.allclose(pos, raw_pos[:, order])


@pytest.mark.data
def test_schema_mismatch(data_root: Path) -> None:
    with pytest.raises(clip.SchemaMismatch, match="missing joints"):
        clip.load(data_root / LEFT_HAND, "body")
    with pytest.raises(clip.SchemaMismatch, match="missing joints"):
        clip.load(data_root / BODY_FILE, "hand")


@pytest.mark.data
def test_clip_to_bvh_round_trip(data_root: Path) -> None:
    raw = bvh.read(data_root / BODY_FILE)
    c = clip.from_bvh(raw, "body")
    out = clip.to_bvh(c, raw)
    assert out.channels == raw.channels and out.fps == pytest.approx(raw.fps)
    again = clip.from_bvh(bvh.parse(bvh.dumps(out)), "body")
    assert quat_angle(again.rotations, c.rotations).max() < 1e-6
    assert np.allclose(again.translations, c.translations)


@pytest.mark.data
def test_mirrored_left_hand_fk_is_x_negated(data_root: Path) -> None:
    left = clip.load(data_root / LEFT_HAND, "hand").frames(slice(0, 600))
    g_rot, g_pos = left.fk()
    m_rot, m_pos = left.mirrored().fk()
    assert np.allclose(m_pos, g_pos * [-1.0, 1.0, 1.0])
    assert quat_angle(m_rot, quat_mirror_x(g_rot)).max() < 1e-6
    assert not np.allclose(m_pos, g_pos)  # the hand is not symmetric: the test can fail
    # ManipNet's right hand is the mirror image of the left: same bone offsets with x negated
    right = clip.load(data_root / RIGHT_HAND, "hand")
    assert np.allclose(left.mirrored().offsets[1:], right.offsets[1:], atol=1e-9)


@pytest.mark.data
def test_resample_real_clip(data_root: Path) -> None:
    c = clip.load(data_root / BODY_FILE, "body")
    assert c.fps == pytest.approx(30.0, rel=1e-4)
    for fps in (24.0, 50.0):
        r = clip.resample(c, fps)
        duration = (c.n_frames - 1) / c.fps
        assert r.n_frames == int(np.floor(duration * fps + 1e-6)) + 1
        assert r.fps == fps
        assert np.allclose(r.rotations[0], c.rotations[0], atol=1e-12, rtol=0)  # slerp renormalises
        assert np.array_equal(r.translations[0], c.translations[0])
        # a frame at a time that falls between two source frames is interpolated between them
        k = 7
        src = k * c.fps / fps
        i0, w = int(np.floor(src)), src - np.floor(src)
        lerp = c.translations[i0] * (1 - w) + c.translations[i0 + 1] * w
        assert np.allclose(r.translations[k], lerp)
        a, b = quat_angle(r.rotations[k], c.rotations[i0]), quat_angle(r.rotations[k], c.rotations[i0 + 1])
        assert np.allclose(a + b, quat_angle(c.rotations[i0], c.rotations[i0 + 1]), atol=1e-6)
    # resampling at the clip's own rate is the identity
    same = clip.resample(c, c.fps)
    assert same.n_frames == c.n_frames
    assert np.allclose(same.rotations, c.rotations, atol=1e-12)
    assert np.allclose(same.translations, c.translations, atol=1e-12)
    with pytest.raises(ValueError, match="positive"):
        clip.resample(c, 0.0)


@pytest.mark.data
def test_resample_120_to_30_takes_every_fourth_frame(data_root: Path) -> None:
    c = clip.load(data_root / LEFT_HAND, "hand").frames(slice(0, 401))
    r = clip.resample(c, 30.0)
    assert r.n_frames == 101
    assert quat_angle(r.rotations, c.rotations[::4]).max() < 1e-6
    assert np.allclose(r.translations, c.translations[::4])


@pytest.mark.data
def test_at_protocol_rate_decimates_120_fps_hand(data_root: Path) -> None:
    c = clip.load(data_root / LEFT_HAND, "hand")
    assert c.fps == pytest.approx(120.0, rel=1e-6)
    phases = windows.at_protocol_rate(c)
    assert len(phases) == 4
    for k, p in enumerate(phases):
        assert p.fps == pytest.approx(30.0, rel=1e-6)
        assert p.n_frames == len(range(k, c.n_frames, 4))
        assert np.array_equal(p.rotations, c.rotations[k::4])
        assert np.array_equal(p.translations, c.translations[k::4])
    # a 30 fps body clip is already at the protocol rate: one clip, unchanged
    b = clip.load(data_root / BODY_FILE, "body")
    (only,) = windows.at_protocol_rate(b)
    assert only.n_frames == b.n_frames and np.array_equal(only.rotations, b.rotations)
    # any other rate is resampled
    (r,) = windows.at_protocol_rate(clip.resample(b, 25.0))
    assert r.fps == 30.0
