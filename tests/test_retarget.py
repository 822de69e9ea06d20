"""The extension's retargeting maths (``addon/retarget.py``: numpy only, no Blender needed)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load():
    spec = importlib.util.spec_from_file_location("anyfill_addon_retarget", ROOT / "addon" / "retarget.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


rt = _load()


def _random_rotations(rng, shape):
    q = rng.normal(size=shape + (4,))
    return rt.quat_to_matrix(q / np.linalg.norm(q, axis=-1, keepdims=True))


def _card_model(name: str = "body") -> dict:
    """The shipped model's skeleton and habits, as ``/v1/models`` serves them."""
    card = json.loads((ROOT / "backend" / "models" / f"{name}.json").read_text())
    s = card["schema"]
    return {"name": name, "skeleton": name, "up_axis": "y", "conventions": s.get("conventions"),
            "joints": [{"name": n, "parent": s["joints"][p] if p >= 0 else None, "moving": j in s["moving"],
                        "rest_offset": s["rest_offsets"][j]} for j, (n, p) in enumerate(zip(s["joints"], s["parents"],
                                                                                          strict=True))]}


def _rig_from_model(model: dict, rng, extra_every: int = 3, hips_lift: float = 0.0):
    """A rig with the model's joints at 1.7x scale, an unmapped extra bone after every few joints (a Mixamo
    ``Spine1``), random bone rolls, the hips bone's head ``hips_lift`` rig units above where the model has it
    (its hip joints staying); returns (rig, mapping)."""
    names, parents, rest, tails = [], [], [], []
    index = {}
    positions = {}
    c = rt.axis_conversion("y")
    for k, j in enumerate(model["joints"]):
        p = index.get(j["parent"], -1)
        head = c @ np.asarray(j["rest_offset"]) * 1.7 + (positions[j["parent"]] if j["parent"] else 0.0)
        if p >= 0 and k % extra_every == 0:  # an extra bone halfway along the parent's bone
            mid = (head + rest[p][:3, 3]) / 2
            m = np.eye(4)
            m[:3, :3] = _random_rotations(rng, ())
            m[:3, 3] = mid
            names.append(f"extra_{j['name']}")
            parents.append(p)
            rest.append(m)
            tails.append(mid + m[:3, 1])
            p = len(names) - 1
        m = np.eye(4)
        m[:3, :3] = _random_rotations(rng, ())
        m[:3, 3] = head + (np.array([0.0, 0.0, hips_lift]) if j["name"] == "Hips" else 0.0)
        index[j["name"]] = len(names)
        positions[j["name"]] = head
        names.append(f"bone_{j['name']}")
        parents.append(p)
        rest.append(m)
        tails.append(head + m[:3, 1] * 5)
    rig = rt.Rig(names, np.array(parents), np.array(rest), np.array(tails), np.zeros(len(names), dtype=bool))
    return rig, {j["name"]: f"bone_{j['name']}" for j in model["joints"] if j["name"] != "joint_Root"}


def _random_basis(rig, rng, frames: int) -> np.ndarray:
    """Every bone turned at random on every frame, the hips moved about (``matrix_basis``, (F, N, 4, 4))."""
    basis = np.broadcast_to(np.eye(4), (frames, len(rig.names), 4, 4)).copy()
    basis[..., :3, :3] = _random_rotations(rng, (frames, len(rig.names)))
    basis[:, rig.index["bone_Hips"], :3, 3] = rng.normal(size=(frames, 3)) * 20
    return basis


@pytest.mark.parametrize("rest_mode,from_keys,hips_lift", [("MODEL", False, 0.0), ("REST", False, 0.0),
                                                           ("REST", True, 0.0), ("REST", True, 9.0)])
def test_rig_to_model_to_rig_gives_back_every_bone_world_matrix(rest_mode, from_keys, hips_lift):
    """With nothing filled, rig -> model -> rig returns every bone's world matrix, the unmapped bones animated
    and the rig lacking the model's root joint, whatever the rest-pose matching (twists fitted to the keys
    and interpolated between them included) and wherever the rig's hips bone sits above its hip joints."""
    rng = np.random.default_rng(0)
    model = _card_model()
    rig, mapping = _rig_from_model(model, rng, hips_lift=hips_lift)
    frames = 7
    basis = _random_basis(rig, rng, frames)
    pose = rig.pose(basis)
    numbers = np.arange(frames, dtype=float) * 3
    keys = [0, 3, 6]
    retargeting = rt.build(model, rig, mapping, rest_mode=rest_mode, poses=pose[keys] if from_keys else None,
                   key_frames=numbers[keys] if from_keys else None)
    assert (retargeting.key_twists is not None) == from_keys
    if from_keys:
        assert np.abs(retargeting.key_twists).max() > 0  # random poses are far from the data: the twists turn
    local, trans = retargeting.model_locals(pose, numbers)
    write = np.ones((frames, len(model["joints"])), dtype=bool)
    start = basis.copy()
    start[:, list(retargeting.mapped_bones)] = np.eye(4)  # what the mapped bones held before does not matter
    new = retargeting.solve_basis(local, trans, start, write, numbers)
    height = float(np.ptp(rig.heads[:, 2]))
    assert np.abs(rig.pose(new) - pose).max() < 1e-4 * height


