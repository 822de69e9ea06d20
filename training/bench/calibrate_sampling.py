"""``anyfill bench calibrate-sampling``: fit the sampler's spreads and default temperature on validation windows.

Spreads: on validation windows (the training split's validation takes, never the test files) keyed as the
protocol keys them (10 context frames, gaps of 5, 15 and 30 frames, a target frame), the deterministic fill's
real error is compared with the spreads the model gives the same cells. Per joint, the rotation spread
(1 / sqrt(kappa)) is scaled so that its mean square matches the mean square of the real angle errors; per
moving joint and axis, the position sigma likewise; and each moving joint's draw is capped at the 99th
percentile of its real position error (a draw never puts the root further from the fill than the fill is from
real motion on all but 1 % of the validation cells). A draw at temperature 1 then strays from the fill about
as far as the fill strays from the motion.

Temperature: on other validation windows (gap 15, 4 variations each), lowest-entropy order at k = 1 and k = a
frame's joints, a sweep of temperatures; the default is the largest whose samples' mean L2Q is at most
``mean_max`` of the deterministic fill's and best-of-4 at most ``best_max`` for both k (the most varied
samples that still stay near the motion). ``--write`` stores the result in the card's ``sampling``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from training.bench.sampling import run_sampling, sampling_windows
from training.inbetween.checkpoint import card_path, load_model, read_card, resolve_path, write_card
from training.inbetween.features import moving_positions, to_canonical
from training.inbetween.fill import distributions
from training.inbetween.sampling import SamplingCalibration
from training.motion.rotations import quat_angle, sixd_to_quat
from training.motion.skeleton import get_schema

FIT_GAPS = (5, 15, 30)
TEMPERATURES = (0.1, 0.15, 0.2, 0.25, 0.35, 0.5, 0.7, 1.0)


def fit_spreads(model, skeleton: str, windows: int = 48, root=None) -> tuple[SamplingCalibration, dict]:
    """Per-channel spread scales and position caps from the deterministic fill's real error (module docstring)."""
    schema = get_schema(skeleton)
    th2, inv_k, e2, s2, enorm = [], [], [], [], []
    for gap in FIT_GAPS:
        gt_rot, gt_trans, known, times = sampling_windows(skeleton, "val", gap, windows, root)
        target = ~known
        out, canon = distributions(model, np.where(known[..., None], gt_rot, np.nan),
                                   np.where(known[..., None], gt_trans, np.nan), known, times)
        rot_c, trans_c = to_canonical(gt_rot, gt_trans, canon, schema)
        theta = quat_angle(sixd_to_quat(out["rot6d"]), rot_c)
        th2.append(np.where(target, theta**2, np.nan))
        inv_k.append(np.where(target, np.exp(-out["log_kappa"]), np.nan))
        err = out["pos"] - moving_positions(rot_c, trans_c, schema)  # (N, T, M, 3)
        tm = target[:, :, list(schema.moving), None]
        e2.append(np.where(tm, err**2, np.nan).reshape(-1, len(schema.moving), 3))
        s2.append(np.where(tm, np.exp(2 * out["log_sigma"]), np.nan).reshape(-1, len(schema.moving), 3))
        enorm.append(np.where(tm[..., 0], np.linalg.norm(err, axis=-1), np.nan).reshape(-1, len(schema.moving)))
    th2_all = np.concatenate([x.reshape(-1, schema.n_joints) for x in th2])
    ik_all = np.concatenate([x.reshape(-1, schema.n_joints) for x in inv_k])
    e2_all, s2_all, en_all = np.concatenate(e2), np.concatenate(s2), np.concatenate(enorm)
    rot_scale = np.sqrt(np.nanmean(th2_all, axis=0) / np.nanmean(ik_all, axis=0))
    pos_scale = np.sqrt(np.nanmean(e2_all, axis=0) / np.nanmean(s2_all, axis=0))
    cap = np.nanpercentile(en_all, 99, axis=0)
    cal = SamplingCalibration(rot_scale=tuple(round(float(x), 4) for x in rot_scale),
                              pos_scale=tuple(tuple(round(float(y), 4) for y in x) for x in pos_scale),
                              pos_cap=tuple(round(float(x), 4) for x in cap))
    fit = {"windows_per_gap": windows, "gaps": list(FIT_GAPS),
           "rot_rms_error_deg": [round(float(np.rad2deg(np.sqrt(x))), 3) for x in np.nanmean(th2_all, axis=0)],
           "rot_rms_spread_deg": [round(float(np.rad2deg(np.sqrt(x))), 3) for x in np.nanmean(ik_all, axis=0)],
           "pos_rms_error": [[round(float(np.sqrt(y)), 4) for y in x] for x in np.nanmean(e2_all, axis=0)],
           "pos_rms_sigma": [[round(float(np.sqrt(y)), 4) for y in x] for x in np.nanmean(s2_all, axis=0)]}
    return cal, fit


