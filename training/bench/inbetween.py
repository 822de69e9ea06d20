"""``anyfill bench inbetween``: the LaFAN1 in-betweening protocol (Harvey et al. 2020) on our data.

Test windows of 65 frames every 40 frames (hands at 30 fps: every 4th frame of the 120 fps capture, once
per phase offset); 10 context frames, a gap of n frames, one target frame at 10 + n; only the gap is
scored. L2Q on global quaternions, L2P on global positions standardised by training-set statistics
(windows of 50 frames every 20), NPSS on flattened global quaternions. Every window is first put in its
canonical frame (see :mod:`training.motion.windows`).

A method is any callable ``method(batch, known) -> (rotations, translations)``: ``batch`` is a
:class:`~training.motion.windows.Windows` whose unknown frames are NaN (the method never sees the
answer), ``known`` the (T,) mask of known frames, or (T, J) of known cells (the same for every window).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from training.inbetween.baselines import BASELINES, by_joint_pattern
from training.inbetween.metrics import l2p, l2q, npss
from training.motion import clip as clip_io
from training.motion.conventions import BENCH_TWISTS, apply_twists, random_twists
from training.motion.rotations import quat_align
from training.motion.skeleton import Schema, forward_kinematics, get_schema
from training.motion.splits import data_root, split_files
from training.motion.windows import Windows, at_protocol_rate, canonical_frame, cut, to_canonical

GAPS = (5, 15, 30, 45)
N_CONTEXT = 10
WINDOW, STRIDE = 65, 40
MAX_GAP = WINDOW - N_CONTEXT - 1  # the longest gap a window holds: the context, the gap, then the target frame
STATS_WINDOW, STATS_STRIDE = 50, 20

Method = Callable[[Windows, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Conventions:
    """Rig conventions the test windows are put in before a method sees them (``--perturb-conventions``):
    the issue's twist joints (forearms, hands, feet, toes, the head's roll) turned about their bone axes by
    exactly +-``twist_deg`` and each knee's hinge tilted by +-``hinge_deg`` (thigh and shin turned together),
    signs drawn per window from ``seed``. No joint position moves. The method's fill is turned back before
    scoring, so L2Q, L2P and NPSS compare with the same ground truth as unperturbed (L2P and L2Q would be
    the same without turning back: positions do not move, and a constant turn on the right of each global
    quaternion keeps the distance between two of them)."""

    twist_deg: float
    hinge_deg: float = 15.0
    seed: int = 0

    def angles(self, schema: Schema, n: int) -> np.ndarray:
        """(n, J) radians: each window's turn of each joint."""
        return random_twists(np.random.default_rng(self.seed), n, schema, self.twist_deg, self.hinge_deg,
                             joints=BENCH_TWISTS.get(schema.name), full=True)

    def describe(self, schema: Schema) -> dict:
        from training.motion.conventions import HINGES, twist_joints

        limit, _ = twist_joints(schema, self.twist_deg, self.hinge_deg, BENCH_TWISTS.get(schema.name))
        return {"twist_deg": self.twist_deg, "hinge_deg": self.hinge_deg, "seed": self.seed,
                "turned": [schema.joints[j] for j in np.flatnonzero(limit > 0)],
                "hinges": [list(p) for p in HINGES.get(schema.name, ())]}


def model_method(path: str | Path, schema: Schema, chunk: int = 64) -> Method:
    """A trained model (checkpoint path or shipped name) as a benchmark method: deterministic fill."""
    from training.inbetween.checkpoint import load_model
    from training.inbetween.fill import fill

    model, _ = load_model(path)
    if model.cfg.skeleton != schema.name:
        raise ValueError(f"{path} fills the {model.cfg.skeleton} skeleton, not {schema.name}")

    def method(batch: Windows, known: np.ndarray):
        n, t, j = batch.rotations.shape[:3]
        cells = np.broadcast_to(as_cells(known)[None], (n, t, j))
        times = np.broadcast_to(np.arange(t) / batch.fps, (n, t))
        rot, trans = np.empty_like(batch.rotations), np.empty_like(batch.translations)
        for s in range(0, n, chunk):
            r = fill(model, batch.rotations[s : s + chunk], batch.translations[s : s + chunk],
                     cells[s : s + chunk], times[s : s + chunk])
            rot[s : s + chunk], trans[s : s + chunk] = r.rotations, r.translations
        return rot, trans

    return method