def test_the_models_hip_joints_are_read_where_the_rigs_are():
    """A rig whose hips bone sits 9 units above its hip joints (the model's sits between them) is read with
    the model's hips moved so that the model's hip joints (their mean), and so its legs and feet, lie where
    the rig's do; on the model's own proportions nothing moves."""
    rng = np.random.default_rng(1)
    model = _card_model()
    for lift in (0.0, 9.0):
        rig, mapping = _rig_from_model(model, rng, extra_every=1000, hips_lift=lift)  # no bone between
        frames = 5
        pose = rig.pose(_random_basis(rig, rng, frames))
        hips = rig.index["bone_Hips"]
        ret = rt.build(model, rig, mapping, rest_mode="REST", poses=pose)
        g, pos = ret.model_globals(pose)
        j = ret.model.joints.index("Hips")
        head = pose[:, hips, :3, 3] @ ret.to_model.T / ret.scale
        moved = np.linalg.norm(pos[:, j] - ret.lift - head, axis=-1)  # the lift: see the floor test
        assert (moved.max() < 1e-9) if lift == 0.0 else (moved.min() > 1.0 and np.ptp(moved) < 1e-9)
        anchors = [ret.model.joints.index(name) for name in rt.ANCHORS]
        fk = pos[:, j] + np.einsum("fij,j->fi", g[:, j], ret.model.offsets[anchors].mean(axis=0))
        rig_joints = pose[:, [rig.index[f"bone_{name}"] for name in rt.ANCHORS]][..., :3, 3]
        assert np.abs(fk - ret.lift - rig_joints.mean(axis=1) @ ret.to_model.T / ret.scale).max() < 1e-6


def test_a_rigs_keyed_feet_are_read_on_the_models_floor():
    """Wherever a rig's author put its floor, its lowest keyed ankle is read where the training data's lowest
    ankles are (within the range of its clips' floors): the rig sunk 40 units or raised 25 is lifted or
    lowered onto it, a rig already on it is left where it is, and the lift is taken off on the way back."""
    rng = np.random.default_rng(2)
    model = _card_model()
    ground = model["conventions"]["ground"]
    rig, mapping = _rig_from_model(model, rng)
    frames = 4
    basis = np.broadcast_to(np.eye(4), (frames, len(rig.names), 4, 4)).copy()
    basis[..., :3, :3] = _random_rotations(rng, (frames, len(rig.names))) * 0.2 + np.eye(3) * 0.8
    basis[..., :3, :3] = rt.orthonormal(basis[..., :3, :3])  # poses near the rest
    basis[:, rig.index["bone_joint_Root"]] = np.eye(4)  # the hips' location below is in armature axes
    hips = rig.index["bone_Hips"]
    feet = [j for j, info in enumerate(model["joints"]) if info["name"] in ground["joints"]]
    probe = rt.build(model, rig, mapping, rest_mode="REST")  # no keyed poses: nothing lifted
    assert not probe.lift.any()
    standing = probe.model_positions(rig.pose(basis))[:, feet, 1].min()
    seen = {}
    for sink in (-40.0, -70.0, 25.0, (ground["height"] - standing) * probe.scale):
        basis[:, hips, :3, 3] = rig.rest[hips, :3, :3].T @ np.array([0.0, 0.0, sink])  # Blender's up: Z
        pose = rig.pose(basis)
        ret = rt.build(model, rig, mapping, rest_mode="REST", poses=pose)
        lowest = ret.model_positions(pose)[:, feet, 1].min()
        assert ground["low"] - 1e-9 <= lowest <= ground["high"] + 1e-9
        assert (np.abs(ret.lift).max() < 1e-9) == (abs(lowest - ground["height"]) < 1e-6)
        local, trans = ret.model_locals(pose)
        seen[sink] = local, trans
        new = ret.solve_basis(local, trans, basis.copy(), np.ones((frames, len(model["joints"])), dtype=bool))
        assert np.abs(rig.pose(new) - pose).max() < 1e-6
    # sunk 40 or 70 units, the model is sent the same motion
    assert all(np.abs(a - b).max() < 1e-9 for a, b in zip(seen[-40.0], seen[-70.0], strict=True))
    # a rig whose ankles are not mapped says nothing of its floor: read where it is
    footless = {j: b for j, b in mapping.items() if j not in ground["joints"]}
    assert not rt.build(model, rig, footless, rest_mode="REST", poses=rig.pose(basis)).lift.any()


