"""Bulk F-curve reads and editable curves in real Blender: the extension's numpy evaluation of F-curves is
Blender's own (``fcurve.evaluate``), its vectorised continuity walks as Blender's compatible Euler does, and an
editable Fill (keys only where needed) stays within its tolerances of the dense fill as Blender evaluates the
written curves, with fewer keys, the animator's keys untouched, in Euler and quaternion rigs, in one undo step."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from blender_support import clean_scene
from test_addon_fill import BODY, assert_fill_is_one_undo_step, load_rig, own_keys, run_fill, thin_keys

from training.bench.addon import generated, measured_deviation

pytestmark = pytest.mark.blender


@pytest.fixture(autouse=True)
def dense_afterwards(bpy, ext):
    """The other tests fill with a key on every frame: put the scene's Keys setting back."""
    yield
    bpy.context.scene.anyfill.keys_output = "DENSE"


def test_bulk_evaluation_is_blenders_fcurve_evaluate(bpy, ext):
    clean_scene(bpy)
    ob = bpy.data.objects.new("Curves", None)
    bpy.context.scene.collection.objects.link(ob)
    rng = random.Random(0)
    for f in (1, 4, 9.5, 10, 17, 30, 31, 45):  # uneven spacing, a subframe key, keys one frame apart
        ob.location = (rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(-1, 1))
        ob.rotation_euler = (rng.uniform(-3, 3), rng.uniform(-1, 1), rng.uniform(-1, 1))
        ob.scale = (rng.uniform(0.5, 2), 1.0, 1.0)
        for prop in ("location", "rotation_euler", "scale"):
            ob.keyframe_insert(prop, frame=f)
    fcs = list(ext.keys.channelbag(ob).fcurves)
    fcs[0].keyframe_points[2].interpolation = "CONSTANT"
    fcs[1].keyframe_points[3].interpolation = "LINEAR"
    fcs[1].extrapolation = "LINEAR"
    kp = fcs[2].keyframe_points[1]
    kp.handle_right_type, kp.handle_right = "FREE", (12.0, 5.0)  # past the next key: Blender shortens it
    fcs[3].keyframe_points[4].interpolation = "SINE"  # an easing: left to fcurve.evaluate
    fcs[4].extrapolation = "LINEAR"
    fcs[4].keyframe_points[0].interpolation = "LINEAR"
    fcs[5].keyframe_points[5].handle_left_type = "VECTOR"
    kp = fcs[6].keyframe_points[3]
    kp.handle_left_type, kp.handle_left = "FREE", (16.0, 3.0)  # a handle turned back in time
    fcs[7].extrapolation = "LINEAR"  # Bezier ends: extrapolated along the end handles
    fcs[8].modifiers.new("NOISE")
    for fc in fcs:
        fc.update()
    frames = np.concatenate([np.arange(-5, 52, 0.25), [9.5 + 5e-5, 10 - 3e-5]])
    ours = ext.fcurves.evaluate(fcs, frames)
    blender = np.array([[fc.evaluate(float(f)) for f in frames] for fc in fcs])
    np.testing.assert_allclose(ours, blender, atol=1e-5)
    points = [ext.fcurves.read(fc) for fc in fcs[:3]]
    _, known = ext.fcurves.evaluate_points(points, frames)
    assert known.all()  # Constant, Linear and Bezier segments are evaluated in numpy, not by fcurve.evaluate


