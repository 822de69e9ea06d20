"""``anyfill bench keys``: the animator's use of Fill, a key every n frames, on the test split.

The LaFAN1 protocol (``bench inbetween``) asks for one gap after ten context frames; an animator keys a
pose every few frames and fills the rest. This benchmark keys frame 0 and every n-th frame after it in
each protocol window (65 frames), hides the others and scores the frames between the first and the last
key: L2Q and L2P as in ``bench inbetween`` (NPSS needs an unbroken run of frames, so it is left out), and
the pop ratio (``bench inbetween``'s :func:`pop_ratio`: the steps into and out of every key).
Any method works: ``interp``, a shipped model, or a model file (an untrained model with a model's
settings is the curve that model corrects, so a Catmull-Rom curve like Blender's automatic handles is
one ``--method`` away).

``wrist="known"`` (``--wrist known``, the hand): the animator's full rig, whose arm gives the wrist on every
frame; only the fingers are keyed every n frames, and the fingers are scored in the wrist's frame
(:func:`score_in_wrist_frame`), so the wrist's own error, given, does not drown theirs.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from training.bench.inbetween import (
    STATS_STRIDE,
    STATS_WINDOW,
    WINDOW,
    Conventions,
    Method,
    fill_and_score,
    load_protocol_clips,
    pop_ratio,
    protocol_windows,
    resolve_method,
)
from training.inbetween.metrics import l2p, l2q
from training.motion.rotations import quat_align, quat_identity
from training.motion.skeleton import Schema, forward_kinematics, get_schema
from training.motion.splits import data_root, split_files
from training.motion.windows import Windows, cut

EVERY = (5, 10, 20)
WRIST = ("keyed", "known")  # keyed: the wrist keyed with the fingers; known: given on every frame (a full rig)


def check_every(every: Sequence[int], name: str = "every", length: int = WINDOW) -> None:
    """Key spacings a window of ``length`` frames holds: 2 (a frame between two keys) to ``length - 1`` (a
    second key in the window); ValueError naming ``name`` and the range."""
    if not len(every):
        raise ValueError(f"{name} must name at least one key spacing")
    bad = [n for n in every if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 2 <= n <= length - 1]
    if bad:
        raise ValueError(f"{name} must be whole numbers of frames from 2 (a frame between two keys) to {length - 1} "
                         f"(a second key in the {length}-frame window), got {', '.join(map(str, bad))}")


def keyed_every(every: int, length: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """The known frames (length,) with a key at frame 0 and every ``every`` frames after it, and the
    scored frames: those between the first and the last key that are not keys."""
    check_every([every], length=length)
    frames = np.arange(length)
    known = frames % every == 0
    last = frames[known][-1]
    return known, frames[(~known) & (frames < last)]


def keyed_cells(every: int, schema: Schema, wrist: str = "keyed", partial: int | None = None,
                length: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """The known cells (length, J) of :func:`keyed_every` and its scored frames; with ``wrist="known"`` the
    wrist (the hand's root, ``WRIST``: its rotation and its translation) is known on every frame as well;
    with ``partial=K`` only the first K fingers (thumb, index, middle, ring, pinky: the grip an animator keys
    first) are keyed, the others never."""
    if wrist not in WRIST:
        raise ValueError(f"wrist must be one of {', '.join(WRIST)}, got {wrist!r}")
    if (wrist == "known" or partial is not None) and schema.root != 0:
        raise ValueError(f"wrist known and partial keys are for the hand skeleton, not {schema.name}")
    known, frames = keyed_every(every, length)
    cells = np.repeat(known[:, None], schema.n_joints, axis=1)
    if partial is not None:
        groups = schema.branches()
        if not 0 <= partial <= len(groups):
            raise ValueError(f"partial must be a number of fingers, 0 to {len(groups)}, got {partial}")
        for g in groups[partial:]:
            cells[:, g] = False
    if wrist == "known":
        cells[:, schema.root] = True
    return cells, frames


def in_wrist_frame(rot: np.ndarray, trans: np.ndarray, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """Global rotations (..., J, 4) and positions (..., J, 3) of every joint in the wrist's frame: forward
    kinematics with the root's rotation and translation taken out (the wrist at the origin, unturned)."""
    rot, trans = np.array(rot, dtype=np.float64), np.array(trans, dtype=np.float64)
    rot[..., schema.root, :] = quat_identity()
    trans[..., schema.root, :] = 0.0
    return forward_kinematics(rot, trans, schema.parents)


def fingertips(schema: Schema) -> np.ndarray:
    """The joints without children: the hand's tips (its end sites have zero offset, so the DIP joints, and
    the thumb's IP, are where the fingers end)."""
    return np.array([j for j, c in enumerate(schema.children()) if not c])


@lru_cache(maxsize=4)
def tip_stats(skeleton: str, root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (tips, 3) of the fingertips' positions in the wrist's frame over the training windows
    (50 frames every 20, as :func:`~training.bench.inbetween.position_stats`)."""
    schema = get_schema(skeleton)
    w = cut(load_protocol_clips(split_files(skeleton, "train", root), schema), STATS_WINDOW, STATS_STRIDE)
    _, pos = in_wrist_frame(w.rotations, w.translations, schema)
    tips = fingertips(schema)
    flat = pos[:, :, tips].reshape(-1, len(tips), 3)
    return flat.mean(axis=0), flat.std(axis=0)


def score_in_wrist_frame(schema: Schema, gt_rot, gt_trans, rot, trans, frames: np.ndarray, keys: np.ndarray,
                         mean: np.ndarray, std: np.ndarray) -> dict:
    """The fingers' scores in the wrist's frame over ``frames`` (the frames to score, keys among them for the
    pop ratio; ``keys``: those that are keys). The wrist is taken out of both motions (:func:`in_wrist_frame`),
    so a given wrist, or a wrong one, changes nothing and every number is the fingers' own.

    - ``L2Q``: the benchmark's L2Q (:func:`~training.inbetween.metrics.l2q`) on the finger joints' rotations
      relative to the wrist (the wrist's children's local rotations composed down each chain; the wrist
      itself, identity in both, excluded). With the wrist given this equals the global L2Q of the fingers.
    - ``L2P``: the benchmark's L2P (:func:`~training.inbetween.metrics.l2p`) on the five fingertips' positions
      in the wrist's frame, standardised per tip and axis by the training set's statistics of the same
      (:func:`tip_stats`): the same style as ``bench inbetween``'s L2P, where the whole hand's global
      positions would be dominated by the wrist's travel, not by how the fingers bend.
    - ``tips``: the mean distance of a fingertip from its true place, in the skeleton's units (the hand's
      decimetres): what an animator sees, free of the standardisation's weighting.
    - ``pop``: :func:`~training.bench.inbetween.pop_ratio` on the joints' positions in the wrist's frame."""
    g_rot, g_pos = in_wrist_frame(gt_rot[:, frames], gt_trans[:, frames], schema)
    p_rot, p_pos = in_wrist_frame(rot[:, frames], trans[:, frames], schema)
    fingers = np.array([j for j in range(schema.n_joints) if j != schema.root])
    tips = fingertips(schema)
    scored = ~np.isin(frames, keys)
    gq = g_rot[:, scored][:, :, fingers]
    pq = quat_align(p_rot[:, scored][:, :, fingers], gq)
    gp, pp = g_pos[:, scored][:, :, tips], p_pos[:, scored][:, :, tips]
    return {"L2Q": l2q(pq, gq), "L2P": l2p(pp, gp, mean, std),
            "tips": float(np.linalg.norm(pp - gp, axis=-1).mean()),
            "pop": pop_ratio(g_pos, p_pos, frames, keys), "windows": per_window(pq, gq, pp, gp, mean, std)}


def score_every(method: Method, windows: Windows, every: int, mean: np.ndarray, std: np.ndarray,
                conventions: Conventions | None = None, wrist: str = "keyed", partial: int | None = None) -> dict:
    """One key spacing's scores on every window (see :func:`run`); ``mean``, ``std``: the statistics the
    positions are standardised with (the whole skeleton's, or with the wrist known the tips' own)."""
    known, frames = keyed_every(every)
    span = np.arange(frames[0] - 1, frames[-1] + 2)  # the scored frames and the keys around them
    keys = span[known[span]]
    if wrist == "known" or partial is not None:
        cells, _ = keyed_cells(every, windows.schema, wrist, partial)
        rot, trans, elapsed = fill_and_score(method, windows, cells, span, conventions, local=True)
        gt_rot, gt_trans = windows.rotations[:, : len(known)], windows.translations[:, : len(known)]
        return {**score_in_wrist_frame(windows.schema, gt_rot, gt_trans, rot, trans, span, keys, mean, std),
                "seconds": elapsed}
    gq, pq, gp, pp, elapsed = fill_and_score(method, windows, known, span, conventions)
    scored = ~known[span]
    gq, pq, gps, pps = gq[:, scored], pq[:, scored], gp[:, scored], pp[:, scored]
    return {"L2Q": l2q(pq, gq), "L2P": l2p(pps, gps, mean, std), "seconds": elapsed,
            "pop": pop_ratio(gp, pp, span, keys), "windows": per_window(pq, gq, pps, gps, mean, std)}


def run(skeleton: str, method_name: str, every: Sequence[int] = EVERY, data: Sequence[str | Path] | None = None,
        root: str | Path | None = None, conventions: Conventions | None = None, wrist: str = "keyed",
        partial: int | None = None, method: Method | None = None) -> dict:
    """Score a method with a key every n frames for each n of ``every``; ``conventions``: the windows put in
    other rig conventions first (see :class:`~training.bench.inbetween.Conventions`); ``wrist``: ``keyed``
    (keyed with the fingers, the skeleton scored whole) or ``known`` (the hand's wrist given on every frame to
    every method alike, the fingers scored in its frame: :func:`score_in_wrist_frame`); ``partial``: only that
    many fingers keyed (:func:`keyed_cells`), scored in the wrist's frame too; ``method``: ``method_name``
    already resolved (:func:`~training.bench.inbetween.resolve_method`)."""
    schema = get_schema(skeleton)
    check_every(every)  # spacings and a mode this skeleton has, before anything is loaded
    keyed_cells(2, schema, wrist, partial)
    method = method or resolve_method(method_name, schema)
    windows, mean, std = protocol_windows(skeleton, data, root)
    result = {"method": method_name, "skeleton": skeleton, "windows": len(windows), "every": {}}
    if wrist == "known" or partial is not None:
        mean, std = tip_stats(skeleton, str(data_root(root)))
        result["wrist"] = (f"{wrist}: {'given on every frame' if wrist == 'known' else 'keyed'}; fingers keyed; "
                           "L2Q, L2P and tips in the wrist's frame")
    if partial is not None:
        result["partial"] = f"the first {partial} fingers keyed, the others never (rest pose for interp, bezier)"
    if conventions is not None:
        result["conventions"] = conventions.describe(schema)
    for n in every:
        result["every"][str(n)] = score_every(method, windows, n, mean, std, conventions, wrist, partial)
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
        if bands > len(key):  # an empty band has no mean (it printed NaN rows and wrote NaN, not JSON)
            raise ValueError(f"--bands {bands}: more bands than the {len(key)} windows scored at keys every {n}")
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
    return {n: {m: result["every"][n][m] / baseline["every"][n][m] for m in ("L2Q", "L2P", "tips")
                if m in result["every"][n] and m in baseline["every"][n]} for n in result["every"]}


def format_table(result: dict, title: str | None = None) -> str:
    cols = list(result["every"])
    wrist = f", wrist {result['wrist'].split(':')[0]} (fingers in the wrist's frame)" if "wrist" in result else ""
    if "partial" in result:
        wrist += f", {result['partial'].split(' fingers')[0].removeprefix('the ')} fingers keyed"
    lines = [title or f"keys every n frames: method {result['method']}, skeleton {result['skeleton']}, "
                      f"{result['windows']} windows{wrist}",
             f"{'metric':<6}" + "".join(f"{'every ' + n:>10}" for n in cols)]
    for m in ("L2Q", "L2P", "tips", "pop"):
        if all(m in result["every"][n] for n in cols):
            lines.append(f"{m:<6}" + "".join(f"{result['every'][n][m]:>10.4f}" for n in cols))
    return "\n".join(lines)
