"""``anyfill bench sampling``: the thesis experiment on motion, and ``anyfill bench pose``.

Sampling: on evenly spaced test windows (10 context frames, a gap, a target frame), draw N variations
with each order (forward, random, lowest-entropy, highest-entropy) and each k (cells per step), and
score best-of-N and mean L2Q / L2P, and the diversity of the samples (mean pairwise L2P between
variations), with the deterministic fill beside them.

Pose completion: on hand test frames, key the wrist and a subset of fingers, fill the other finger
joints as a single pose, and compare their error with a mean-pose baseline (the training set's mean
local rotation of each joint).
"""

from __future__ import annotations

import itertools
from functools import lru_cache

import numpy as np

from training.bench.inbetween import (
    N_CONTEXT,
    STRIDE,
    WINDOW,
    errors_of_windows,
    load_protocol_clips,
    per_window_errors,
    position_stats,
    protocol_known,
    scored_globals,
)
from training.inbetween.checkpoint import load_model
from training.inbetween.fill import fill
from training.inbetween.metrics import l2p, l2q
from training.inbetween.sampling import ORDERS, calibration_of, sample
from training.motion.rotations import quat_angle, quat_normalize
from training.motion.skeleton import forward_kinematics, get_schema
from training.motion.splits import split_files
from training.motion.windows import at_protocol_rate, cut


@lru_cache(maxsize=4)
def _all_windows(skeleton: str, split: str, root=None):
    from training.inbetween.datasets import load_clips

    if split == "test":
        clips = load_protocol_clips(split_files(skeleton, "test", root), get_schema(skeleton))
    elif split == "val":
        clips = load_clips(skeleton, "val", root, (30.0,), mirror=False)
    else:
        raise ValueError(f"split must be 'test' or 'val', got {split!r}")
    return cut(clips, WINDOW, STRIDE)


def sampling_windows(skeleton: str, split: str, gap: int, windows: int, root=None):
    """``windows`` evenly spaced protocol windows (10 context frames, a gap, a target frame) of the test split
    or of the validation takes (``val``: carved out of the training split as training does, never the test
    files): (rotations, translations, known, times), the known cells only the context and the target frame."""
    all_w = _all_windows(skeleton, split, None if root is None else str(root))
    pick = np.linspace(0, len(all_w) - 1, windows).round().astype(int)
    length = N_CONTEXT + gap + 1
    gt_rot, gt_trans = all_w.rotations[pick, :length], all_w.translations[pick, :length]
    known = np.broadcast_to(protocol_known(gap)[None, :, None], gt_rot.shape[:3]).copy()
    times = np.broadcast_to(np.arange(length) / all_w.fps, (windows, length)).copy()
    return gt_rot, gt_trans, known, times


