"""``anyfill bench rig``: the real extension on real rigs in headless Blender, against Blender's own curves.

For each clip: Blender's BVH importer makes the ground truth; a copy keeps every n-th frame's keys (and the
last), which Blender turns into its default curves (Bezier, Auto Clamped): the *Bezier* baseline. The
extension's own operators (Auto Map, Fill) fill the copy through a real ``anyfill serve`` on 127.0.0.1.
Scores, over the frames between keys, on the mapped body bones (hands: the finger bones, in the hand bone's
frame and in world): mean world joint-position error against the ground truth (rig units and the ratio to
Bezier's), the *pop ratio* (the largest frame-to-frame joint step on the frames next to each key, over the
ground truth's largest there) and whether the kept keys are bit-identical afterwards.

Needs the ``bpy`` wheel (``pip install bpy==5.0.1``, CPython 3.11) and the backend's packages.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.bench.commands import DEFAULT_CLIPS

EXT_MODULE = "bl_ext.user_default.anyfill"


@dataclass
class Session:
    bpy: object
    ext: object
    url: str
    server: subprocess.Popen
    log: Path


def start_session(addon_zip: Path, models: Sequence[str] = ("hand", "body")) -> Session:
    """Real Blender with the built extension (``addon_zip``, see ``anyfill build-addon``) enabled, user
    resources in a temporary folder, and a real ``anyfill serve`` on a free loopback port with the given
    models; the extension finds its token."""
    tmp = Path(tempfile.mkdtemp(prefix="anyfill-bench-rig-"))
    os.environ.setdefault("BLENDER_USER_RESOURCES", str(tmp / "blender"))
    config = tmp / "config"
    os.environ["XDG_CONFIG_HOME"] = str(config)
    os.environ.pop("ANYFILL_TOKEN_FILE", None)
    import bpy

    if not bpy.context.preferences.addons.get(EXT_MODULE):
        bpy.ops.extensions.package_install_files(filepath=str(addon_zip), repo="user_default",
                                                 enable_on_install=True)
    ext = sys.modules[EXT_MODULE]
    log = tmp / "serve.log"
    exe = Path(sys.executable).with_name("anyfill")
    cmd = [str(exe), "serve", "--port", "0", "--log-level", "info"]
    for m in models:
        cmd += ["--model", m]
    proc = subprocess.Popen(cmd, env=dict(os.environ), stdout=log.open("wb"), stderr=subprocess.STDOUT)
    url, deadline = None, time.time() + 180
    while url is None and time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"anyfill serve exited ({proc.returncode}):\n{log.read_text()}")
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        url = m.group(1) if m else None
        time.sleep(0.2)
    if url is None:
        proc.kill()
        raise RuntimeError(f"anyfill serve did not start:\n{log.read_text()}")
    prefs = bpy.context.preferences.addons[EXT_MODULE].preferences
    prefs.backend_url, prefs.token = url, ""
    return Session(bpy, ext, url, proc, log)


def stop_session(s: Session) -> None:
    s.server.terminate()
    try:
        s.server.wait(10)
    except subprocess.TimeoutExpired:
        s.server.kill()


def clean_scene(bpy) -> None:
    for ob in list(bpy.data.objects):
        bpy.data.objects.remove(ob)
    for coll in (bpy.data.armatures, bpy.data.actions):
        for item in list(coll):
            coll.remove(item)


def import_clip(bpy, path: Path):
    """Blender's own BVH importer, at the file's frame rate, the scene's range set to the clip's frames;
    returns the armature object."""
    clean_scene(bpy)
    assert bpy.ops.import_anim.bvh(filepath=str(path), update_scene_fps=True, update_scene_duration=False,
                                   rotate_mode="NATIVE") == {"FINISHED"}
    ob = bpy.context.view_layer.objects.active
    lo, hi = ob.animation_data.action.frame_range
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = int(round(lo)), int(round(hi))
    return ob


def keep_every(bpy, ext, gt, every: int, name: str = "Keys"):
    """A copy of ``gt`` whose action keeps the keys of every ``every``-th frame from the first and the last
    frame, on Blender's default curves (Bezier, Auto Clamped): what an animator's keys would be."""
    ob = gt.copy()
    ob.data = gt.data.copy()
    ob.name = name
    bpy.context.scene.collection.objects.link(ob)
    action = gt.animation_data.action.copy()
    ob.animation_data.action = action
    ob.animation_data.action_slot = action.slots[0]
    bag = ext.keys.channelbag(ob)
    lo, hi = bpy.context.scene.frame_start, bpy.context.scene.frame_end
    kept = sorted(set(range(lo, hi + 1, every)) | {hi})
    bezier = bpy.types.Keyframe.bl_rna.properties["interpolation"].enum_items["BEZIER"].value
    auto = bpy.types.Keyframe.bl_rna.properties["handle_left_type"].enum_items["AUTO_CLAMPED"].value
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        n = len(kp)
        co = np.empty(2 * n, dtype=np.float32)
        kp.foreach_get("co", co)
        co = co.reshape(n, 2)
        keep = co[np.isin(np.round(co[:, 0]).astype(int), kept)]
        kp.clear()
        kp.add(len(keep))
        kp.foreach_set("co", keep.ravel())
        kp.foreach_set("handle_left", keep.ravel())
        kp.foreach_set("handle_right", keep.ravel())
        kp.foreach_set("interpolation", np.full(len(keep), bezier, dtype=np.int32))
        kp.foreach_set("handle_left_type", np.full(len(keep), auto, dtype=np.int32))
        kp.foreach_set("handle_right_type", np.full(len(keep), auto, dtype=np.int32))
        fc.update()
    return ob, kept


def world_heads(bpy, ob, frames: Sequence[int]) -> np.ndarray:
    """Every bone's head (F, N, 3) in world space as Blender evaluates the rig at each frame."""
    n = len(ob.pose.bones)
    out = np.empty((len(frames), n, 3))
    mw = np.array(ob.matrix_world)
    buf = np.empty(3 * n, dtype=np.float32)
    for i, f in enumerate(frames):
        bpy.context.scene.frame_set(int(f))
        ob.pose.bones.foreach_get("head", buf)
        h = buf.reshape(n, 3).astype(np.float64)
        out[i] = h @ mw[:3, :3].T + mw[:3, 3]
    return out