def _habitual_locals(model: rt.ModelSkeleton, rng, keys: int) -> np.ndarray:
    """Local rotations (K, J, 4) wxyz as the training data holds them: each joint's mean turned by a draw from
    its spread."""
    out = np.empty((keys, len(model.joints), 4))
    for j, name in enumerate(model.joints):
        habit = model.conventions[name]
        v = rng.multivariate_normal(np.zeros(3), np.array(habit["spread"]), size=keys)
        angle = np.linalg.norm(v, axis=1)
        turn = np.concatenate([np.cos(angle / 2)[:, None], np.sin(angle / 2)[:, None] * rt.unit(v)], axis=1)
        out[:, j] = rt.quat_mul(np.broadcast_to(np.array(habit["mean_local"]), (keys, 4)), turn)
    return out


def test_a_rigs_conventions_are_found_when_its_short_bones_and_twists_are_fitted_together(monkeypatch):
    """A rig with random bone rolls, keyed in poses the training data holds, read with a matching pose estimated
    from its rest and its keys: with the short bones' offsets and the twists fitted together (alternating until
    they settle) the estimate lands within a few degrees of the true one on every joint; one round of each, as
    the twists and offsets were fitted before, leaves it tens of degrees off on the legs and forearms."""
    rng = np.random.default_rng(3)
    model = _card_model()
    rig, mapping = _rig_from_model(model, rng, extra_every=1000)
    skeleton = rt.ModelSkeleton.from_info(model)
    keys = 12
    local = _habitual_locals(skeleton, rng, keys)
    trans = np.zeros((keys, len(skeleton.joints), 3))
    trans[:, skeleton.joints.index("Hips")] = (0.0, 90.0, 0.0)
    truth = rt.build(model, rig, mapping, rest_mode="MODEL")  # the rig is the model's skeleton: M = 1
    basis = np.broadcast_to(np.eye(4), (keys, len(rig.names), 4, 4)).copy()
    pose = rig.pose(truth.solve_basis(local, trans, basis, np.ones((keys, len(skeleton.joints)), dtype=bool)))

    def error_deg(rounds: int) -> np.ndarray:
        monkeypatch.setattr(rt, "CONVENTION_ROUNDS", rounds)
        fitted = rt.build(model, rig, mapping, rest_mode="REST", poses=pose).match
        return np.degrees(rt.rotation_angle(np.swapaxes(truth.match, -1, -2) @ fitted))

    together, once = error_deg(8), error_deg(1)
    assert together.mean() < 8.0 and together.max() < 30.0, together
    assert once.mean() > 3 * together.mean(), (once.mean(), together.mean())


