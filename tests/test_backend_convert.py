"""Rotation formats of the API: conversions both ways, the Euler naming conventions, and continuity of
returned curves (anchored on the known values)."""

from __future__ import annotations

import numpy as np
import pytest

from backend import convert
from backend.schemas import FillRequest
from training.motion.rotations import axis_angle_to_quat, quat_angle, quat_normalize

ORDERS = ("XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX")


def fmt(**d):
    return FillRequest.model_validate({"model": "x", "fps": 30, "frames": [0], "joints": {"a": {}},
                                       "rotation_format": d}).rotation_format


def _curve(n: int = 200, turns: float = 2.0) -> np.ndarray:
    """A rotation about a tilted axis through ``turns`` full turns: wraps every representation."""
    axis = np.array([0.3, 0.2, 0.93])
    axis /= np.linalg.norm(axis)
    return axis_angle_to_quat(np.linspace(0, turns * 2 * np.pi, n)[:, None] * axis)


ALL = ([fmt(type="quaternion", layout=lay) for lay in ("wxyz", "xyzw")]
       + [fmt(type="euler", order=o, convention=c) for o in ORDERS for c in ("blender", "bvh")]
       + [fmt(type="axis_angle"), fmt(type="rotation_vector", units="degrees")])


@pytest.mark.parametrize("f", ALL, ids=lambda f: f.model_dump_json())
def test_round_trip_and_continuity(f):
    # axis-angle can only be continuous within one turn (past 360 degrees the axis flips)
    q = _curve(turns=0.95 if f.type in ("axis_angle", "rotation_vector") else 2.0)
    known = np.zeros(len(q), dtype=bool)
    known[[0, 120]] = True
    given = np.full((len(q), convert.width(f)), np.nan)
    raw = convert.encode_track(q, f, given, np.zeros(len(q), dtype=bool))
    given[known] = raw[known]
    v = convert.encode_track(q, f, given, known)
    np.testing.assert_array_equal(v[known], given[known])
    assert quat_angle(convert.to_quat(v, f), q).max() < 1e-6
    step = np.abs(np.diff(v, axis=0)).max()
    limit = {"quaternion": 0.2, "euler": 90.0, "axis_angle": 0.3, "rotation_vector": 30.0}[f.type]  # wraps: 180+
    assert step < limit, f"jump of {step} in a smooth curve"


@pytest.mark.parametrize("units, scale", [("radians", 1.0), ("degrees", 180.0 / np.pi)])
def test_axis_angle_keys_with_a_negative_angle_are_continued_as_sent(units, scale):
    """-90 degrees about +X is +90 about -X: the frames between two such keys continue the keys' own sign, so no
    channel flips at a key (they came back as +90 about -X: the angle and every axis channel jumped)."""
    f = fmt(type="axis_angle", units=units)
    n = 11
    q = axis_angle_to_quat(np.linspace(-np.pi / 2, -np.pi / 3, n)[:, None] * np.array([1.0, 0.0, 0.0]))
    given = np.full((n, 4), np.nan)
    known = np.zeros(n, dtype=bool)
    known[[0, n - 1]] = True
    given[0] = [-np.pi / 2 * scale, 1.0, 0.0, 0.0]
    given[-1] = [-np.pi / 3 * scale, 1.0, 0.0, 0.0]
    v = convert.encode_track(q, f, given, known)
    np.testing.assert_array_equal(v[known], given[known])
    assert quat_angle(convert.to_quat(v, f), q).max() < 1e-6
    assert (v[:, 0] < 0).all() and (v[:, 1] > 0.99).all(), v
    assert np.abs(np.diff(v, axis=0)).max() < 0.1 * scale


def test_anchor_keeps_the_given_branch():
    """A known Euler value 2*pi away from scipy's branch: the fill continues from it, not from scipy's."""
    f = fmt(type="euler", order="XYZ")
    q = _curve(20, turns=0.1)
    given = np.full((20, 3), np.nan)
    known = np.zeros(20, dtype=bool)
    known[0] = True
    given[0] = convert.encode_track(q[:1], f, given[:1], np.zeros(1, dtype=bool))[0] + [360.0, -360.0, 720.0]
    v = convert.encode_track(q, f, given, known)
    assert np.abs(v[1] - v[0]).max() < 10
    qf = fmt(type="quaternion")
    gq = np.full((20, 4), np.nan)
    gq[0] = -convert.encode_track(q[:1], qf, gq[:1], np.zeros(1, dtype=bool))[0]  # the other hemisphere
    vq = convert.encode_track(q, qf, gq, known)
    assert np.dot(vq[0], vq[1]) > 0.9


def test_blender_and_bvh_naming():
    """Blender's rotation_mode names the axes in the order they apply: 'XYZ' is BVH/intrinsic 'ZYX'."""
    rng = np.random.default_rng(0)
    xyz = rng.uniform(-170, 170, size=(10, 3))
    for order in ORDERS:
        a = convert.to_quat(xyz, fmt(type="euler", order=order))
        b = convert.to_quat(xyz, fmt(type="euler", order=order[::-1], convention="bvh"))
        assert quat_angle(a, b).max() < 1e-6


