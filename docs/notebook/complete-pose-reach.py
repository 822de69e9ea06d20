"""Complete Pose with the keys one model window reaches (what the extension sends) against every key of the range:
the Mixamo walk (753 frames) at 60 fps keyed every 10 frames, Complete Pose at 24 seeded random frames between keys
with the shipped models, mean world error of the mapped body bones (cm) and the median time of a pose. Run from the
project root: ALLKEYS=1|0 .venv/bin/python docs/notebook/complete-pose-reach.py"""

import os
import sys
import tempfile
import time

os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="anyfill-notebook-"))
os.environ["ANYFILL_TEST_SHIPPED_MODELS"] = "1"
sys.path[:0] = ["tests", "."]
import blender_support as bs  # noqa: E402
import numpy as np  # noqa: E402
from test_addon_fill import heads, thin_keys  # noqa: E402

from training.motion.splits import data_root  # noqa: E402

bpy = bs.import_bpy()
ext = bs.install_extension(bpy)
server = bs.start_backend()
prefs = bpy.context.preferences.addons[bs.EXT_MODULE].preferences
prefs.backend_url, prefs.token = server.url, ""
if os.environ.get("ALLKEYS") == "1":  # the extension before: every key of the range
    ext.plan.pose_reach = lambda model, frame, fps, frame_range: frame_range
N = 753
bs.clean_scene(bpy)
ob = bs.import_bvh(bpy, bs.short_bvh(data_root() / "foreign/mixamo_walk-in-circle.bvh", N))
scene = bpy.context.scene
scene.frame_start, scene.frame_end, scene.render.fps = 1, N, 60
rng = np.random.default_rng(0)
test = sorted(int(f) for f in rng.choice([f for f in range(1, N + 1) if (f - 1) % 10], 24, replace=False))
truth = heads(bpy, ob, test)
thin_keys(bpy, ob, set(range(1, N + 1, 10)) | {N})
bpy.context.view_layer.objects.active = ob
assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
bones = [m.bone for m in ob.anyfill.joints if m.bone]
bezier = heads(bpy, ob, test)
posed, seconds = {}, []
for f in test:
    scene.frame_set(f)
    t = time.perf_counter()
    assert bpy.ops.anim.anyfill_complete_pose() == {"FINISHED"}
    seconds.append(time.perf_counter() - t)
    posed[f] = heads(bpy, ob, [f])[f]
    for fc in ext.keys.channelbag(ob).fcurves:  # the pose's keys off again: the next pose reads the animator's keys
        for i in reversed(range(len(fc.keyframe_points))):
            if fc.keyframe_points[i].type == "GENERATED":
                fc.keyframe_points.remove(fc.keyframe_points[i], fast=True)
        fc.update()


def error(poses) -> float:
    return float(np.mean([np.mean([(poses[f][b] - truth[f][b]).length for b in bones]) for f in test]))


print(f"Complete Pose {error(posed):.4f}, Bezier {error(bezier):.4f}, median {np.median(seconds) * 1e3:.0f} ms a pose")