def test_twists_fitted_to_keys_bring_a_knee_back_onto_its_hinge():
    """A rig whose thigh bone is twisted against the data's habit at every key (the knee then bends about the
    wrong axis in the model's frame): the per-key twists turn it back, the knee's local rotation is then about
    the data's hinge axis, and no joint moves."""
    model = _card_model()
    rng = np.random.default_rng(2)
    rig, mapping = _rig_from_model(model, rng, extra_every=100)
    ret0 = rt.build(model, rig, mapping, rest_mode="REST")
    ms = ret0.model
    knee, thigh = ms.joints.index("LowerLeg_L"), ms.joints.index("UpperLeg_L")
    hinge = np.array(ms.conventions["LowerLeg_L"]["hinge"]["axis"])
    # model poses: the data's mean pose with the knee bent about its hinge, the thigh twisted 40 degrees
    k = 4
    local = np.tile(np.array([ms.conventions[n]["mean_local"] for n in ms.joints]), (k, 1, 1))
    bends = np.radians([20.0, 45.0, 70.0, 30.0])
    local[:, knee] = rt.matrix_to_quat(rt.axis_rotations(hinge, bends))
    twist = rt.axis_rotations(np.array(ms.conventions["UpperLeg_L"]["axis"]), np.full(k, np.radians(40.0)))
    local[:, thigh] = rt.matrix_to_quat(rt.quat_to_matrix(local[:, thigh]) @ twist)
    local[:, knee] = rt.matrix_to_quat(twist.transpose(0, 2, 1) @ rt.quat_to_matrix(local[:, knee]))
    trans = np.zeros((k, len(ms.joints), 3))
    trans[:, 1] = [0.0, 90.0, 0.0]
    basis = np.broadcast_to(np.eye(4), (k, len(rig.names), 4, 4)).copy()
    basis = ret0.solve_basis(local, trans, basis, np.ones((k, len(ms.joints)), dtype=bool))
    pose = rig.pose(basis)
    frames = np.arange(k, dtype=float) * 10
    retargeting = rt.build(model, rig, mapping, rest_mode="REST", poses=pose, key_frames=frames)
    got, _ = retargeting.model_locals(pose, frames)
    axis = rt.rotvecs(rt.quat_to_matrix(got[:, knee]))
    off = np.linalg.norm(np.cross(rt.unit(axis), hinge), axis=-1)
    before = rt.rotvecs(rt.quat_to_matrix(ret0.model_locals(pose)[0][:, knee]))
    assert off.max() < np.sin(np.radians(8.0)) < np.linalg.norm(np.cross(rt.unit(before), hinge), axis=-1).min()
    # and positions are untouched: reading back through the fitted twists gives the same rig
    everything = np.ones((k, len(ms.joints)), dtype=bool)
    new = retargeting.solve_basis(got, retargeting.model_locals(pose, frames)[1], basis, everything, frames)
    assert np.abs(rig.pose(new) - pose).max() < 1e-6 * float(np.ptp(rig.heads[:, 2]))


def test_rest_matching_points_each_bone_where_the_rig_points():
    """REST matching: the model's bone directions in the matching pose are the rig's rest bone directions."""
    rng = np.random.default_rng(1)
    model = _card_model()
    rig, mapping = _rig_from_model(model, rng, extra_every=100)
    # bend the rig's rest: the arms down (an A-pose) by moving the heads below the shoulders
    retargeting = rt.build(model, rig, mapping, rest_mode="REST")
    assert retargeting.rest_mode == "REST"
    ms = retargeting.model
    for j, name in enumerate(ms.joints):
        kids = [k for k in ms.children(j) if ms.joints[k] in mapping and np.linalg.norm(ms.offsets[k]) > 1e-9]
        if name not in mapping or len(kids) != 1:
            continue
        k = kids[0]
        heads = {n: rig.heads[rig.index[b]] for n, b in mapping.items()}
        want = rt.unit(retargeting.to_model @ (heads[ms.joints[k]] - heads[name]))
        got = rt.unit(retargeting.match[j] @ ms.offsets[k])
        assert np.dot(want, got) > 1 - 1e-6, name
    assert retargeting.scale == pytest.approx(1.7, rel=1e-6)


def _hand_rig(model: dict, positions: np.ndarray, names: list[str], rng, mirror: bool = False):
    """A hand rig whose joints stand at ``positions`` (model axes, J x 3; mirrored through x), random bone
    rolls, bones named ``names``."""
    c = rt.axis_conversion("y")
    heads = positions @ c.T * (np.array([-1.0, 1.0, 1.0]) if mirror else 1.0)
    rest = np.tile(np.eye(4), (len(names), 1, 1))
    rest[:, :3, :3] = _random_rotations(rng, (len(names),))
    rest[:, :3, 3] = heads
    parents = np.array([model["joints"].index(next(j for j in model["joints"] if j["name"] == k["parent"]))
                        if k["parent"] else -1 for k in model["joints"]])
    return rt.Rig(names, parents, rest, heads + rest[:, :3, 1], np.zeros(len(names), dtype=bool))


def test_a_hands_side_is_judged_where_the_thumb_is_off_the_palm():
    """ManipNet's rest holds the thumb about in the palm's plane, on the back's side of it, so a rig modelled
    as the hand the data is (thumb on the palm's side, as in the data's habit) must not be taken for the other
    hand; its mirror image is the other hand. A rig of the model's own skeleton is compared rest to rest."""
    rng = np.random.default_rng(3)
    model = _card_model("hand")
    ms = rt.ModelSkeleton.from_info(model)
    joints = [j["name"] for j in model["joints"]]
    foreign = [f"bone_{j}" for j in joints]
    mapping = dict(zip(joints, foreign, strict=True))
    for mirror in (False, True):
        rig = _hand_rig(model, ms.habit_positions(), foreign, rng, mirror)
        assert rt.build(model, rig, mapping).mirrored == mirror
        own = _hand_rig(model, ms.rest_positions(), joints, rng, mirror)
        assert rt.build(model, own, {j: j for j in joints}).mirrored == mirror


