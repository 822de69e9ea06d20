"""``anyfill bench keys``: the animator's use of Fill, a key every n frames, on the test split.

The LaFAN1 protocol (``bench inbetween``) asks for one gap after ten context frames; an animator keys a
pose every few frames and fills the rest. This benchmark keys frame 0 and every n-th frame after it in
each protocol window (65 frames), hides the others and scores the frames between the first and the last
key: L2Q and L2P as in ``bench inbetween`` (NPSS needs an unbroken run of frames, so it is left out), and
the pop ratio (``bench inbetween``'s :func:`pop_ratio`: the steps into and out of every key).
Any method works: ``interp``, a shipped model, or a model file (an untrained model with a model's
settings is the curve that model corrects, so a Catmull-Rom curve like Blender's automatic handles is
one ``--method`` away).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.bench.inbetween import WINDOW, Conventions, fill_and_score, pop_ratio, protocol_windows, resolve_method
from training.inbetween.metrics import l2p, l2q
from training.motion.skeleton import get_schema

EVERY = (5, 10, 20)


def keyed_every(every: int, length: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """The known frames (length,) with a key at frame 0 and every ``every`` frames after it, and the
    scored frames: those between the first and the last key that are not keys."""
    if every < 2:
        raise ValueError(f"every must be at least 2 (a frame between two keys), got {every}")
    frames = np.arange(length)
    known = frames % every == 0
    last = frames[known][-1]
    return known, frames[(~known) & (frames < last)]


def run(skeleton: str, method_name: str, every: Sequence[int] = EVERY, data: Sequence[str | Path] | None = None,
        root: str | Path | None = None, conventions: Conventions | None = None) -> dict:
    """Score a method with a key every n frames for each n of ``every``; ``conventions``: the windows put in
    other rig conventions first (see :class:`~training.bench.inbetween.Conventions`)."""
    method = resolve_method(method_name, get_schema(skeleton))
    windows, mean, std = protocol_windows(skeleton, data, root)
    result = {"method": method_name, "skeleton": skeleton, "windows": len(windows), "every": {}}
    if conventions is not None:
        result["conventions"] = conventions.describe(get_schema(skeleton))
    for n in every:
        known, frames = keyed_every(n)
        span = np.arange(frames[0] - 1, frames[-1] + 2)  # the scored frames and the keys around them
        gq, pq, gp, pp, elapsed = fill_and_score(method, windows, known, span, conventions)
        scored = ~known[span]
        gq, pq, gps, pps = gq[:, scored], pq[:, scored], gp[:, scored], pp[:, scored]
        result["every"][str(n)] = {"L2Q": l2q(pq, gq), "L2P": l2p(pps, gps, mean, std), "seconds": elapsed,
                                   "pop": pop_ratio(gp, pp, span, span[known[span]]),
                                   "windows": per_window(pq, gq, pps, gps, mean, std)}
    return result


def per_window(pq: np.ndarray, gq: np.ndarray, pp: np.ndarray, gp: np.ndarray, mean: np.ndarray,
               std: np.ndarray) -> dict[str, list[float]]:
    """Each window's L2Q and L2P (every window scores as many frames, so their means are the benchmark's
    numbers): what :func:`by_difficulty` splits the score with."""
    return {"L2Q": [l2q(pq[i : i + 1], gq[i : i + 1]) for i in range(len(pq))],
            "L2P": [l2p(pp[i : i + 1], gp[i : i + 1], mean, std) for i in range(len(pp))]}


def by_difficulty(result: dict, baseline: dict, bands: int = 5, metric: str = "L2P") -> dict:
    """The ratio to the baseline by how hard the windows are: windows sorted by the baseline's own error
    (``metric``; for interpolation, slow or steady motion first) and cut into ``bands`` bands of equal size.
    Per band: the baseline's mean error, the ratio of the means for L2Q and L2P, and the share of windows on
    which the method is worse than the baseline. A method that only adds noise where the baseline is already
    near exact shows it in the first band; the whole-split ratio hides it."""
    if bands < 1:
        raise ValueError(f"bands must be at least 1, got {bands}")
    out = {}
    for n in result["every"]:
        ours, base = result["every"][n]["windows"], baseline["every"][n]["windows"]
        key = np.asarray(base[metric])
        rows = []
        for band in np.array_split(np.argsort(key, kind="stable"), bands):
            row = {"windows": len(band), f"baseline_{metric}": float(key[band].mean())}
            for m in ("L2Q", "L2P"):
                row[m] = float(np.mean(np.asarray(ours[m])[band]) / np.mean(np.asarray(base[m])[band]))
            row["share_worse"] = float(np.mean(np.asarray(ours[metric])[band] > key[band]))
            rows.append(row)
        out[n] = rows
    return out


def format_difficulty(table: dict, method: str, baseline: str, metric: str = "L2P") -> str:
    lines = [f"ratio {method} / {baseline} by difficulty (windows in bands of the baseline's {metric})",
             f"{'every':>5} {'band':>4} {'windows':>7} {baseline + ' ' + metric:>14} {'L2Q':>7} {'L2P':>7} "
             f"{'worse':>6}"]
    for n, rows in table.items():
        for i, r in enumerate(rows):
            lines.append(f"{n:>5} {i + 1:>4} {r['windows']:>7} {r[f'baseline_{metric}']:>14.4f} {r['L2Q']:>7.3f} "
                         f"{r['L2P']:>7.3f} {r['share_worse']:>6.2f}")
    return "\n".join(lines)


def ratios(result: dict, baseline: dict) -> dict:
    """Each metric of ``result`` divided by the same metric of ``baseline`` (same windows)."""
    return {n: {m: result["every"][n][m] / baseline["every"][n][m] for m in ("L2Q", "L2P")}
            for n in result["every"]}


def format_table(result: dict, title: str | None = None) -> str:
    cols = list(result["every"])
    lines = [title or f"keys every n frames: method {result['method']}, skeleton {result['skeleton']}, "
                      f"{result['windows']} windows",
             f"{'metric':<6}" + "".join(f"{'every ' + n:>10}" for n in cols)]
    for m in ("L2Q", "L2P", "pop"):
        if all(m in result["every"][n] for n in cols):
            lines.append(f"{m:<6}" + "".join(f"{result['every'][n][m]:>10.4f}" for n in cols))
    return "\n".join(lines)
