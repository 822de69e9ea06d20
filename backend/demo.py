"""``anyfill demo``: the main job end to end, as the Blender extension does it.

Starts ``anyfill serve`` on a free loopback port with the shipped default models, takes a real test clip
(a Bandai body and a ManipNet hand from ``../shared/data``), keeps one key every ``--every`` frames,
sends them to ``POST /v1/fill`` over HTTP with the install's token, writes the filled clip as BVH, scores
it against the capture (mean joint-position error of the filled frames, in the skeleton's units, beside
plain interpolation), and stops the server.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from backend.bench import start_server
from training.inbetween.baselines import interpolate
from training.motion import bvh as bvh_io
from training.motion import clip as clip_io
from training.motion.rotations import quat_align
from training.motion.skeleton import forward_kinematics, get_schema
from training.motion.splits import split_files

SAMPLES = {"body": 0, "hand": 0}  # index into each test split


def fill_request(c: clip_io.Clip, known: np.ndarray, model: str) -> dict:
    schema = c.schema
    joints = {}
    for j, name in enumerate(schema.joints):
        q = c.rotations[:, j]
        rots = [[float(q[t, 3]), float(q[t, 0]), float(q[t, 1]), float(q[t, 2])] if known[t] else None
                for t in range(c.n_frames)]
        entry: dict = {"rotations": rots}
        if j in schema.moving:
            entry["translations"] = [[float(x) for x in c.translations[t, j]] if known[t] else None
                                     for t in range(c.n_frames)]
        else:
            entry["offset"] = [float(x) for x in c.offsets[j]]
        joints[name] = entry
    return {"model": model, "fps": c.fps, "frames": list(range(c.n_frames)),
            "rotation_format": {"type": "quaternion", "layout": "wxyz"}, "joints": joints}


def clip_from_answer(c: clip_io.Clip, answer: dict) -> clip_io.Clip:
    rot, trans = c.rotations.copy(), c.translations.copy()
    for j, name in enumerate(c.schema.joints):
        track = answer["joints"][name]
        q = np.array(track["rotations"], dtype=np.float64)  # wxyz
        rot[:, j] = q[:, [1, 2, 3, 0]]
        if track.get("translations") is not None:
            trans[:, j] = np.array(track["translations"], dtype=np.float64)
    return clip_io.Clip(c.schema, c.fps, rot, trans, c.name)


def position_error(a: clip_io.Clip, b: clip_io.Clip, frames: np.ndarray) -> float:
    _, pa = forward_kinematics(a.rotations, a.translations, a.schema.parents)
    _, pb = forward_kinematics(b.rotations, b.translations, b.schema.parents)
    return float(np.linalg.norm(pa[frames] - pb[frames], axis=-1).mean())


def run(every: int = 10, frames: int = 121, out_dir: str | Path = "demo-output") -> list[dict]:
    import httpx

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "token"
        t0 = time.perf_counter()
        proc, url = start_server(None, threads=2, workers=1, token_file=token_file)
        print(f"backend up at {url} in {time.perf_counter() - t0:.1f} s")
        try:
            headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
            for skeleton, index in SAMPLES.items():
                path = split_files(skeleton, "test")[index]
                template = bvh_io.read(path)
                full = clip_io.from_bvh(template, get_schema(skeleton), name=str(path))
                step = max(int(round(full.fps / 30.0)), 1)  # the hands are captured at 120 fps: use 30
                c = full.frames(slice(0, frames * step, step))
                known = np.zeros(c.n_frames, dtype=bool)
                known[::every] = True
                known[-1] = True
                t1 = time.perf_counter()
                r = httpx.post(f"{url}/v1/fill", json=fill_request(c, known, skeleton), headers=headers, timeout=120)
                if r.status_code != 200:
                    raise RuntimeError(f"fill failed ({r.status_code}): {r.text[:500]}")
                answer = r.json()
                wall_ms = (time.perf_counter() - t1) * 1000
                filled = clip_from_answer(c, answer)
                target = np.flatnonzero(~known)
                ir, it = interpolate(c.rotations[None], c.translations[None], known)
                interp = clip_io.Clip(c.schema, c.fps, ir[0], it[0])
                out = out_dir / f"{skeleton}-filled.bvh"
                bvh_io.write(clip_io.to_bvh(filled, template), out)
                kept = np.abs(quat_align(filled.rotations[known], c.rotations[known]) - c.rotations[known]).max()
                results.append({
                    "skeleton": skeleton, "clip": path.name, "frames": c.n_frames, "keys": int(known.sum()),
                    "filled_frames": int(len(target)), "request_ms": wall_ms,
                    "position_error": position_error(filled, c, target),
                    "interp_position_error": position_error(interp, c, target),
                    "units": c.schema.units, "keys_unchanged": bool(kept < 1e-9), "output": str(out),
                })
                print(json.dumps(results[-1]))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return results


def main(args: argparse.Namespace) -> int:
    """``anyfill demo`` (its arguments: :mod:`backend.commands`)."""
    results = run(args.every, args.frames, args.out)
    for r in results:
        print(f"{r['skeleton']}: {r['clip']} {r['frames']} frames, {r['keys']} keys, filled {r['filled_frames']} "
              f"frames in {r['request_ms']:.0f} ms; joint position error {r['position_error']:.3f} "
              f"(interpolation {r['interp_position_error']:.3f}) {r['units']}; keys unchanged: "
              f"{r['keys_unchanged']}; wrote {r['output']}")
    return 0