def test_a_hand_whose_rest_does_not_tell_its_side_is_judged_on_its_keys_then_its_names():
    """A rig modelled on ManipNet's rest (the thumb about in the palm's plane) under other bone names is matched From
    Rig Rest, not rest to rest, and its rest does not tell its side (read against the data's habit it said the other
    hand): its keyed poses do (here the data's habit, held as the model's hand or as its mirror image), whatever its
    names say; with no keyed pose to tell, its names' side (a left hand as the model's, a right one mirrored)."""
    rng = np.random.default_rng(5)
    model = _card_model("hand")
    ms = rt.ModelSkeleton.from_info(model)
    joints = [j["name"] for j in model["joints"]]
    foreign = [f"bone_{j}" for j in joints]
    mapping = dict(zip(joints, foreign, strict=True))
    for mirror in (False, True):
        rig = _hand_rig(model, ms.rest_positions(), foreign, rng, mirror)
        poses = np.tile(np.eye(4), (1, len(joints), 1, 1))
        poses[0, :, :3, 3] = ms.habit_positions() @ rt.axis_conversion("y").T * ([-1.0, 1.0, 1.0] if mirror else 1.0)
        for side in ("L", "R", ""):
            assert rt.build(model, rig, mapping, poses=poses, side=side).mirrored == mirror, (mirror, side)
        assert rt.build(model, rig, mapping, side="R").mirrored and not rt.build(model, rig, mapping, side="L").mirrored


@pytest.mark.parametrize("order", ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"])
def test_euler_angles_turn_as_blender_reads_them(order):
    """Blender's Euler order 'XYZ' applies X first (R = Rz Ry Rx): scipy's extrinsic rotation of the same order."""
    from scipy.spatial.transform import Rotation

    angles = np.random.default_rng(1).uniform(-7, 7, size=(40, 3, 3))  # (frames, bones, xyz)
    got = rt.euler_to_matrix(angles, order)
    extrinsic = order.lower()
    want = Rotation.from_euler(extrinsic, angles.reshape(-1, 3)[:, ["XYZ".index(a) for a in order]]).as_matrix()
    assert got.shape == (40, 3, 3, 3)
    assert np.allclose(got.reshape(-1, 3, 3), want, atol=1e-12)
    assert np.allclose(rt.euler_to_matrix(angles[0, 0], order), want[0], atol=1e-12)  # one triple


def test_rotation_helpers_agree_with_scipy_and_plain_products():
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    wxyz = [1, 2, 3, 0]  # scipy's xyzw from wxyz
    want = (Rotation.from_quat(a[:, wxyz]) * Rotation.from_quat(b[:, wxyz])).as_matrix()
    assert np.allclose(rt.quat_to_matrix(rt.quat_mul(a, b)), want, atol=1e-12)
    assert rt.quat_mul(a[0], b).shape == (30, 4) and rt.quat_mul(a[:, None], b[None]).shape == (30, 30, 4)
    assert np.allclose(rt.quat_to_matrix(a), Rotation.from_quat(a[:, wxyz]).as_matrix(), atol=1e-12)
    stack, one = rng.normal(size=(7, 5, 3, 3)), rng.normal(size=(3, 3))
    assert np.allclose(rt.rmul(stack, one), stack @ one, atol=1e-12)
    assert np.allclose(rt.lmul(one, stack), one @ stack, atol=1e-12)


def test_orthonormal_gives_the_same_rotation_for_few_matrices_and_for_many():
    """A handful of matrices take the SVD, many the Newton iteration: the same nearest rotation, mirrors too."""
    rng = np.random.default_rng(3)
    m = _random_rotations(rng, (40,)) * rng.uniform(0.5, 2.0, size=(40, 1, 3)) + 0.05 * rng.normal(size=(40, 3, 3))
    m[:3] = m[:3] @ np.diag([1.0, 1.0, -1.0])  # mirroring matrices
    many = rt.orthonormal(m)
    few = np.stack([rt.orthonormal(x) for x in m])
    assert np.allclose(many, few, atol=1e-9)
    assert np.allclose(np.linalg.det(many), 1.0) and np.allclose(many @ np.swapaxes(many, 1, 2), np.eye(3), atol=1e-9)