def run_sampling(model_name, skeleton: str, gap: int = 15, windows: int = 12, n: int = 8,
                 ks: tuple[int, ...] = (1, 8, 64), orders: tuple[str, ...] = ORDERS,
                 temperature: float = 1.0, seed: int = 0, root=None, progress=None, split: str = "test",
                 refresh: int | None = None, model=None) -> dict:
    """The sampling experiment (module docstring). ``temperature``: a multiple of the model's calibrated
    default (1); ``model``: an already loaded model (its name still reported)."""
    schema = get_schema(skeleton)
    if model is None:
        model, _ = load_model(model_name)
    gt_rot, gt_trans, known, times = sampling_windows(skeleton, split, gap, windows, root)
    mean, std = position_stats(skeleton, None if root is None else str(root))
    masked_rot = np.where(known[..., None], gt_rot, np.nan)
    masked_trans = np.where(known[..., None], gt_trans, np.nan)
    det = fill(model, masked_rot, masked_trans, known, times)
    dq, dp = per_window_errors(schema, gt_rot, gt_trans, det.rotations, det.translations, gap, mean, std)
    result = {"model": str(model_name), "skeleton": skeleton, "variant": model.cfg.variant, "gap": gap,
              "windows": windows, "n": n, "temperature": temperature, "split": split,
              "calibrated": getattr(model, "sampling", None) is not None,
              "spread_scale": temperature * calibration_of(model).temperature,
              "deterministic": {"L2Q": float(dq.mean()), "L2P": float(dp.mean())}, "rows": []}
    for order, k in itertools.product(orders, ks):
        q_err = np.zeros((windows, n))
        p_err = np.zeros((windows, n))
        diversity = np.zeros(windows)
        diversity_q = np.zeros(windows)
        for w in range(windows):
            outs = sample(model, masked_rot[w], masked_trans[w], known[w], times[w], order=order, k=k,
                          temperature=temperature, seed=seed + w, n=n, refresh=refresh)
            rot = np.stack([o.rotations for o in outs])
            trans = np.stack([o.translations for o in outs])
            reps = (n, 1, 1, 1)
            gq, pq, gp, pos = scored_globals(schema, np.tile(gt_rot[w : w + 1], reps),
                                             np.tile(gt_trans[w : w + 1], reps), rot, trans, gap)
            q_err[w], p_err[w] = errors_of_windows(gq, pq, gp, pos, mean, std)
            pairs = list(itertools.combinations(range(n), 2))
            diversity[w] = float(np.mean([l2p(pos[a : a + 1], pos[b : b + 1], mean, std) for a, b in pairs])) \
                if pairs else 0.0
            diversity_q[w] = float(np.mean([l2q(pq[a : a + 1], pq[b : b + 1]) for a, b in pairs])) if pairs else 0.0
        d = result["deterministic"]
        row = {"order": order, "k": k, "best_L2Q": float(q_err.min(1).mean()), "mean_L2Q": float(q_err.mean()),
               "best_L2P": float(p_err.min(1).mean()), "mean_L2P": float(p_err.mean()),
               "diversity_L2P": float(diversity.mean()), "diversity_L2Q": float(diversity_q.mean())}
        row["mean_ratio"], row["best_ratio"] = row["mean_L2Q"] / d["L2Q"], row["best_L2Q"] / d["L2Q"]
        result["rows"].append(row)
        if progress:
            progress(row)
    return result


def format_sampling(r: dict) -> str:
    d = r["deterministic"]
    lines = [f"sampling: {r['skeleton']} {r['variant']}, {r['split']} split, gap {r['gap']}, {r['windows']} windows, "
             f"N={r['n']}, temperature {r['temperature']:g} (spread scale {r['spread_scale']:g} of the "
             f"{'calibrated' if r['calibrated'] else 'learned'} spreads)",
             f"deterministic fill: L2Q {d['L2Q']:.4f}  L2P {d['L2P']:.4f}",
             f"{'order':<16}{'k':>4}{'best L2Q':>10}{'mean L2Q':>10}{'best/det':>9}{'mean/det':>9}{'best L2P':>10}"
             f"{'mean L2P':>10}{'div L2P':>9}{'div L2Q':>9}"]
    for x in r["rows"]:
        lines.append(f"{x['order']:<16}{x['k']:>4}{x['best_L2Q']:>10.4f}{x['mean_L2Q']:>10.4f}{x['best_ratio']:>9.3f}"
                     f"{x['mean_ratio']:>9.3f}{x['best_L2P']:>10.4f}{x['mean_L2P']:>10.4f}{x['diversity_L2P']:>9.4f}"
                     f"{x['diversity_L2Q']:>9.4f}")
    return "\n".join(lines)


FINGERS = {
    "thumb": ("THUMB_CMC_FE", "THUMB_CMC_AA", "THUMB_MCP_FE", "THUMB_IP_FE"),
    "index": ("INDEX_MCP", "INDEX_PIP_FE", "INDEX_DIP_FE"),
    "middle": ("MIDDLE_MCP", "MIDDLE_PIP_FE", "MIDDLE_DIP_FE"),
    "ring": ("RING_MCP", "RING_PIP_FE", "RING_DIP_FE"),
    "pinky": ("PINKY_MCP", "PINKY_PIP_FE", "PINKY_DIP_FE"),
}
POSE_CASES = (("thumb", "index"), ("index", "middle"), ("thumb",), ("index", "middle", "ring"))