@pytest.mark.parametrize("mode", ["QUATERNION", "XYZ", "ZXY", "YZX", "AXIS_ANGLE"])
def test_continuity_walks_as_blenders_compatible_rotations(bpy, ext, mode):
    """One gap after a key and open on the right: each value is the representation of its rotation nearest the
    value before it, as a frame-by-frame walk with mathutils gives (Euler: ``to_euler(order, compatible)``),
    through a gimbal crossing and more than a full turn."""
    from mathutils import Euler, Quaternion

    t = np.linspace(0.0, 1.0, 120)
    axis = np.stack([np.cos(3 * t), np.sin(2 * t), 0.3 + t], 1)
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    angle = 9.0 * t + 0.2
    q = np.concatenate([np.cos(angle / 2)[:, None], np.sin(angle / 2)[:, None] * axis], 1)
    q[::7] *= -1  # the solver's quaternions come in either sign
    anchor_q = Quaternion((0.9, 0.1, -0.3, 0.2)).normalized()
    if mode == "QUATERNION":
        anchor = list(-anchor_q)
    elif mode == "AXIS_ANGLE":
        ax, an = anchor_q.to_axis_angle()
        anchor = [an - 2 * math.pi, *ax]
    else:
        anchor = list(anchor_q.to_euler(mode))
        anchor[0] += 2 * math.pi
    got = ext.curves.continuous_values(np.arange(1, 121), q, np.array([0]), np.array([anchor]), mode, anchor)
    prev = anchor
    for i in range(120):
        r = Quaternion(q[i])
        if mode == "QUATERNION":
            want = list(-r if r.dot(Quaternion(prev)) < 0 else r)
        elif mode == "AXIS_ANGLE":  # in float64 (mathutils' to_axis_angle is float32)
            ax, an = q[i, 1:] / np.linalg.norm(q[i, 1:]), 2 * math.atan2(np.linalg.norm(q[i, 1:]), q[i, 0])
            if sum(a * b for a, b in zip(ax, prev[1:], strict=True)) < 0:
                ax, an = -ax, -an
            an += 2 * math.pi * round((prev[0] - an) / (2 * math.pi))
            want = [an, *ax]
        else:
            want = list(r.to_euler(mode, Euler(prev, mode)))
        np.testing.assert_allclose(got[i], want, atol=1e-5, err_msg=f"{mode} at {i}")
        prev = want


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["XYZ", "QUATERNION"])
def test_editable_fill_stays_within_its_tolerance_with_fewer_keys(bpy, ext, prefs, data_root, mode):
    ob = load_rig(bpy, ext, data_root, BODY, frames=61, mode=mode)
    thin_keys(bpy, ob, set(range(1, 62, 10)))
    scene = bpy.context.scene
    scene.anyfill.range_mode, scene.anyfill.bones = "SCENE", "ALL"
    scene.unit_settings.scale_length = 1.0
    before = own_keys(ext, ob)
    scene.anyfill.keys_output = "DENSE"
    assert run_fill(bpy, ob) == {"FINISHED"}
    dense = generated(ext.keys.channelbag(ob), ext)
    assert ob.anyfill.last_keys == ob.anyfill.last_dense_keys == sum(len(f) for f, _ in dense.values())
    scene.anyfill.keys_output = "EDITABLE"
    scene.anyfill.rotation_tolerance = 1.0
    scene.anyfill.location_tolerance = 0.01  # 1 cm
    assert run_fill(bpy, ob) == {"FINISHED"}  # replaces the dense keys
    assert own_keys(ext, ob) == before  # the animator's keys, bit for bit
    written = generated(ext.keys.channelbag(ob), ext)
    n = sum(len(f) for f, _ in written.values())
    s = ob.anyfill
    assert s.last_editable and s.last_keys == n and s.last_dense_keys == sum(len(f) for f, _ in dense.values())
    assert 0 < n < 0.5 * s.last_dense_keys
    rot, loc = measured_deviation(ob, ext, dense)
    assert rot <= 1.0 + 1e-3 and loc <= 0.01 + 1e-5, (rot, loc)
    assert s.last_max_rotation == pytest.approx(rot, abs=1e-3) and s.last_max_location == pytest.approx(loc, abs=1e-5)
    # a bone's rotation channels share their key frames
    for (path, _), (frames, _values) in written.items():
        if "rotation" in path:
            assert np.array_equal(frames, written[(path, 0)][0]), path
    text = "\n".join(ext.panels.output_lines(s, scene))
    assert f"{n:,}" in text and "Largest deviation" in text


@pytest.mark.data
@pytest.mark.slow
def test_editable_fill_is_one_undo_step(bpy, ext, prefs, data_root):
    ob = load_rig(bpy, ext, data_root, BODY, frames=41)
    thin_keys(bpy, ob, set(range(1, 42, 10)))
    scene = bpy.context.scene
    scene.anyfill.range_mode, scene.anyfill.keys_output = "SCENE", "EDITABLE"
    assert_fill_is_one_undo_step(bpy, ext, ob)
