"""Calibration of a trained motion model on held-out batches: keep only the share of each learned correction
that pays there, and fit the spreads' width to the calibrated means (``calibrate=true`` at export)."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np
import torch

from training.inbetween.model import MotionFill


class Scored(Protocol):
    """What calibration needs of a training module (:class:`~training.inbetween.task.AnyOrderModule`)."""

    model: MotionFill
    top: int  # the top joint

    def losses(self, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]: ...

    def truth(self, b: dict[str, torch.Tensor]) -> Any: ...

    def window_errors(self, b: dict[str, torch.Tensor], rot6d: torch.Tensor, pos: torch.Tensor,
                      truth: Any = None) -> torch.Tensor: ...


SCALES = (0.0, 0.25, 0.5, 0.75, 1.0)
MOTION_GATES = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # motion-gate speeds tried by :func:`calibrate` (0: off)
GAP_GATES = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.6)  # gap-gate lengths (seconds) tried by :func:`calibrate`
KAPPA_SHIFTS = tuple(float(d) for d in np.arange(-3.0, 3.01, 0.25))  # log-kappa shifts tried by :func:`calibrate`
# a keyed window's curve error (skeleton sizes) at or below which the curve is exact (joints that do not move
# in the capture, as many of the hand takes' fingers): nothing to correct there, and the ratio of a fill's
# float noise to zero would swamp the geometric mean, so such windows do not choose the gap gates
EXACT = 1e-6


def calibrate(module: Scored, batches: list[dict[str, torch.Tensor]],
              keyed: list[dict[str, torch.Tensor]] | None = None) -> dict:
    """Shrink corrections that do not generalise: on held-out batches (the validation takes of the training
    split), pick the gap gates from :data:`GAP_GATES` on ``keyed`` (the same takes keyed every n frames; default
    ``batches``) by the geometric mean over windows of the fill's position error over the curve's alone (every
    key spacing counts alike, as an animator compares each with Blender's curve: a few centimetres of noise on
    keys two frames apart are not paid for by a gain on wide gaps; windows the curve fills exactly, :data:`EXACT`,
    left out), rotations then moving positions; then,
    on ``batches`` and ``keyed`` together, the motion gate from
    :data:`MOTION_GATES` (lowest L2Q), then from :data:`SCALES` the share of the learned rotation corrections
    kept for the top joint and for the other joints (lowest L2Q) and of the position corrections (lowest
    position error), then the shift of log kappa that fits the rotation spreads to those means (lowest von
    Mises likelihood). Sets the model's ``gap_gate_rot``, ``gap_gate_pos``, ``motion_gate``, ``rot_scale``,
    ``pos_scale`` and ``kappa_offset`` and returns what was measured. Ties keep the weaker gate, the larger
    share and the smaller shift."""
    model = module.model
    was, trained = model.training, model.cfg
    chosen: dict[str, float] = {"gap_rot": 0.0, "gap_pos": 0.0, "gate": 0.0, "rot_top": 1.0, "rot_rest": 1.0,
                                "pos": 1.0, "kappa_shift": 0.0}

    scored = list(batches) if keyed is None else list(batches) + list(keyed)
    keyed = list(batches) if keyed is None else list(keyed)

    def use(**change: float) -> None:
        c = {**chosen, **change}
        scale = [c["rot_rest"]] * trained.n_joints
        scale[module.top] = c["rot_top"]
        model.cfg = dataclasses.replace(trained, rot_scale=tuple(scale), pos_scale=c["pos"], motion_gate=c["gate"],
                                        gap_gate_rot=c["gap_rot"], gap_gate_pos=c["gap_pos"],
                                        kappa_offset=trained.kappa_offset + c["kappa_shift"])

    def measure(**change: float) -> dict[str, float]:
        use(**change)
        sums: dict[str, float] = {}
        with torch.no_grad():
            for b in scored:
                for k, v in module.losses(b).items():
                    sums[k] = sums.get(k, 0.0) + float(v) / len(scored)
        return sums

    with torch.no_grad():  # per keyed batch: its truth and the curve's own error (neither depends on a gate)
        truths = [module.truth(b) for b in keyed]
        curves = [module.window_errors(b, b["base6d"], b["basepos"], t) for b, t in zip(keyed, truths, strict=True)]

    def log_ratio(**change: float) -> float:
        """Mean over the keyed windows of log(fill's position error / the curve's alone)."""
        use(**change)
        logs = []
        with torch.no_grad():
            for b, truth, curve in zip(keyed, truths, curves, strict=True):
                out = model(b)
                fill = module.window_errors(b, out["rot6d"], out["pos"], truth)
                has = b["target"].any(-1).any(-1) & (curve > EXACT)
                logs.append(torch.log(fill[has].clamp(min=1e-9) / curve[has].clamp(min=1e-9)))
        return float(torch.cat(logs).mean())

    model.eval()
    before = measure()
    by_gap_rot = {g: log_ratio(gap_rot=g) for g in GAP_GATES}
    chosen["gap_rot"] = min(GAP_GATES, key=lambda g: (by_gap_rot[g], g))
    by_gap_pos = {g: log_ratio(gap_pos=g) for g in GAP_GATES}
    chosen["gap_pos"] = min(GAP_GATES, key=lambda g: (by_gap_pos[g], g))
    by_gate = {g: measure(gate=g)["l2q"] for g in MOTION_GATES}
    chosen["gate"] = min(MOTION_GATES, key=lambda g: (by_gate[g], g))
    top, rest = min(((t, r) for t in SCALES[::-1] for r in SCALES[::-1]),
                    key=lambda tr: measure(rot_top=tr[0], rot_rest=tr[1])["l2q"])
    chosen.update(rot_top=top, rot_rest=rest)
    chosen["pos"] = min(SCALES[::-1], key=lambda p: measure(pos=p)["pos_err"])
    # the spreads were learned for the trained means: re-fit their overall width to the calibrated means
    # (a shift of log kappa, the von Mises likelihood on the same batches), so entropies and samples match
    chosen["kappa_shift"] = min(KAPPA_SHIFTS, key=lambda d: (measure(kappa_shift=d)["von_mises"], abs(d)))
    after = measure()
    model.train(was)
    keys = ("l2q", "pos_err", "fk", "angle_deg", "von_mises")
    return {"gap_gate_rot": chosen["gap_rot"], "gap_gate_pos": chosen["gap_pos"],
            "keyed_log_error_ratio_by_gap_gate_rot": {str(g): v for g, v in by_gap_rot.items()},
            "keyed_log_error_ratio_by_gap_gate_pos": {str(g): v for g, v in by_gap_pos.items()},
            "motion_gate": chosen["gate"], "val_l2q_by_motion_gate": {str(g): v for g, v in by_gate.items()},
            "rot_scale_top": top, "rot_scale_other": rest, "pos_scale": chosen["pos"],
            "kappa_shift": chosen["kappa_shift"], "val_trained": {k: before[k] for k in keys},
            "val_calibrated": {k: after[k] for k in keys}}