def mean_pose(skeleton: str, root=None) -> np.ndarray:
    """The training set's mean local rotation of each joint (J, 4): the chordal mean of quaternions."""
    schema = get_schema(skeleton)
    acc = np.zeros((schema.n_joints, 4))
    for f in split_files(skeleton, "train", root):
        from training.motion.clip import load

        q = load(f, schema).rotations
        ref = q[0]
        q = np.where(np.sum(q * ref, -1, keepdims=True) < 0, -q, q)
        acc += q.sum(0)
    return quat_normalize(acc)


def run_pose(model_name: str, frames: int = 400, root=None) -> dict:
    """Pose completion on the hand test split."""
    schema = get_schema("hand")
    model, _ = load_model(model_name)
    clips = []
    for f in split_files("hand", "test", root):
        from training.motion.clip import load

        clips.extend(at_protocol_rate(load(f, schema))[:1])
    rot = np.concatenate([c.rotations for c in clips])
    trans = np.concatenate([c.translations for c in clips])
    pick = np.linspace(0, len(rot) - 1, frames).round().astype(int)
    rot, trans = rot[pick][:, None], trans[pick][:, None]  # (F, 1, J, .): one-frame windows
    base = mean_pose("hand", root)
    tips = [schema.index(n) for n in schema.joints if n.endswith(("_DIP_FE", "_IP_FE"))]
    out = {"model": str(model_name), "frames": frames, "cases": []}
    for case in POSE_CASES:
        known_names = {"WRIST", *[j for fgr in case for j in FINGERS[fgr]]}
        known = np.zeros(rot.shape[:3], dtype=bool)
        known[..., [schema.index(x) for x in known_names]] = True
        tgt = ~known[0, 0]
        r = fill(model, np.where(known[..., None], rot, np.nan), trans, known, np.zeros((frames, 1)))
        mean_rot = np.where(known[..., None], rot, base)
        err_model = np.rad2deg(quat_angle(r.rotations[..., tgt, :], rot[..., tgt, :])).mean()
        err_mean = np.rad2deg(quat_angle(mean_rot[..., tgt, :], rot[..., tgt, :])).mean()
        _, p_true = forward_kinematics(rot, trans, schema.parents)
        _, p_model = forward_kinematics(r.rotations, trans, schema.parents)
        _, p_mean = forward_kinematics(mean_rot, trans, schema.parents)
        tip_t = [t for t in tips if tgt[t]]
        out["cases"].append({
            "known_fingers": list(case), "target_joints": int(tgt.sum()),
            "model_deg": float(err_model), "mean_pose_deg": float(err_mean),
            "model_tip_dm": float(np.linalg.norm(p_model[..., tip_t, :] - p_true[..., tip_t, :], axis=-1).mean()),
            "mean_pose_tip_dm": float(np.linalg.norm(p_mean[..., tip_t, :] - p_true[..., tip_t, :], axis=-1).mean()),
        })
    return out


def format_pose(r: dict) -> str:
    lines = [f"pose completion: hand test split, {r['frames']} frames, wrist + fingers keyed",
             f"{'keyed fingers':<22}{'targets':>8}{'model deg':>11}{'mean deg':>10}{'model tip':>11}{'mean tip':>10}"]
    for c in r["cases"]:
        lines.append(f"{'+'.join(c['known_fingers']):<22}{c['target_joints']:>8}{c['model_deg']:>11.2f}"
                     f"{c['mean_pose_deg']:>10.2f}{c['model_tip_dm']:>11.3f}{c['mean_pose_tip_dm']:>10.3f}")
    return "\n".join(lines)
