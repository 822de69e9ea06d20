"""Benchmark (not a test): time spent in Blender by Fill, outside the model call.

A 17-bone hand (the shared ManipNet right hand at 30 fps) over 240 frames with keys every 12 frames; a real
backend process with a small untrained model. Reports the operator's wall time, the backend's own time
(``timings.total_ms``: validation, model, encoding) and their difference, split into reading the rig
(prepare) and writing keys (apply). Run: ``.venv/bin/python tests/bench_addon_fill.py``.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from blender_support import (  # noqa: E402
    EXT_MODULE,
    clean_scene,
    import_bpy,
    import_bvh,
    install_extension,
    short_bvh,
    start_backend,
)

FRAMES, EVERY, REPEATS = 241, 12, 5


def main() -> int:
    from training.motion import splits

    bpy = import_bpy()
    ext = install_extension(bpy)
    backend = start_backend()
    prefs = bpy.context.preferences.addons[EXT_MODULE].preferences
    prefs.backend_url, prefs.token = backend.url, ""
    src = splits.data_root() / "manipnet/teapot3/rightHand.bvh"
    rows = []
    for _ in range(REPEATS + 1):
        clean_scene(bpy)
        ob = import_bvh(bpy, short_bvh(src, FRAMES, step=4))
        bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, FRAMES
        bag = ext.keys.channelbag(ob)
        for fc in bag.fcurves:
            kp = fc.keyframe_points
            for i in reversed(range(len(kp))):
                if (round(kp[i].co[0]) - 1) % EVERY:
                    kp.remove(kp[i], fast=True)
        client = ext.jobs.make_client(bpy.context)
        t0 = time.perf_counter()
        model = ext.operators.resolve(bpy.context, ob, client)
        plan = ext.plan.prepare(bpy.context, ob, "fill", model)
        t1 = time.perf_counter()
        answer = client.fill(plan.body)
        t2 = time.perf_counter()
        ext.plan.apply(bpy.context, plan, answer["joints"])
        t3 = time.perf_counter()
        rows.append({"prepare": t1 - t0, "request": t2 - t1, "backend": answer["timings"]["total_ms"] / 1e3,
                     "apply": t3 - t2, "targets": plan.n_targets})
    rows = rows[1:]  # the first run warms caches
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    blender = med["prepare"] + med["apply"]
    http = med["request"] - med["backend"]
    print(f"hand, {FRAMES - 1} frames, keys every {EVERY}: {med['targets']:.0f} target cells, median of {REPEATS}")
    print(f"  read rig + build request {med['prepare'] * 1e3:7.1f} ms")
    print(f"  write keys               {med['apply'] * 1e3:7.1f} ms")
    print(f"  in Blender (sum)         {blender * 1e3:7.1f} ms")
    print(f"  HTTP + JSON transfer     {http * 1e3:7.1f} ms")
    print(f"  backend (total_ms)       {med['backend'] * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