def animator_keys(ob) -> dict:
    """Every key that is not GENERATED, all its attributes, per channel: to check that a fill left them exactly
    as they were."""
    out = {}
    bag = _channelbag(ob)
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        n = len(kp)
        types = np.empty(n, dtype=np.int32)
        kp.foreach_get("type", types)
        gen = kp[0].bl_rna.properties["type"].enum_items["GENERATED"].value if n else 0
        keep = types != gen
        attrs = {}
        for attr, width, dtype in (("co", 2, np.float32), ("handle_left", 2, np.float32),
                                   ("handle_right", 2, np.float32), ("handle_left_type", 1, np.int32),
                                   ("handle_right_type", 1, np.int32), ("interpolation", 1, np.int32),
                                   ("easing", 1, np.int32)):
            buf = np.empty(n * width, dtype=dtype)
            kp.foreach_get(attr, buf)
            attrs[attr] = buf.reshape(n, width)[keep].tobytes()
        out[(fc.data_path, fc.array_index)] = attrs
    return out


def _channelbag(ob):
    ad = ob.animation_data
    from bpy_extras import anim_utils

    return anim_utils.action_get_channelbag_for_slot(ad.action, ad.action_slot)


def pop_ratio(pos: np.ndarray, gt: np.ndarray, kept: Sequence[int], frames: Sequence[int]) -> float:
    """The largest frame-to-frame step of any joint over the steps into and out of each key, divided by the
    ground truth's largest over the same steps."""
    index = {f: i for i, f in enumerate(frames)}
    steps = sorted({i for k in kept if k in index for i in (index[k] - 1, index[k]) if 0 <= i < len(frames) - 1})
    if not steps:
        return float("nan")
    s = np.asarray(steps)
    ours = np.linalg.norm(pos[s + 1] - pos[s], axis=-1).max()
    truth = np.linalg.norm(gt[s + 1] - gt[s], axis=-1).max()
    return float(ours / max(truth, 1e-9))


