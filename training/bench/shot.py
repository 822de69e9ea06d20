"""``anyfill bench shot``: whole shots, the way an animator fills them: long real takes with a key every n
frames, filled by the shipped models.

For each shot: the fill engine's compute (median of repeats, the model loaded and warm), in torch (the server's
model) and in the numpy runtime (``anyfill fill``'s, :mod:`training.inbetween.numpy_model`), the same shot
filled window by window as before pieces (``fill(..., cut=False)``, once) with both fills' error against the
capture (mean geodesic angle of the filled rotations, mean distance of the filled moving-joint
translations), and ``anyfill fill`` end to end in a fresh process (start, imports, model, read, fill,
Euler curves, write; median of repeats). Also the import time of the ``anyfill fill`` command alone.
Torch threads are fixed (``--threads``, 2 by default; the end-to-end runs get ``--threads`` and
``OMP_NUM_THREADS``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

SHOTS = {
    "body": ("bandai/dataset-1/dataset-1_dance-short_normal_001.bvh", "body"),
    "hand": ("manipnet/teapot3/rightHand.bvh", "hand"),
}
TARGETS = {"body": {"compute_s": 0.25, "end_to_end_s": 1.5}, "hand": {"end_to_end_s": 3.0}}


def _median(runs: list[float]) -> dict:
    return {"median": statistics.median(runs), "min": min(runs), "max": max(runs), "runs": runs}


def _errors(rot, trans, clip, known, moving) -> dict:
    from training.motion.rotations import quat_angle

    filled = ~known[0]
    ang = np.degrees(quat_angle(rot[0], clip.rotations))[filled]
    pos = np.linalg.norm(trans[0][:, moving] - clip.translations[:, moving], axis=-1)[filled[:, moving]]
    return {"rotation_error_deg": float(ang.mean()), "moving_translation_error": float(pos.mean())}


def _cli(args: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _anyfill() -> list[str]:
    return [sys.executable, "-c", "import sys; from anyfill.cli import main; sys.exit(main())"]


def run(shots=("body", "hand"), every: int = 10, threads: int = 2, repeats: int = 5, root=None,
        sequential: bool = True) -> dict:
    import torch
    from threadpoolctl import threadpool_limits

    from training.bench.timing import repeat
    from training.inbetween.checkpoint import load_model, load_numpy_model
    from training.inbetween.fill import fill, model_length, pieces
    from training.motion import clip as clip_io
    from training.motion.skeleton import get_schema
    from training.motion.splits import data_root

    torch.set_num_threads(threads)
    threadpool_limits(threads)  # NumPy's BLAS: the numpy runtime's matmuls
    base = data_root(root)
    result: dict = {"threads": threads, "repeats": repeats, "every": every, "shots": {}}
    imports = [_cli([*_anyfill()[:2], "import backend.cli_fill"], threads) for _ in range(repeats)]
    result["import_anyfill_fill_s"] = _median(imports)
    for name in shots:
        rel, skeleton = SHOTS[name]
        path = base / rel
        model, _ = load_model(skeleton)
        clip = clip_io.load(path, skeleton)
        t, j = clip.n_frames, clip.schema.n_joints
        known = np.zeros((1, t, j), dtype=bool)
        known[0, ::every] = True
        times = (np.arange(t) / clip.fps)[None]
        args = (model, clip.rotations[None], clip.translations[None], known, times)
        fill(model, *(a[:, :model_length(model)] for a in args[1:]))  # warm
        runs, res = repeat(partial(fill, *args), repeats)
        array_args = (load_numpy_model(skeleton)[0], *args[1:])
        fill(*array_args)  # warm
        array_runs, array_res = repeat(partial(fill, *array_args), repeats)
        moving = list(get_schema(skeleton).moving)
        row = {"file": rel, "frames": t, "fps": clip.fps, "model": skeleton, "key_frames": int(known[0].any(-1).sum()),
               "pieces": len(pieces(known[0], model_length(model))), "compute_s": _median(runs),
               "numpy_runtime_compute_s": _median(array_runs),
               "quality": {"pieces": _errors(res.rotations, res.translations, clip, known, moving),
                           "numpy_runtime": _errors(array_res.rotations, array_res.translations, clip, known,
                                                    moving)}}
        if sequential:
            t0 = time.perf_counter()
            seq = fill(*args, cut=False)
            row["window_by_window_compute_s"] = time.perf_counter() - t0
            row["quality"]["window_by_window"] = _errors(seq.rotations, seq.translations, clip, known, moving)
        with tempfile.TemporaryDirectory(prefix="anyfill-bench-shot-") as tmp:
            cmd = [*_anyfill(), "fill", str(path), "-o", str(Path(tmp) / "out.bvh"), "--keys", f"0:last:{every}",
                   "--model", skeleton, "--threads", str(threads)]
            row["end_to_end_s"] = _median([_cli(cmd, threads) for _ in range(repeats)])
            shown = [str(Path("../shared/data") / rel) if c == str(path) else "out.bvh" if c.startswith(tmp) else c
                     for c in cmd[3:]]
            row["command"] = "anyfill " + " ".join(shown)
        row["targets"] = {k: {"target": v, "met": row[k]["median"] <= v} for k, v in TARGETS.get(name, {}).items()}
        result["shots"][name] = row
    return result


def format_table(result: dict) -> str:
    lines = [f"shot ({result['threads']} threads, key every {result['every']} frames, median of "
             f"{result['repeats']} runs); importing `anyfill fill`: {result['import_anyfill_fill_s']['median']:.2f} s"]
    for name, r in result["shots"].items():
        q = r["quality"]
        lines.append(f"  {name}: {r['file']} ({r['frames']} frames at {r['fps']:g} fps, {r['key_frames']} key frames, "
                     f"{r['pieces']} pieces)")
        lines.append(f"    fill compute {r['compute_s']['median']:.3f} s (torch), "
                     f"{r['numpy_runtime_compute_s']['median']:.3f} s (numpy runtime); anyfill fill end to end "
                     f"{r['end_to_end_s']['median']:.2f} s")
        p = q["pieces"]
        a = q["numpy_runtime"]
        err = (f"    error: pieces {p['rotation_error_deg']:.3f} deg / {p['moving_translation_error']:.4f} (numpy "
               f"runtime {a['rotation_error_deg']:.3f} / {a['moving_translation_error']:.4f})")
        if "window_by_window" in q:
            w = q["window_by_window"]
            err += (f"; window by window {w['rotation_error_deg']:.3f} deg / {w['moving_translation_error']:.4f} "
                    f"(compute {r['window_by_window_compute_s']:.2f} s)")
        lines.append(err)
        for k, v in r["targets"].items():
            lines.append(f"    target {k} <= {v['target']:g}: {'met' if v['met'] else 'NOT met'}")
    return "\n".join(lines)
