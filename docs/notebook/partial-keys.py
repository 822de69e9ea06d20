"""Joints left to the model on a partial key: how far they move per frame next to the key and elsewhere, before
(``fill._fill``: the model's output) and after ``fill.smooth_partial_keys`` (what ``fill`` returns).

Hand: the shipped hand on 48 test windows, the wrist known, thumb and index keyed every 10 frames, the other
fingers never (positions in the wrist's frame, decimetres). Body: the shipped body on 64 test windows, whole
poses every 10 frames but the legs never keyed (leg joints relative to the hips, cm)."""

import numpy as np

from training.bench.inbetween import WINDOW, load_protocol_clips
from training.bench.keys import in_wrist_frame, keyed_cells
from training.inbetween import fill as engine
from training.inbetween.checkpoint import load_model
from training.motion.skeleton import forward_kinematics, get_schema
from training.motion.splits import split_files
from training.motion.windows import cut


def profile(name, schema, rot, trans, known, fps, positions, joints) -> None:
    model, _ = load_model(name)
    masked = np.where(known[..., None], rot, np.nan)
    times = np.broadcast_to(np.arange(WINDOW) / fps, known.shape[:2])
    raw = engine._fill(model, masked, trans, known, times, None, None, True)
    smooth = engine.smooth_partial_keys(raw, known)
    truth = engine.FillResult(rot, trans, np.zeros(known.shape), np.zeros(known.shape))
    keys = range(10, 60, 10)
    for label, r in (("model", raw), ("smoothed", smooth), ("capture", truth)):
        step = np.linalg.norm(np.diff(positions(r)[:, :, joints], axis=1), axis=-1).mean(axis=(0, 2))
        around = [f"{step[[k + d for k in keys]].mean():.4f}" for d in range(-2, 2)]
        print(f"{name} {label:>9}: per-frame travel from frame key-2 .. key+1: {' '.join(around)}")


def main() -> None:
    hand = get_schema("hand")
    w = cut(load_protocol_clips(split_files("hand", "test"), hand), WINDOW, 40)
    cells, _ = keyed_cells(10, hand, "known", 2)
    known = np.broadcast_to(cells, (48,) + cells.shape).copy()
    unkeyed = [j for j in range(hand.n_joints) if not cells[:, j].any()]
    profile("hand", hand, w.rotations[:48], w.translations[:48], known, w.fps,
            lambda r: in_wrist_frame(r.rotations, r.translations, hand)[1], unkeyed)
    body = get_schema("body")
    w = cut(load_protocol_clips(split_files("body", "test"), body), WINDOW, 40)
    known = np.zeros((64, WINDOW, body.n_joints), dtype=bool)
    known[:, ::10] = True
    known[:, -1] = True
    legs = [body.index(j) for j in body.joints if "Leg" in j or "Foot" in j or "Toes" in j]
    known[:, :, legs] = False

    def hips_relative(r):
        pos = forward_kinematics(r.rotations, r.translations, body.parents)[1]
        return pos - pos[:, :, [body.root]]

    profile("body", body, w.rotations[:64], w.translations[:64], known, w.fps, hips_relative, legs)


if __name__ == "__main__":
    main()
