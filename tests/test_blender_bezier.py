"""The ``bezier`` baseline is what Blender itself does between keys: real Blender F-curves with the
default *Auto Clamped* handles, evaluated at every frame, against :func:`baselines.auto_clamped_slopes`."""

from __future__ import annotations

import numpy as np
import pytest

from training.inbetween import baselines
from training.motion.rotations import euler_to_quat, quat_angle
from training.motion.skeleton import HAND

pytestmark = pytest.mark.blender


def test_auto_clamped_slopes_are_blenders_fcurves(bpy):
    bpy.ops.wm.read_factory_settings(use_empty=True)
    ob = bpy.data.objects.new("keys", None)
    bpy.context.scene.collection.objects.link(ob)
    keys = np.arange(1, 62, 10)  # a key every 10 frames, as an animator blocks
    rng = np.random.default_rng(0)
    # a rising channel, one that turns at interior keys, a random one, and rising ones with uneven steps
    # (there a smooth curve would overshoot the next key: Blender clamps those handles)
    values = np.stack([np.cumsum(rng.uniform(0.1, 1.0, len(keys))), np.array([0, 2, -1, 3, 1, 1.5, -2.0]),
                       rng.normal(size=len(keys)), np.array([0, 0.05, 3, 3.1, 6, 6.05, 9]),
                       np.array([0, 4, 4.2, 4.3, 8, 8.1, 8.15]), rng.normal(size=len(keys))], axis=1)
    slopes = baselines.auto_clamped_slopes(keys.astype(np.float64), values[:, 3:4])[1:-1, 0]
    d = np.diff(values[:, 3]) / 10.0
    assert np.isclose(slopes, 3 * np.minimum(np.abs(d[:-1]), np.abs(d[1:]))).sum() >= 3  # clamped handles
    for f, v in zip(keys, values, strict=True):
        ob.location = tuple(float(x) for x in v[:3])
        ob.rotation_euler = tuple(float(x) for x in v[3:])
        ob.keyframe_insert("location", frame=int(f))
        ob.keyframe_insert("rotation_euler", frame=int(f))
    frames = np.arange(1, 62)
    blender = []
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        blender.append(tuple(ob.location) + tuple(ob.rotation_euler))
    ours = baselines.auto_clamped_curve(keys.astype(np.float64), values, frames)
    np.testing.assert_allclose(np.array(blender), ours, atol=1e-4)
    linear = np.stack([np.interp(frames, keys, values[:, c]) for c in range(6)], axis=1)
    assert np.abs(np.array(blender) - linear).max() > 0.1  # a curve, not the straight line


def test_bezier_baseline_keeps_keys_and_curves_each_euler_channel():
    n, t, j = 2, 41, HAND.n_joints
    rng = np.random.default_rng(1)
    frames = np.arange(t)[None, :, None, None]
    angles = 0.6 * np.sin(2 * np.pi * frames / 40.0 + rng.uniform(0, 6, size=(n, 1, j, 3)))
    rot = euler_to_quat(angles, HAND.euler_order, degrees=False)
    trans = np.broadcast_to(rng.normal(size=(n, 1, j, 3)), (n, t, j, 3)).copy()
    known = np.arange(t) % 10 == 0
    hidden = rot.copy()
    hidden[:, ~known] = np.nan
    r, tr = baselines.bezier(hidden, trans, known, HAND)
    assert np.isfinite(r).all() and np.allclose(r[:, known], rot[:, known]) and np.allclose(tr, trans)
    err_bezier = quat_angle(r[:, ~known], rot[:, ~known]).mean()
    err_interp = quat_angle(baselines.interpolate(hidden, trans, known)[0][:, ~known], rot[:, ~known]).mean()
    assert err_bezier < 0.7 * err_interp  # smooth motion: the curve follows it better than straight lines
