"""Variations of a 60 fps window drawn at the rig's rate (``sample``) against at a trained rate
(``sample_at_rate``): the shipped body on 30 windows of eight test clips played at 60 fps (slerped between
their frames), 8 frames known at the start and 2 at the end, 4 variations, k = 22, lowest-entropy order.
Prints the variations' mean angle to the capture and their mean frame-to-frame turn beside the capture's."""

import numpy as np

from training.bench.inbetween import load_protocol_clips
from training.inbetween import sampling
from training.inbetween.checkpoint import load_model
from training.motion.rotations import quat_slerp
from training.motion.skeleton import get_schema
from training.motion.splits import split_files


def angle(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.degrees(2 * np.arccos(np.abs(np.sum(a * b, -1)).clip(0, 1)))


def at_60_fps(rot: np.ndarray, trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 30 fps stretch (F frames) as 2F - 1 frames at 60 fps: every other frame halfway between."""
    r = np.empty((2 * len(rot) - 1,) + rot.shape[1:])
    t = np.empty((2 * len(trans) - 1,) + trans.shape[1:])
    r[0::2], t[0::2] = rot, trans
    r[1::2] = quat_slerp(rot[:-1], rot[1:], np.full(rot.shape[:2], 0.5)[:-1])
    t[1::2] = (trans[:-1] + trans[1:]) / 2
    return r, t


def main() -> None:
    model, _ = load_model("body")
    schema = get_schema("body")
    rows: dict[str, list] = {"rig rate": [], "trained rate": []}
    for c in load_protocol_clips(split_files("body", "test")[:8], schema):
        for s0 in range(0, c.rotations.shape[0] - 33, 40):
            rot, trans = at_60_fps(c.rotations[s0 : s0 + 33], c.translations[s0 : s0 + 33])
            times = np.arange(len(rot)) / 60.0
            known = np.zeros((len(rot), schema.n_joints), dtype=bool)
            known[:8] = known[-2:] = True
            capture_step = angle(rot[2:], rot[1:-1])[8:-2].mean()
            for name in rows:
                kw = {"order": "lowest-entropy", "k": 22, "n": 4, "seed": 0}
                res = (sampling.sample(model, rot, trans, known, times, **kw) if name == "rig rate" else
                       sampling.sample_at_rate(model, rot, trans, known, times, (24.0, 40.0), **kw))
                err = np.mean([angle(r.rotations, rot)[~known].mean() for r in res])
                step = np.mean([angle(r.rotations[2:], r.rotations[1:-1])[8:-2].mean() for r in res])
                rows[name].append((err, step, capture_step))
    for name, v in rows.items():
        a = np.array(v)
        print(f"{name}: {len(a)} windows, mean angle to the capture {a[:, 0].mean():.2f} deg, mean frame step "
              f"{a[:, 1].mean():.3f} deg (capture {a[:, 2].mean():.3f})")


if __name__ == "__main__":
    main()
