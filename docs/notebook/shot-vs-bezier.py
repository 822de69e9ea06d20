"""Whole clips as shots: the shipped body's fill (cut at fully keyed frames, and window by window) against the
engine's Bezier curves through the same keys (every 5 / 10 / 20 frames), mean world joint error between the first and
the last key. Run from the project root: .venv/bin/python docs/notebook/shot-vs-bezier.py [CLIP ...] (clips under
../shared/data/bandai/)."""

import sys

import numpy as np

sys.path.insert(0, ".")
from training.inbetween.baselines import bezier  # noqa: E402
from training.inbetween.checkpoint import load_model  # noqa: E402
from training.inbetween.fill import fill  # noqa: E402
from training.motion import clip as clip_io  # noqa: E402
from training.motion.skeleton import forward_kinematics, get_schema  # noqa: E402

DATA = "../shared/data/bandai/"
CLIPS = ["dataset-1/dataset-1_bow_old_001.bvh", "dataset-2/dataset-2_raise-up-both-hands_normal_034.bvh",
         "dataset-1/dataset-1_walk_angry_001.bvh"]


def error(schema, rot, trans, truth, scored) -> float:
    _, pos = forward_kinematics(rot, trans, schema.parents)
    return float(np.linalg.norm(pos - truth, axis=-1)[:, scored].mean())


def main(clips: list[str]) -> None:
    schema = get_schema("body")
    model, _ = load_model("body")
    for name in clips:
        clip = clip_io.load(DATA + name, schema)
        rot, trans = clip.rotations[None].astype(np.float64), clip.translations[None].astype(np.float64)
        t = rot.shape[1]
        times = (np.arange(t) / clip.fps)[None]
        _, truth = forward_kinematics(rot, trans, schema.parents)
        row = [name.split("/")[-1], f"{t} frames"]
        for every in (5, 10, 20):
            keys = np.zeros(t, dtype=bool)
            keys[::every] = True
            scored = ~keys & (np.arange(t) < np.flatnonzero(keys)[-1])
            known = np.broadcast_to(keys[None, :, None], rot.shape[:3]).copy()
            cut = fill(model, rot, trans, known, times)
            whole = fill(model, rot, trans, known, times, cut=False)
            bez = error(schema, *bezier(rot, trans, keys, schema), truth, scored)
            row.append(f"every {every}: cut {error(schema, cut.rotations, cut.translations, truth, scored) / bez:.2f}"
                       f" whole {error(schema, whole.rotations, whole.translations, truth, scored) / bez:.2f}"
                       f" (Bezier {bez:.3f})")
        print(" | ".join(row))


if __name__ == "__main__":
    main(sys.argv[1:] or CLIPS)