def mapped_bones(ob) -> list[str]:
    return [m.bone for m in ob.anyfill.joints if m.bone and m.bone in ob.data.bones]


def run_clip(s: Session, path: Path, every: int) -> dict:
    """One clip at one key spacing: the scores described in the module docstring."""
    bpy, ext = s.bpy, s.ext
    gt = import_clip(bpy, path)
    scene = bpy.context.scene
    frames = list(range(scene.frame_start, scene.frame_end + 1))
    ob, kept = keep_every(bpy, ext, gt, every)
    names = [b.name for b in ob.pose.bones]
    gt_pos = world_heads(bpy, gt, frames)
    bez_pos = world_heads(bpy, ob, frames)
    for o in bpy.context.view_layer.objects:
        o.select_set(o == ob)
    bpy.context.view_layer.objects.active = ob
    ob.anyfill.model = ""
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    before = animator_keys(ob)
    scene.anyfill.range_mode, scene.anyfill.bones = "SCENE", "ALL"
    t0 = time.perf_counter()
    result = bpy.ops.anim.anyfill_fill()
    seconds = time.perf_counter() - t0
    if result != {"FINISHED"}:
        raise RuntimeError(f"Fill did not finish on {path.name}: {result}")
    after = animator_keys(ob)
    fill_pos = world_heads(bpy, ob, frames)
    bones = [names.index(b) for b in mapped_bones(ob)]
    between = np.array([f not in set(kept) for f in frames])
    height = float(np.ptp(gt_pos[0, :, 2])) or 1.0

    def err(p):
        return float(np.linalg.norm(p[between][:, bones] - gt_pos[between][:, bones], axis=-1).mean())

    kept_same = all(after.get(k) == v for k, v in before.items())
    e_fill, e_bez = err(fill_pos), err(bez_pos)
    return {"clip": path.name, "every": every, "frames": len(frames), "fps": scene.render.fps,
            "mapped": len(bones), "family": ob.anyfill.rig_family, "height": height,
            "fill_error": e_fill, "bezier_error": e_bez, "ratio": e_fill / max(e_bez, 1e-12),
            "pop_fill": pop_ratio(fill_pos[:, bones], gt_pos[:, bones], kept, frames),
            "pop_bezier": pop_ratio(bez_pos[:, bones], gt_pos[:, bones], kept, frames),
            "kept_keys_identical": kept_same, "fill_seconds": seconds}


def format_table(rows: list[dict]) -> str:
    head = "| clip | keys every | Fill error | Bezier error | Fill / Bezier | pop ratio (Fill) | pop ratio (Bezier) |"
    lines = [head, "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['every']} | {r['fill_error']:.3f} | {r['bezier_error']:.3f} | "
                     f"{r['ratio']:.3f} | {r['pop_fill']:.2f} | {r['pop_bezier']:.2f} |")
    return "\n".join(lines)


def main(args: argparse.Namespace, addon_zip: Path | None = None) -> int:
    """``anyfill bench rig`` (its arguments: :mod:`training.bench.commands`); ``addon_zip``: the extension as
    built by ``anyfill build-addon`` (the command line builds it first)."""
    from training.motion.splits import data_root

    clips = [Path(c) for c in args.clips] or [data_root() / c for c in DEFAULT_CLIPS]
    if addon_zip is None:
        raise SystemExit("anyfill bench rig: run it as 'anyfill bench rig' (it builds the extension first)")
    s = start_session(addon_zip, args.model or ("hand", "body"))
    rows = []
    try:
        for c in clips:
            for n in args.every:
                row = run_clip(s, c, n)
                rows.append(row)
                print(f"{row['clip']} every {n}: Fill/Bezier {row['ratio']:.3f} (fill {row['fill_error']:.3f}, "
                      f"bezier {row['bezier_error']:.3f}), pop {row['pop_fill']:.2f}, keys kept "
                      f"{'identical' if row['kept_keys_identical'] else 'CHANGED'}", flush=True)
    finally:
        stop_session(s)
    print(format_table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=2))
    return 0