def calibrate(model_name: str, skeleton: str | None = None, windows: int = 48, sweep_windows: int = 8, n: int = 4,
              temperatures: tuple[float, ...] = TEMPERATURES, mean_max: float = 1.25, best_max: float = 1.04,
              seed: int = 0, root=None, progress=None) -> dict:
    """The card's ``sampling`` section for a model (module docstring)."""
    model, card = load_model(model_name)
    skeleton = skeleton or model.cfg.skeleton
    t0 = time.perf_counter()
    cal, fit = fit_spreads(model, skeleton, windows, root)
    model.sampling = cal
    sweep = []
    for temp in temperatures:
        r = run_sampling(model_name, skeleton, gap=15, windows=sweep_windows, n=n, ks=(1, model.cfg.n_joints),
                         orders=("lowest-entropy",), temperature=temp, seed=seed, root=root, split="val", model=model)
        for row in r["rows"]:
            sweep.append({"temperature": temp, "k": row["k"], "mean_ratio": round(row["mean_ratio"], 4),
                          "best_ratio": round(row["best_ratio"], 4), "diversity_L2Q": round(row["diversity_L2Q"], 4),
                          "diversity_L2P": round(row["diversity_L2P"], 4)})
            if progress:
                progress(sweep[-1])
    ok = [t for t in temperatures if all(s["mean_ratio"] <= mean_max and s["best_ratio"] <= best_max
                                         for s in sweep if s["temperature"] == t)]
    temp = max(ok) if ok else min(temperatures)
    cal = dataclasses.replace(cal, temperature=temp)
    args = f"bench calibrate-sampling --model {model_name} --write"
    args += f" --windows {windows}" * (windows != 48) + f" --sweep-windows {sweep_windows}" * (sweep_windows != 8)
    return {**{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cal).items()},
            "pos_scale": [list(x) for x in cal.pos_scale],
            "command": f"anyfill {args}",
            "chosen_by": f"largest temperature of the sweep with mean L2Q at most {mean_max}x and best-of-{n} at "
                         f"most {best_max}x the deterministic fill's on {sweep_windows} validation windows (gap 15), "
                         "lowest-entropy order, k = 1 and k = a frame's joints",
            "fit": fit, "sweep": sweep, "wall_seconds": round(time.perf_counter() - t0, 1),
            "card_before": card.get("sampling") is not None}


def write(model_name: str, section: dict) -> str:
    """Store ``section`` as the card's ``sampling`` (only that key of the card changes)."""
    path = resolve_path(model_name)
    card = read_card(path)
    card["sampling"] = {k: v for k, v in section.items() if k != "card_before"}
    write_card(path, card)
    return str(card_path(path))


def format_result(r: dict) -> str:
    lines = [f"sampling calibration ({r['wall_seconds']} s): temperature {r['temperature']}",
             f"rotation spread scale per joint: {r['rot_scale']}",
             f"position sigma scale: {r['pos_scale']}  cap: {r['pos_cap']}",
             f"{'temperature':>12}{'k':>4}{'mean/det':>10}{'best/det':>10}{'div L2Q':>9}{'div L2P':>9}"]
    for s in r["sweep"]:
        lines.append(f"{s['temperature']:>12g}{s['k']:>4}{s['mean_ratio']:>10.3f}{s['best_ratio']:>10.3f}"
                     f"{s['diversity_L2Q']:>9.4f}{s['diversity_L2P']:>9.4f}")
    return "\n".join(lines)

