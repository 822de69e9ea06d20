"""``anyfill bench addon``: the extension's own time in Blender on a long shot, and its editable curves.

A Mixamo shot (the Mixamo walk of the data folder played forward then back to the requested length, so it has
no seam) keyed every n frames on Blender's default curves, as an animator blocks; the extension's Auto Map; a
real ``anyfill serve`` fills the body once. Then, from the same keys each time, Blender's side alone is timed:
*read* (``plan.prepare``: keys read, poses evaluated, the rig matched to the model, the request built) and
*write* (``plan.apply``: the answer checked, the rig's poses solved, keys written), the answer being the one
the server gave (so the server is not timed; its own time is reported once beside), and the stages of each
as the extension times them (``Plan.seconds``, ``Written.seconds``). Medians of repeats, for
a key on every filled frame (dense) and for editable curves. For the editable curves: the key count against
dense, the largest deviation the extension reports, and the same measured independently, with Blender's own
``fcurve.evaluate`` on every channel at every filled frame against the dense fill's keys (rotations as the
angle between the two rotations, locations as the distance in centimetres, the scene's Unit Scale set to the
clip's centimetres); and whether the animator's keys stayed bit for bit.

``baseline``: another version of the extension's modules (a folder holding its ``__init__.py``, e.g. an older
commit's ``addon/``), imported beside the installed extension and timed in the same process, interleaved repeat by
repeat with this one (the order alternating), so both see the same load; its keys are compared with this one's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from training.bench import rig as rig_bench
from training.bench.commands import DEFAULT_ADDON_CLIP
from training.motion.rotations import quat_angle


def long_shot(path: Path, frames: int) -> Path:
    """The clip played forward, back, forward... until it is ``frames`` frames long (no seam: each turn repeats
    the frame it turns on only once), as a BVH file in a temporary folder."""
    from training.motion import bvh

    b = bvh.read(path)
    n = b.n_frames
    order = np.concatenate([np.arange(n), np.arange(n - 2, 0, -1)]) if n > 1 else np.zeros(1, dtype=int)
    idx = np.resize(order, frames)
    out = Path(tempfile.mkdtemp(prefix="anyfill-bench-addon-")) / f"{path.stem}-{frames}.bvh"
    bvh.write(dataclasses.replace(b, motion=b.motion[idx]), out)
    return out


def generated(bag, ext) -> dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]:
    """Every channel's GENERATED keys: (frames, values)."""
    gen = ext.keys.generated_type_value()
    out = {}
    for fc in bag.fcurves:
        kp = fc.keyframe_points
        n = len(kp)
        co, types = np.empty(2 * n, dtype=np.float32), np.empty(n, dtype=np.int32)
        kp.foreach_get("co", co)
        kp.foreach_get("type", types)
        co = co.reshape(n, 2)[types == gen]
        if len(co):
            out[(fc.data_path, fc.array_index)] = (co[:, 0].astype(np.float64), co[:, 1].astype(np.float64))
    return out


def measured_deviation(ob, ext, dense: dict) -> tuple[float, float]:
    """The largest deviation (degrees, rig units) of the rig's curves now, evaluated by Blender's
    ``fcurve.evaluate`` one frame at a time, from the dense fill's keys (``dense``: :func:`generated` of a dense
    fill of the same answer)."""
    bag = ext.keys.channelbag(ob)
    props: dict[str, dict[int, tuple[np.ndarray, np.ndarray]]] = {}
    for (path, index), fv in dense.items():
        props.setdefault(path, {})[index] = fv
    rot, loc = 0.0, 0.0
    for path, chans in props.items():
        frames = chans[0][0]
        width = max(chans) + 1
        want = np.stack([chans[c][1] for c in range(width)], 1)
        got = np.empty_like(want)
        for c in range(width):
            fc = bag.fcurves.find(path, index=c)
            got[:, c] = [fc.evaluate(float(f)) for f in frames]
        if path.endswith(".location"):
            loc = max(loc, float(np.linalg.norm(got - want, axis=1).max()))
            continue
        bone = path.split('"')[1]
        mode = ob.pose.bones[bone].rotation_mode
        turn = quat_angle(ext.retarget.mode_to_quat(got, mode), ext.retarget.mode_to_quat(want, mode))
        rot = max(rot, float(np.degrees(turn).max()))
    return rot, loc


