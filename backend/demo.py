"""``anyfill demo``: the main job end to end, as the Blender extension does it, with something to look at.

Starts ``anyfill serve`` on a free loopback port with the shipped default models and, for each skeleton
(a Bandai body, a ManipNet hand), takes a window of real test-split capture chosen by a stated rule
(:func:`pick_window`: of every ``--frames``-frame window of every test-split file at 30 fps, the one whose
joints move the most per second, so the clip moves the way animated shots do and is never a near-still
one). It keeps one key every ``--every`` frames, sends them to ``POST /v1/fill`` over HTTP with the
install's token, and writes beside the fill the ground truth and the two fills an animator gets without
the model: plain interpolation (:func:`training.inbetween.baselines.interpolate`) and Blender's default
Bezier F-curves (:func:`training.inbetween.baselines.bezier`). Every error it prints is recomputed from
the BVH files it wrote (mean joint-position error of the filled frames against the written ground truth),
and a PNG plots the error of each method per frame. Then it stops the server.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backend import options
from backend.bench import start_server
from backend.schemas import MAX_FRAMES
from training.inbetween.baselines import bezier, interpolate
from training.motion import bvh as bvh_io
from training.motion import clip as clip_io
from training.motion.rotations import quat_align
from training.motion.skeleton import forward_kinematics, get_schema
from training.motion.splits import data_root, split_files

SKELETONS = ("body", "hand")
DEMO_FPS = 30.0  # the hands are captured at 120 fps: the demo takes every 4th frame, as the models train
# the written files of one clip: (file suffix, label on the plot and in the printout)
METHODS = (("filled", "fill (model)"), ("interpolation", "interpolation"), ("bezier", "Blender Bezier"))
RULE = ("of every {frames}-frame window (at 30 fps) of every test-split {skeleton} file, the one whose joints "
        "move the most per second (mean joint speed, root travel included)")


@dataclass
class Window:
    """Where a demo clip comes from: a test-split file and a window of it."""

    skeleton: str
    path: Path  # the file
    source: str  # the file relative to the data folder (the printed name)
    step: int  # file frames per demo frame
    start: int  # first demo frame (at 30 fps)
    frames: int
    file_frames: int  # frames in the file (at its own rate)
    file_fps: float
    speed: float  # mean joint speed of the window, skeleton units per second
    median_speed: float  # the median over all candidate windows
    candidates: int  # windows compared
    files: int  # files they came from

    @property
    def file_range(self) -> tuple[int, int]:
        """First and last file frame of the window (0-based, the file's numbering)."""
        return self.start * self.step, (self.start + self.frames - 1) * self.step

    def describe(self) -> str:
        """The file, the take and side for a hand, and which of its frames."""
        where = self.source
        if self.skeleton == "hand":
            take, side = self.path.parent.name, self.path.stem.removesuffix("Hand")
            where += f" (take {take}, {side} hand)"
        a, b = self.file_range
        every = f", every {self.step}th frame of the file's {self.file_fps:.0f} fps" if self.step > 1 else ""
        return f"{where}, file frames {a}-{b} (0-based) of {self.file_frames}{every}"


def _load(path: Path, skeleton: str) -> tuple[bvh_io.BVH, clip_io.Clip, int]:
    template = bvh_io.read(path)
    full = clip_io.from_bvh(template, get_schema(skeleton), name=str(path))
    step = max(int(round(full.fps / DEMO_FPS)), 1)
    return template, full, step


def joint_speed(c: clip_io.Clip) -> np.ndarray:
    """Mean joint speed between consecutive frames (F - 1,), in skeleton units per second."""
    _, pos = forward_kinematics(c.rotations, c.translations, c.schema.parents)
    return np.linalg.norm(np.diff(pos, axis=0), axis=-1).mean(axis=-1) * c.fps


def pick_window(skeleton: str, frames: int, root: str | Path | None = None) -> Window:
    """The demo's clip for ``skeleton``: of every window of ``frames`` frames (at 30 fps, starting on any
    frame) of every test-split file at least that long, the one with the highest mean joint speed. Files
    shorter than the window are left out, so a short burst cannot win; ties go to the first file in the
    split's order and the earliest window."""
    root = data_root(root)
    best, speeds, files = None, [], 0
    for path in split_files(skeleton, "test", root):
        _, full, step = _load(path, skeleton)
        c = full.frames(slice(0, None, step))
        if c.n_frames < frames:
            continue
        files += 1
        cum = np.concatenate([[0.0], np.cumsum(joint_speed(c))])
        w = (cum[frames - 1:] - cum[:len(cum) - frames + 1]) / max(frames - 1, 1)  # window means
        speeds.append(w)
        i = int(np.argmax(w))
        if best is None or w[i] > best[0]:
            best = (float(w[i]), path, step, i, full)
    if best is None:
        raise ValueError(f"no test-split {skeleton} file holds {frames} frames at 30 fps; ask for fewer --frames")
    speed, path, step, start, full = best
    return Window(skeleton, path, path.relative_to(root).as_posix(), step, start, frames, full.n_frames, full.fps,
                  speed, float(np.median(np.concatenate(speeds))), int(sum(len(s) for s in speeds)), files)


def window_clip(w: Window) -> tuple[bvh_io.BVH, clip_io.Clip]:
    template, full, step = _load(w.path, w.skeleton)
    a, b = w.file_range
    return template, full.frames(slice(a, b + 1, step))


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


def frame_errors(a: clip_io.Clip, b: clip_io.Clip) -> np.ndarray:
    """Mean joint-position distance per frame (F,), in the skeleton's units."""
    _, pa = forward_kinematics(a.rotations, a.translations, a.schema.parents)
    _, pb = forward_kinematics(b.rotations, b.translations, b.schema.parents)
    return np.linalg.norm(pa - pb, axis=-1).mean(axis=-1)


def position_error(a: clip_io.Clip, b: clip_io.Clip, frames: np.ndarray) -> float:
    """Mean joint-position error of ``frames``, in the skeleton's units."""
    return float(frame_errors(a, b)[frames].mean())


def file_errors(truth: str | Path, others: dict[str, str | Path], skeleton: str) -> dict[str, np.ndarray]:
    """Per-frame mean joint-position error of each written BVH against the written ground truth."""
    schema = get_schema(skeleton)
    t = clip_io.load(truth, schema)
    return {name: frame_errors(clip_io.load(p, schema), t) for name, p in others.items()}


def plot_errors(path: Path, errors: dict[str, np.ndarray], means: dict[str, float], known: np.ndarray,
                fps: float, units: str, title: str) -> None:
    """A PNG of each method's error per frame, the key frames marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    x = np.arange(len(known))
    styles = {"filled": ("tab:green", "-"), "interpolation": ("tab:blue", "--"), "bezier": ("tab:orange", ":")}
    for i, k in enumerate(np.flatnonzero(known)):
        ax.axvline(k, color="0.8", lw=0.8, zorder=0, label="key frame" if i == 0 else None)
    ax.plot(x[known], np.zeros(int(known.sum())), "k|", ms=12, mew=1.5)
    for key, label in METHODS:
        color, ls = styles[key]
        ax.plot(x, errors[key], color=color, ls=ls, lw=1.6, label=f"{label}: mean {means[key]:.4g} {units}")
    ax.set_xlabel(f"frame (at {fps:.0f} fps; {len(x) / fps:.1f} s)")
    ax.set_ylabel(f"mean joint position error ({units})")
    ax.set_xlim(0, len(x) - 1)
    ax.set_ylim(0, 1.3 * max(float(max(e.max() for e in errors.values())), 1e-9))  # room for the legend
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper center", ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "n/a"


def bad_option(every: int, frames: int, out_dir: str | Path) -> str | None:
    """The first of ``anyfill demo``'s options that cannot work, checked before any clip is read (``--every 1`` kept
    every frame and failed with the server's 422 once the clips were picked and the server started; ``--out ""`` wrote
    into the current folder)."""
    return options.first(
        options.whole("--frames", frames, 3, MAX_FRAMES, f" (frames of each clip at {DEMO_FPS:g} fps: at most a "
                      "request's)"),
        options.whole("--every", every, 2, max(frames - 1, 2), f" (a key every N of the {frames} frames, and on the "
                      f"last: 1 keys every frame, leaving nothing to fill; {max(frames - 1, 2)} keys the first and the "
                      "last only)"),
        options.folder("--out", str(out_dir)),
    )


def run(every: int = 10, frames: int = 121, out_dir: str | Path = "demo-output", quiet: bool = False) -> list[dict]:
    """Fill one window per skeleton through a real server; write the BVHs and plots into ``out_dir``."""
    import httpx

    say = (lambda *a, **k: None) if quiet else print
    problem = bad_option(every, frames, out_dir)
    if problem:
        raise ValueError(problem)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    windows = {s: pick_window(s, frames) for s in SKELETONS}
    say(f"picked the clips in {time.perf_counter() - t0:.1f} s")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "token"
        t0 = time.perf_counter()
        proc, url = start_server(None, threads=2, workers=1, token_file=token_file)
        say(f"backend up at {url} in {time.perf_counter() - t0:.1f} s")
        try:
            headers = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
            for skeleton in SKELETONS:
                w = windows[skeleton]
                template, c = window_clip(w)
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
                ir, it = interpolate(c.rotations[None], c.translations[None], known)
                br, bt = bezier(c.rotations[None], c.translations[None], known, c.schema)
                clips = {"truth": c, "filled": filled,
                         "interpolation": clip_io.Clip(c.schema, c.fps, ir[0], it[0]),
                         "bezier": clip_io.Clip(c.schema, c.fps, br[0], bt[0])}
                files = {}
                for key, clip in clips.items():
                    files[key] = out_dir / f"{skeleton}-{key}.bvh"
                    bvh_io.write(clip_io.to_bvh(clip, template), files[key])
                # every error from the files as written (what a person opens in Blender)
                errors = file_errors(files["truth"], {k: files[k] for k, _ in METHODS}, skeleton)
                target = np.flatnonzero(~known)
                means = {k: float(errors[k][target].mean()) for k, _ in METHODS}
                units = c.schema.units.split(" ")[0]
                png = out_dir / f"{skeleton}-error.png"
                a, b = w.file_range
                plot_errors(png, errors, means, known, c.fps, units,
                            f"{skeleton}: {w.source} frames {a}-{b}; a key every {every} frames")
                kept = np.abs(quat_align(filled.rotations[known], c.rotations[known]) - c.rotations[known]).max()
                results.append({
                    "skeleton": skeleton, "source": w.source,
                    "take": w.path.parent.name if skeleton == "hand" else None,
                    "side": w.path.stem.removesuffix("Hand") if skeleton == "hand" else None,
                    "file_frames": list(w.file_range), "file_step": w.step, "where": w.describe(),
                    "joint_speed": w.speed, "median_joint_speed": w.median_speed, "candidates": w.candidates,
                    "candidate_files": w.files, "frames": c.n_frames, "fps": c.fps, "every": every,
                    "keys": int(known.sum()), "filled_frames": int(len(target)), "request_ms": wall_ms,
                    "position_error": means["filled"], "interp_position_error": means["interpolation"],
                    "bezier_position_error": means["bezier"], "units": c.schema.units,
                    "keys_unchanged": bool(kept < 1e-9),
                    "outputs": {k: str(p) for k, p in files.items()} | {"plot": str(png)},
                    "output": str(files["filled"]),
                })
                say(report(results[-1]))
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return results


def report(r: dict) -> str:
    """What the demo prints for one clip."""
    u = r["units"].split(" ")[0]
    fill, interp, bez = r["position_error"], r["interp_position_error"], r["bezier_position_error"]
    rule = RULE.format(frames=r["frames"], skeleton=r["skeleton"])
    lines = [
        f"{r['skeleton']}: {r['where']}",
        f"  why this clip: {rule}: {r['joint_speed']:.4g} {u}/s, against a median of "
        f"{r['median_joint_speed']:.4g} {u}/s over the {r['candidates']} windows of {r['candidate_files']} files",
        f"  {r['frames']} frames at {r['fps']:.0f} fps, a key every {r['every']} frames ({r['keys']} keys); "
        f"the server filled {r['filled_frames']} frames in {r['request_ms']:.0f} ms; keys unchanged: "
        f"{'yes' if r['keys_unchanged'] else 'NO'}",
        f"  mean joint position error over the filled frames, in {r['units']}, from the written files:",
        f"    fill (model {r['skeleton']})  {fill:.4g}  (error {_ratio(fill, interp)} interpolation's, "
        f"{_ratio(fill, bez)} Bezier's)",
        f"    interpolation       {interp:.4g}",
        f"    Blender Bezier      {bez:.4g}",
    ]
    beaten = [name for err, name in ((interp, "interpolation"), (bez, "Blender Bezier")) if err < fill]
    if not beaten:
        verdict = "the model is closer to the capture than interpolation and Blender Bezier on this clip"
    else:
        verdict = (f"the model LOSES on this clip: {' and '.join(beaten)} "
                   f"{'is' if len(beaten) == 1 else 'are'} closer to the capture")
    lines.append(f"  {verdict}")
    o = r["outputs"]
    lines.append("  wrote " + ", ".join(o[k] for k in ("truth", "filled", "interpolation", "bezier", "plot")))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``anyfill demo`` (its arguments: :mod:`backend.commands`)."""
    problem = bad_option(args.every, args.frames, args.out)
    if problem:
        print(f"anyfill demo: error: {problem}", file=sys.stderr)
        return 2
    run(args.every, args.frames, args.out)
    return 0
