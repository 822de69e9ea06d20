"""``anyfill bench probe``: how much of a gap a linear map of the context predicts beyond the baseline.

A ceiling check for the in-betweening models, not a model: on training windows (10 context frames, a gap,
one key, at 30 fps), fit ridge regressions from the context's rotations (6D, canonical frame) and the
baseline's curve through the gap to the baseline's error in the gap, then score them on the test windows
of ``anyfill bench inbetween``. If no ridge map beats the baseline on the test split, whatever the
network learns there has to be non-linear, or does not carry over from the training takes to the test
take (which the in-sample column tells apart).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from training.bench.inbetween import N_CONTEXT, STRIDE, WINDOW, load_protocol_clips, protocol_known
from training.inbetween.datasets import WindowSampler, load_clips, make_batch
from training.inbetween.features import FeatureSpec, default_frame, top_joint
from training.motion.rotations import quat_angle, sixd_to_quat
from training.motion.skeleton import get_schema
from training.motion.splits import split_files
from training.motion.windows import cut


def default_spec(skeleton: str, base_velocity: float = 0.5) -> FeatureSpec:
    """The baseline the shipped models correct: a Hermite curve in the skeleton's canonical frame."""
    return FeatureSpec(default_frame(skeleton), True, base_velocity, True)


def gap_problem(rot: np.ndarray, trans: np.ndarray, fps: np.ndarray, gap: int, skeleton: str, spec: FeatureSpec):
    """Inputs (N, F), targets (N, gap * J * 6) and the gap's baseline and truth (N, gap, J, 6) of windows
    with ``N_CONTEXT`` known frames, ``gap`` unknown frames and one known frame after them."""
    schema = get_schema(skeleton)
    length = N_CONTEXT + gap + 1
    n = len(rot)
    known = np.broadcast_to(protocol_known(gap)[None, :, None], (n, length, schema.n_joints)).copy()
    b = make_batch(rot[:, :length], trans[:, :length], fps, known, ~known, schema, spec)
    context = np.concatenate([b["rot6d"][:, :N_CONTEXT], b["rot6d"][:, -1:]], axis=1)
    base = b["base6d"][:, N_CONTEXT:-1].astype(np.float64)
    truth = b["rot6d"][:, N_CONTEXT:-1].astype(np.float64)
    x = np.concatenate([context.reshape(n, -1), base.reshape(n, -1)], axis=1).astype(np.float64)
    return x, (truth - base).reshape(n, -1), base, truth


def ridge(x: np.ndarray, y: np.ndarray, lam: float):
    """Ridge regression on standardised inputs; ``lam`` is per training window. Returns predict(x)."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    y_mu = y.mean(0)
    xs = (x - mu) / sd
    w = np.linalg.solve(xs.T @ xs + lam * len(xs) * np.eye(xs.shape[1]), xs.T @ (y - y_mu))
    return lambda z: ((z - mu) / sd) @ w + y_mu


def angle_errors(pred6d: np.ndarray, true6d: np.ndarray, skeleton: str) -> dict[str, float]:
    """Mean local geodesic error (degrees) of the top joint and of all the others."""
    a = np.degrees(quat_angle(sixd_to_quat(pred6d), sixd_to_quat(true6d)))
    top = top_joint(get_schema(skeleton))
    rest = [j for j in range(a.shape[-1]) if j != top]
    return {"top": float(a[..., top].mean()), "others": float(a[..., rest].mean())}


def run(skeleton: str = "hand", gap: int = 15, windows: int = 30000, lambdas: Sequence[float] = (1e-4, 1e-2, 1.0),
        base_velocity: float = 0.5, seed: int = 0, root=None) -> dict:
    """Baseline and ridge errors on the test windows, and the ridge maps' errors on their training windows."""
    schema = get_schema(skeleton)
    spec = default_spec(skeleton, base_velocity)
    sampler = WindowSampler(load_clips(skeleton, "train", root, (30.0,)), WINDOW)
    rot, trans, fps = sampler.windows(np.random.default_rng(seed), windows)
    x, y, base_tr, truth_tr = gap_problem(rot, trans, fps, gap, skeleton, spec)
    test = cut(load_protocol_clips(split_files(skeleton, "test", root), schema), WINDOW, STRIDE)
    xt, _, base, truth = gap_problem(test.rotations, test.translations, np.full(len(test), test.fps), gap,
                                     skeleton, spec)
    result = {"skeleton": skeleton, "gap": gap, "train_windows": windows, "test_windows": len(test),
              "base_velocity": base_velocity, "baseline": {"test": angle_errors(base, truth, skeleton),
                                                           "train": angle_errors(base_tr, truth_tr, skeleton)},
              "ridge": []}
    for lam in lambdas:
        predict = ridge(x, y, lam)
        result["ridge"].append({
            "lambda": lam,
            "test": angle_errors(base + predict(xt).reshape(base.shape), truth, skeleton),
            "train": angle_errors(base_tr + predict(x).reshape(base_tr.shape), truth_tr, skeleton),
        })
    return result


def format_table(result: dict) -> str:
    lines = [f"Linear probe, {result['skeleton']}, gap {result['gap']} ({result['train_windows']} training windows, "
             f"{result['test_windows']} test windows): mean local angle error, degrees",
             f"{'predictor':<22}{'test top':>10}{'test others':>13}{'train top':>11}{'train others':>14}"]
    rows = [("baseline", result["baseline"])] + [(f"ridge lambda={r['lambda']:g}", r) for r in result["ridge"]]
    for name, r in rows:
        lines.append(f"{name:<22}{r['test']['top']:>10.2f}{r['test']['others']:>13.2f}"
                     f"{r['train']['top']:>11.2f}{r['train']['others']:>14.2f}")
    return "\n".join(lines)