def as_cells(known: np.ndarray) -> np.ndarray:
    """Known frames (T,) or known cells (T, J) as cells, (T, 1) or (T, J), broadcastable over joints."""
    known = np.asarray(known, dtype=bool)
    return known[:, None] if known.ndim == 1 else known


def resolve_method(name: str, schema: Schema) -> Method:
    """A baseline by name (zero, interp, bezier), or a trained model by checkpoint path or shipped name."""
    if name in BASELINES:
        fill = BASELINES[name]

        def baseline(batch: Windows, known: np.ndarray):
            if np.ndim(known) == 2:
                return by_joint_pattern(fill, batch.rotations, batch.translations, known, batch.schema)
            return fill(batch.rotations, batch.translations, known, batch.schema)

        return baseline
    from training.inbetween.checkpoint import CheckpointError

    try:
        return model_method(name, schema)
    except CheckpointError as e:
        raise KeyError(f"unknown method {name!r}: not {', '.join(BASELINES)}, and {e}") from None


def load_protocol_clips(files: Sequence[str | Path], schema: Schema) -> list[clip_io.Clip]:
    clips = []
    for f in files:
        clips.extend(at_protocol_rate(clip_io.load(f, schema)))
    return clips


@lru_cache(maxsize=4)
def position_stats(skeleton: str, root: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (J, 3) of canonical global positions over training windows (50 frames every 20)."""
    schema = get_schema(skeleton)
    clips = load_protocol_clips(split_files(skeleton, "train", root), schema)
    w = cut(clips, STATS_WINDOW, STATS_STRIDE)
    g_rot, g_pos = w.fk()
    yaw, offset = canonical_frame(g_rot, g_pos, schema, N_CONTEXT - 1)
    _, pos = to_canonical(g_rot, g_pos, yaw, offset)
    flat = pos.reshape(-1, schema.n_joints, 3)
    return flat.mean(axis=0), flat.std(axis=0)


def scored_globals(schema: Schema, gt_rot, gt_trans, rot, trans, gap: int | slice | np.ndarray):
    """Global quaternions and positions of the scored frames, ground truth and prediction, in the window's
    canonical frame (computed from the ground truth), predictions sign-aligned to it: (gt_quat, pred_quat,
    gt_pos, pred_pos), each (N, F, J, .). ``gap``: the protocol's gap length (frames 10 .. 10 + gap), or
    the scored frames themselves (a slice or index array)."""
    g_rot, g_pos = forward_kinematics(gt_rot, gt_trans, schema.parents)
    p_rot, p_pos = forward_kinematics(rot, trans, schema.parents)
    yaw, offset = canonical_frame(g_rot, g_pos, schema, N_CONTEXT - 1)
    g_rot, g_pos = to_canonical(g_rot, g_pos, yaw, offset)
    p_rot, p_pos = to_canonical(p_rot, p_pos, yaw, offset)
    f = slice(N_CONTEXT, N_CONTEXT + gap) if isinstance(gap, int) else gap
    return g_rot[:, f], quat_align(p_rot[:, f], g_rot[:, f]), g_pos[:, f], p_pos[:, f]


def per_window_errors(schema: Schema, gt_rot, gt_trans, rot, trans, gap: int, mean, std):
    """L2Q and L2P of each window separately (N,), for best-of-N and diversity statistics."""
    return errors_of_windows(*scored_globals(schema, gt_rot, gt_trans, rot, trans, gap), mean, std)


def errors_of_windows(gq, pq, gp, pp, mean, std) -> tuple[np.ndarray, np.ndarray]:
    """L2Q and L2P of each window (N,) from :func:`scored_globals`' truth and fill."""
    q = np.array([l2q(pq[i : i + 1], gq[i : i + 1]) for i in range(len(gq))])
    p = np.array([l2p(pp[i : i + 1], gp[i : i + 1], mean, std) for i in range(len(gp))])
    return q, p


def check_gaps(gaps: Sequence[int], name: str = "gaps") -> None:
    """Gap lengths the protocol's windows hold: 1 to :data:`MAX_GAP` frames (ValueError naming ``name`` and the
    range)."""
    if not len(gaps):
        raise ValueError(f"{name} must name at least one gap length")
    bad = [g for g in gaps if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 1 <= g <= MAX_GAP]
    if bad:
        raise ValueError(f"{name} must be whole numbers of frames from 1 to {MAX_GAP} (a {WINDOW}-frame window holds "
                         f"{N_CONTEXT} context frames, the gap and 1 target frame), got {', '.join(map(str, bad))}")


def protocol_known(gap: int) -> np.ndarray:
    """The protocol's known frames (T,) for a gap of ``gap`` frames: the context, then the target frame."""
    known = np.zeros(N_CONTEXT + gap + 1, dtype=bool)
    known[:N_CONTEXT] = True
    known[-1] = True
    return known


def pop_ratio(gt_pos: np.ndarray, pred_pos: np.ndarray, frames: np.ndarray, keys: np.ndarray) -> float:
    """How hard a fill arrives at its keys: over the frame-to-frame steps into and out of each key (steps
    between ``frames`` (F,) that touch a frame of ``keys``), each window's largest joint displacement, summed
    over the windows, divided by the same for the ground truth. 1: the motion's own speed at the keys; a pop
    shows as a ratio above 1. Positions (N, F, J, 3) of the frames, keys included."""
    frames, keys = np.asarray(frames), set(np.asarray(keys).tolist())
    steps = [i for i in range(len(frames) - 1)
             if frames[i + 1] == frames[i] + 1 and (frames[i] in keys or frames[i + 1] in keys)]
    if not steps:
        return float("nan")
    s = np.asarray(steps)

    def largest(pos: np.ndarray) -> np.ndarray:  # (N,)
        return np.linalg.norm(pos[:, s + 1] - pos[:, s], axis=-1).max(axis=(1, 2))

    truth = largest(gt_pos).sum()
    return float(largest(pred_pos).sum() / truth) if truth > 0 else float("nan")


@dataclass
class GapScore:
    L2Q: float
    L2P: float
    NPSS: float
    pop: float


def score_gap(
    method: Method, windows: Windows, gap: int, mean: np.ndarray, std: np.ndarray,
    conventions: Conventions | None = None,
) -> tuple[GapScore, float]:
    """Score one gap length on every window; returns the scores and the method's wall time (s). The gap is
    scored with the two keys around it too, for the pop ratio (:func:`pop_ratio`)."""
    known = protocol_known(gap)
    around = np.arange(N_CONTEXT - 1, N_CONTEXT + gap + 1)
    gq, pq, gp, pp, elapsed = fill_and_score(method, windows, known, around, conventions)
    gap_only = slice(1, -1)
    gq, pq, gpg, ppg = gq[:, gap_only], pq[:, gap_only], gp[:, gap_only], pp[:, gap_only]
    return GapScore(L2Q=l2q(pq, gq), L2P=l2p(ppg, gpg, mean, std), NPSS=npss(pq, gq),
                    pop=pop_ratio(gp, pp, around, around[[0, -1]])), elapsed


def fill_and_score(method: Method, windows: Windows, known: np.ndarray, frames: int | slice | np.ndarray,
                   conventions: Conventions | None = None, local: bool = False):
    """Hide every frame of the first ``len(known)`` that is not ``known`` (or, for ``known`` cells (T, J), every
    cell), let the method fill them, and return the scored globals of ``frames`` (:func:`scored_globals`) and
    the method's wall time (s); with ``local=True``, the method's fill (local rotations, translations) instead
    of the scored globals, for scores of another kind. ``conventions``: the method sees the windows in these
    rig conventions; its fill is turned back."""
    length = len(known)
    cells = as_cells(known)[None, :, :, None]
    offsets = cells.copy()  # translations shown: a joint never known still has its bone offset (the rig's)
    if cells.shape[2] > 1 and not cells.any(axis=1).all():
        offsets[:, :, [j for j in range(windows.schema.n_joints) if j not in windows.schema.moving]] = True
    gt_rot = windows.rotations[:, :length]
    gt_trans = windows.translations[:, :length]
    seen_rot, seen_trans, angles = gt_rot, gt_trans, None
    if conventions is not None:
        angles = conventions.angles(windows.schema, len(gt_rot))
        seen_rot, seen_trans = apply_twists(gt_rot, gt_trans, angles, windows.schema)
    masked = Windows(
        windows.schema, windows.fps,
        np.where(cells, seen_rot, np.nan),
        np.where(offsets, seen_trans, np.nan),
        windows.sources,
    )
    t0 = time.perf_counter()
    rot, trans = method(masked, known)
    elapsed = time.perf_counter() - t0
    rot, trans = np.asarray(rot, dtype=np.float64), np.asarray(trans, dtype=np.float64)
    if rot.shape != gt_rot.shape or trans.shape != gt_trans.shape:
        raise ValueError(
            f"method returned shapes {rot.shape}, {trans.shape}; expected {gt_rot.shape}, {gt_trans.shape}"
        )
    if not (np.isfinite(rot).all() and np.isfinite(trans).all()):
        raise ValueError("method returned NaN or infinite values")
    rot = rot / np.linalg.norm(rot, axis=-1, keepdims=True)
    if angles is not None:  # back in the ground truth's conventions
        rot, trans = apply_twists(rot, trans, -angles, windows.schema)
    if local:
        return rot, trans, elapsed
    return (*scored_globals(windows.schema, gt_rot, gt_trans, rot, trans, frames), elapsed)


def run(
    skeleton: str,
    method_name: str,
    data: Sequence[str | Path] | None = None,
    gaps: Sequence[int] = GAPS,
    root: str | Path | None = None,
    conventions: Conventions | None = None,
    method: Method | None = None,
) -> dict:
    """Score a method on the test split (or on the given BVH files or folders of them); ``conventions``: the
    windows put in other rig conventions first (see :class:`Conventions`); ``method``: ``method_name`` already
    resolved (:func:`resolve_method`)."""
    check_gaps(gaps)
    method = method or resolve_method(method_name, get_schema(skeleton))
    windows, mean, std = protocol_windows(skeleton, data, root)
    result = {"method": method_name, "skeleton": skeleton, "windows": len(windows), "gaps": {}, "seconds": {}}
    if conventions is not None:
        result["conventions"] = conventions.describe(get_schema(skeleton))
    for gap in gaps:
        s, elapsed = score_gap(method, windows, gap, mean, std, conventions)
        result["gaps"][str(gap)] = {"L2Q": s.L2Q, "L2P": s.L2P, "NPSS": s.NPSS, "pop": s.pop}
        result["seconds"][str(gap)] = elapsed
    return result


def protocol_windows(
    skeleton: str, data: Sequence[str | Path] | None = None, root: str | Path | None = None
) -> tuple[Windows, np.ndarray, np.ndarray]:
    """The protocol's windows of the test split (or of the given BVH files or folders of them), and the
    training-set position statistics that standardise L2P."""
    schema = get_schema(skeleton)
    root_s = str(data_root(root))
    if data:
        files: list[Path] = []
        for d in map(Path, data):
            files.extend(sorted(d.rglob("*.bvh")) if d.is_dir() else [d])
        if not files:
            raise FileNotFoundError(f"no .bvh files in {', '.join(map(str, data))}")
    else:
        files = split_files(skeleton, "test", root_s)
    windows = cut(load_protocol_clips(files, schema), WINDOW, STRIDE)
    if len(windows) == 0:
        raise ValueError(f"no window of {WINDOW} frames at {windows.fps:g} fps in the given files")
    mean, std = position_stats(skeleton, root_s)
    return windows, mean, std


def ratios(result: dict, baseline: dict) -> dict:
    """Each metric of ``result`` divided by the same metric of ``baseline`` (same windows)."""
    return {g: {m: result["gaps"][g][m] / baseline["gaps"][g][m] if baseline["gaps"][g][m] else float("nan")
                for m in ("L2Q", "L2P", "NPSS")} for g in result["gaps"]}


def record_in_card(path: str | Path, result: dict, baseline: dict | None, command: str) -> None:
    """Write benchmark numbers into a model's card (``metrics.inbetween``), with the command used."""
    from training.inbetween.checkpoint import read_card, resolve_path, write_card

    p = resolve_path(path)
    card = read_card(p)
    entry = {"command": command, "windows": result["windows"], "gaps": result["gaps"]}
    if baseline is not None:
        entry["baseline"] = {"method": baseline["method"], "gaps": baseline["gaps"]}
        entry["ratio_to_baseline"] = ratios(result, baseline)
    card.setdefault("metrics", {})["inbetween"] = entry
    write_card(p, card)


def format_table(result: dict) -> str:
    gaps = list(result["gaps"])
    lines = [
        f"in-betweening: method {result['method']}, skeleton {result['skeleton']}, {result['windows']} windows",
        f"{'metric':<6}" + "".join(f"{'gap ' + g:>10}" for g in gaps),
    ]
    for m in ("L2Q", "L2P", "NPSS", "pop"):
        if all(m in result["gaps"][g] for g in gaps):
            lines.append(f"{m:<6}" + "".join(f"{result['gaps'][g][m]:>10.4f}" for g in gaps))
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")