@pytest.mark.blender
def test_matches_blender_mathutils():
    pytest.importorskip("bpy", reason="the bpy wheel (Blender's mathutils) is not installed")
    import mathutils
    rng = np.random.default_rng(1)
    for order in ORDERS:
        for x, y, z in rng.uniform(-3, 3, size=(5, 3)):
            want = mathutils.Euler((x, y, z), order).to_quaternion()  # (w, x, y, z)
            got = convert.to_quat(np.array([[x, y, z]]), fmt(type="euler", order=order, units="radians"))
            assert quat_angle(got[0], np.array([want.x, want.y, want.z, want.w])) < 1e-3  # mathutils is float32
            aa = want.to_axis_angle()
            got = convert.to_quat(np.array([[aa[1], *aa[0]]]), fmt(type="axis_angle"))
            assert quat_angle(got[0], np.array([want.x, want.y, want.z, want.w])) < 1e-3  # mathutils is float32


def test_quaternion_policy():
    f = fmt(type="quaternion")
    with pytest.raises(convert.BadValue) as e:
        convert.to_quat(np.array([[1.0, 0, 0, 0], [1.1, 0, 0, 0]]), f)
    assert e.value.row == 1 and "norm" in str(e.value)
    np.testing.assert_allclose(convert.to_quat(np.array([[2.0, 0, 0, 0]]), f, normalize=True), [[0, 0, 0, 1.0]])
    with pytest.raises(convert.BadValue):
        convert.to_quat(np.array([[0.0, 0, 0, 0]]), f, normalize=True)
    np.testing.assert_allclose(convert.to_quat(np.array([[1.0005, 0, 0, 0]]), f), [[0, 0, 0, 1.0]])


def _stretch_by_stretch(q, fmt, given, known):
    """The reference: each stretch of unknown rows on its own, continuing from the known row before it
    (after it, for a leading stretch)."""
    t = len(known)
    out = np.where(known.reshape((t,) + (1,) * (given.ndim - 1)), given, np.nan)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (~known).astype(int), [0]])))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        if a > 0:
            rows = np.arange(a - 1, b)
        elif b < t:
            rows = np.arange(b, -1, -1)
        else:
            rows = np.arange(0, b)
        k = known[rows]
        out[rows[~k]] = convert._continue(fmt, given[rows], q[rows], k)[~k]
    return out


@pytest.mark.parametrize("spec", [{"type": "euler", "order": "XYZ"},
                                  {"type": "euler", "order": "ZXY", "units": "radians"}, {"type": "quaternion"},
                                  {"type": "axis_angle"}, {"type": "rotation_vector"}],
                         ids=["euler-deg", "euler-rad", "quaternion", "axis-angle", "rotation-vector"])
def test_a_whole_track_is_made_continuous_in_one_pass_as_stretch_by_stretch(spec):
    f = fmt(**spec)
    rng = np.random.default_rng(3)
    for share in (0.0, 0.1, 0.5, 0.9):
        t = 90
        q = quat_normalize(np.cumsum(rng.normal(scale=0.5, size=(t, 3, 4)), axis=0))
        q[[5, 6, 40]] = [0.0, 0.0, 0.0, 1.0]  # zero angles: no axis of their own
        known = rng.random(t) < share
        gq = quat_normalize(np.cumsum(rng.normal(scale=0.5, size=(t, 3, 4)), axis=0))
        given = convert._continue(f, np.zeros((t, 3, convert.width(f))), gq, np.zeros(t, dtype=bool))
        given[~known] = np.nan
        got = convert.encode_track(q, f, given, known)
        # to rounding: NumPy's vectorised trigonometry may round the last bit differently with another memory
        # layout (seen once in a full test run); a wrong branch or sign is a whole turn away
        assert np.allclose(got, _stretch_by_stretch(q, f, given, known), rtol=0.0, atol=1e-12, equal_nan=True)


def test_a_request_without_joint_root_gets_the_root_as_its_world_path():
    """A body request that leaves joint_Root out: it is keyed at rest on the keyed frames only (as in training), the
    model moves it between them, and the answer's Hips is that motion composed into the Hips' own: the figure's
    world path, with the Hips exactly as given on its keys."""
    import backend_support

    from backend import grid
    from backend.registry import Registry
    from training.inbetween import fill as engine
    from training.motion.skeleton import forward_kinematics

    registry = Registry.load(["body"])  # the shipped body, which moves joint_Root between keys
    req = backend_support.fill_request("body", frames=30, keys=(0, 1, 2, 15, 29))
    del req["joints"]["joint_Root"]
    req = FillRequest.model_validate(req)
    win = grid.prepare(req, registry)
    schema = win.lm.schema
    top, root = schema.parents[schema.root], schema.root
    keyed = win.known[0].any(-1)
    assert win.folded == [top] and np.array_equal(win.known[0, :, top], keyed) and not keyed.all()
    res = engine.fill_at_rate(win.lm.model, win.rotations, win.translations, win.known, win.times, win.lm.fps_range)
    folded = grid.fold_above_root(win, res)
    glob_rot, glob_pos = forward_kinematics(res.rotations[0], res.translations[0], schema.parents)
    assert quat_angle(folded.rotations[0, :, root], glob_rot[:, root]).max() < 1e-6  # arccos near 1
    assert np.abs(folded.translations[0, :, root] - glob_pos[:, root]).max() < 1e-9
    assert quat_angle(res.rotations[0, ~keyed, top], np.array([0, 0, 0, 1.0])).max() > 1e-6  # the model moved it
    kept = win.tracks["Hips"].known
    assert np.allclose(folded.rotations[0, kept, root], res.rotations[0, kept, root], atol=1e-12)
    assert np.allclose(folded.translations[0, kept, root], res.translations[0, kept, root], atol=1e-12)