def load_baseline(path: Path):
    """The extension's modules from another folder (``path``: its ``__init__.py`` and modules), as a package of
    their own, for timing side by side with the installed extension."""
    import importlib
    import importlib.util
    import sys

    name = "anyfill_bench_baseline"
    spec = importlib.util.spec_from_file_location(name, Path(path) / "__init__.py",
                                                  submodule_search_locations=[str(path)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    importlib.import_module(f"{name}.plan")
    return module


def run(s: rig_bench.Session, clip: Path, frames: int, every: int, repeats: int, part: str,
        rotation_tolerance: float, location_tolerance_cm: float, unit_scale: float,
        baseline: Path | None = None) -> dict:
    """The measurements described in the module docstring, as a dict."""
    bpy, ext = s.bpy, s.ext
    versions = [("", ext)] + ([("baseline", load_baseline(baseline))] if baseline else [])
    shot = long_shot(clip, frames)
    gt = rig_bench.import_clip(bpy, shot)
    ob, kept = rig_bench.keep_every(bpy, ext, gt, every)
    bpy.data.objects.remove(gt)
    bpy.context.view_layer.update()
    scene = bpy.context.scene
    scene.unit_settings.scale_length = unit_scale
    settings = scene.anyfill
    settings.range_mode, settings.bones = "SCENE", "ALL"
    settings.rotation_tolerance = rotation_tolerance
    settings.location_tolerance = location_tolerance_cm / 100.0 / unit_scale
    for o in bpy.context.view_layer.objects:
        o.select_set(o == ob)
    bpy.context.view_layer.objects.active = ob
    ob.anyfill.model = ob.anyfill.hand_model = ""
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    client = ext.jobs.make_client(bpy.context)
    model = ext.operators.resolve(bpy.context, ob, client, part)
    original = ob.animation_data.action
    before = rig_bench.animator_keys(ob)

    def fresh_action() -> None:
        old = ob.animation_data.action
        action = original.copy()
        ob.animation_data.action = action
        ob.animation_data.action_slot = action.slots[0]
        if old is not original:
            bpy.data.actions.remove(old)

    fresh_action()
    t0 = time.perf_counter()
    plan = ext.plan.prepare(bpy.context, ob, "fill", model, None, part)
    t1 = time.perf_counter()
    answer = client.fill(plan.body)
    request = time.perf_counter() - t1
    result = {"clip": f"{clip.name} played forward and back to {frames} frames", "frames": frames,
              "fps": scene.render.fps, "every": every, "part": part, "bones": int(plan.write.any(axis=0).sum()),
              "targets": plan.n_targets, "repeats": repeats, "first_read_s": t1 - t0, "request_s": request,
              "backend_s": answer.get("timings", {}).get("total_ms", float("nan")) / 1e3,
              "rotation_tolerance_deg": rotation_tolerance, "location_tolerance_cm": location_tolerance_cm,
              "unit_scale": unit_scale}
    dense_keys = None

    def fill(version) -> tuple[dict, object]:
        fresh_action()
        load = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        plan = version.plan.prepare(bpy.context, ob, "fill", model, None, part)
        t1, c1 = time.perf_counter(), time.process_time()
        written = version.plan.apply(bpy.context, plan, answer["joints"])
        t2, c2 = time.perf_counter(), time.process_time()
        return {"read_s": t1 - t0, "write_s": t2 - t1, "total_s": t2 - t0, "cpu_read_s": c1 - c0,
                "cpu_write_s": c2 - c1, "load": load,
                **{f"stage {k}": v for k, v in {**plan.seconds, **written.seconds}.items()}}, written

    for output in ("DENSE", "EDITABLE"):
        settings.keys_output = output
        rows: dict[str, list] = {name: [] for name, _ in versions}
        keys_of: dict[str, dict] = {}
        for i in range(repeats):
            for name, version in versions if i % 2 == 0 else versions[::-1]:  # interleaved, the order alternating
                row, written_by = fill(version)
                rows[name].append(row)
                keys_of[name] = ext.curves.snapshot(ext.keys.channelbag(ob))
                if not name:
                    written = written_by
        if name:  # the baseline wrote last: the rig gets this version's keys again
            written = fill(ext)[1]
        identical = rig_bench.animator_keys(ob) == before
        row = {k: statistics.median(r[k] for r in rows[""]) for k in rows[""][0]}
        row.update(keys=written.keys, dense_keys=written.dense_keys, animator_keys_identical=identical)
        if len(versions) > 1:
            base = {k: statistics.median(r[k] for r in rows["baseline"]) for k in rows["baseline"][0]}
            row.update(baseline=base, same_keys_as_baseline=keys_of[""] == keys_of["baseline"])
        if output == "DENSE":
            dense_keys = generated(ext.keys.channelbag(ob), ext)
        else:
            scale = max(ob.matrix_world.to_scale())
            rot, loc = measured_deviation(ob, ext, dense_keys)
            row.update(reported_rotation_deg=written.max_rotation_deg,
                       reported_location_cm=written.max_location * unit_scale * 100.0,
                       measured_rotation_deg=rot, measured_location_cm=loc * scale * unit_scale * 100.0,
                       share=written.keys / max(written.dense_keys, 1))
        result[output.lower()] = row
    return result


def format_table(r: dict) -> str:
    """Markdown: dense and editable rows, milliseconds and the editable curves' deviations."""
    head = (f"{r['clip']}, {r['fps']} fps, keys every {r['every']}, {r['part']}: {r['bones']} bones, "
            f"{r['targets']} filled cells; median of {r['repeats']} (load average {r['dense']['load']:.1f})")
    lines = [head, "",
             "| keys | count | read (ms) | write (ms) | read + write (ms) | CPU read + write (ms) "
             "| largest deviation |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, row in (("every frame", r["dense"]), ("editable", r["editable"])):
        dev = "0 (a key on every filled frame)" if name == "every frame" else (
            f"{row['measured_rotation_deg']:.4f} deg, {row['measured_location_cm']:.3f} cm "
            f"(tolerance {r['rotation_tolerance_deg']:g} deg, {r['location_tolerance_cm']:g} cm)")
        lines.append(f"| {name} | {row['keys']:,} | {1e3 * row['read_s']:.0f} | {1e3 * row['write_s']:.0f} | "
                     f"{1e3 * row['total_s']:.0f} | {1e3 * (row['cpu_read_s'] + row['cpu_write_s']):.0f} | {dev} |")
        if "baseline" in row:
            b = row["baseline"]
            same = "the same keys" if row["same_keys_as_baseline"] else "**other keys than this version's**"
            lines.append(f"| {name}, baseline | | {1e3 * b['read_s']:.0f} | {1e3 * b['write_s']:.0f} | "
                         f"{1e3 * b['total_s']:.0f} | {1e3 * (b['cpu_read_s'] + b['cpu_write_s']):.0f} | {same} |")
    for name, row in (("every frame", r["dense"]), ("editable", r["editable"])):
        for who, stats in (("", row), (" (baseline)", row.get("baseline"))):
            if stats is not None:
                stages = ", ".join(f"{k[6:]} {1e3 * v:.0f}" for k, v in stats.items() if k.startswith("stage "))
                lines.append(f"\n{name}{who}, the stages (ms, medians): {stages}")
    e = r["editable"]
    lines += ["", f"editable: {e['keys']:,} keys = {100 * e['share']:.1f} % of dense ({e['dense_keys']:,}); "
              f"the extension reported {e['reported_rotation_deg']:.4f} deg, {e['reported_location_cm']:.3f} cm; "
              f"animator's keys identical: dense {r['dense']['animator_keys_identical']}, editable "
              f"{e['animator_keys_identical']}; the server's fill: {1e3 * r['request_s']:.0f} ms over HTTP, "
              f"{1e3 * r['backend_s']:.0f} ms in the backend"]
    return "\n".join(lines)


def main(args: argparse.Namespace, addon_zip: Path | None = None) -> int:
    """``anyfill bench addon`` (arguments: :mod:`training.bench.commands`); ``addon_zip``: the extension as
    built by ``anyfill build-addon`` (the command line builds it first)."""
    from training.motion.splits import data_root

    if addon_zip is None:
        raise SystemExit("anyfill bench addon: run it as 'anyfill bench addon' (it builds the extension first)")
    clip = Path(args.clip) if args.clip else data_root() / DEFAULT_ADDON_CLIP
    s = rig_bench.start_session(addon_zip, args.model or ("hand", "body"))
    try:
        result = run(s, clip, args.frames, args.every, args.repeats, args.part, args.rotation_tolerance,
                     args.location_tolerance, args.unit_scale, args.baseline)
    finally:
        rig_bench.stop_session(s)
    print(format_table(result))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0
