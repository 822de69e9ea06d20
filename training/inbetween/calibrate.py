"""Calibration of a trained motion model on held-out batches: keep only the share of each learned correction
that pays there, and fit the spreads' width to the calibrated means (``calibrate=true`` at export)."""

from __future__ import annotations

import dataclasses
from typing import Protocol

import numpy as np
import torch

from training.inbetween.model import MotionFill


class Scored(Protocol):
    """What calibration needs of a training module (:class:`~training.inbetween.task.AnyOrderModule`)."""

    model: MotionFill
    top: int  # the top joint

    def losses(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...


SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)
MOTION_GATES = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # motion-gate speeds tried by :func:`calibrate` (0: off)
KAPPA_SHIFTS = tuple(float(d) for d in np.arange(-3.0, 3.01, 0.25))  # log-kappa shifts tried by :func:`calibrate`


def calibrate(module: Scored, batches: list[dict[str, torch.Tensor]]) -> dict:
    """Shrink corrections that do not generalise: on held-out batches (the validation takes of the training
    split), pick the motion gate from :data:`MOTION_GATES` (lowest L2Q, all corrections kept), then from
    :data:`SCALES` the share of the learned rotation corrections kept for the top joint and for the other
    joints (lowest L2Q) and of the position corrections (lowest position error), then the shift of log
    kappa that fits the rotation spreads to those means (lowest von Mises likelihood). Sets the model's
    ``motion_gate``, ``rot_scale``, ``pos_scale`` and ``kappa_offset`` and returns what was measured. Ties
    keep the weaker gate, the larger share and the smaller shift."""
    model = module.model
    was, trained = model.training, model.cfg

    def use(gate: float, rot_top: float, rot_rest: float, pos: float, kappa_shift: float = 0.0) -> None:
        scale = [rot_rest] * model.cfg.n_joints
        scale[module.top] = rot_top
        model.cfg = dataclasses.replace(trained, rot_scale=tuple(scale), pos_scale=pos, motion_gate=gate,
                                        kappa_offset=trained.kappa_offset + kappa_shift)

    def measure(*setting: float) -> dict[str, float]:
        use(*setting)
        sums: dict[str, float] = {}
        with torch.no_grad():
            for b in batches:
                for k, v in module.losses(b).items():
                    sums[k] = sums.get(k, 0.0) + float(v) / len(batches)
        return sums

    model.eval()
    before = measure(0.0, 1.0, 1.0, 1.0)
    by_gate = {g: measure(g, 1.0, 1.0, 1.0)["l2q"] for g in MOTION_GATES}
    gate = min(MOTION_GATES, key=by_gate.__getitem__)
    best = min(((t, r) for t in SCALES[::-1] for r in SCALES[::-1]), key=lambda tr: measure(gate, *tr, 1.0)["l2q"])
    pos = min(SCALES[::-1], key=lambda p: measure(gate, *best, p)["pos_err"])
    # the spreads were learned for the trained means: re-fit their overall width to the calibrated means
    # (a shift of log kappa, the von Mises likelihood on the same batches), so entropies and samples match
    shift = min(KAPPA_SHIFTS, key=lambda d: (measure(gate, *best, pos, d)["von_mises"], abs(d)))
    chosen = measure(gate, *best, pos, shift)
    model.train(was)
    keys = ("l2q", "pos_err", "fk", "angle_deg", "von_mises")
    return {"motion_gate": gate, "val_l2q_by_motion_gate": {str(g): v for g, v in by_gate.items()},
            "rot_scale_top": best[0], "rot_scale_other": best[1], "pos_scale": pos,
            "kappa_shift": shift, "val_trained": {k: before[k] for k in keys},
            "val_calibrated": {k: chosen[k] for k in keys}}
