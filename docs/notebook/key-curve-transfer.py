"""The shipped model's correction (its fill against its own key curve) applied on Blender's Bezier curve through the
same keys, scored as ``anyfill bench keys`` (the hand with ``--wrist known``). Run from the project root:
``python docs/notebook/key-curve-transfer.py hand``. Findings: docs/notebook/hand-wrist.md."""

import copy
import sys

import numpy as np
import torch

from training.bench import keys
from training.bench.inbetween import as_cells, resolve_method
from training.inbetween.checkpoint import load_model
from training.inbetween.fill import fill
from training.motion.rotations import quat_conj, quat_mul, quat_normalize
from training.motion.skeleton import get_schema


def main(skeleton: str) -> None:
    torch.set_num_threads(1)
    schema = get_schema(skeleton)
    model, _ = load_model(skeleton)
    curve_only = copy.deepcopy(model)  # its output layer zeroed: it fills with the key curve alone
    with torch.no_grad():
        curve_only.out.weight.zero_()
        curve_only.out.bias.zero_()
    bezier = resolve_method("bezier", schema)

    def run(m, batch, known):
        n, t, j = batch.rotations.shape[:3]
        cells = np.broadcast_to(as_cells(known)[None], (n, t, j))
        r = fill(m, batch.rotations, batch.translations, cells, np.broadcast_to(np.arange(t) / batch.fps, (n, t)))
        return r.rotations, r.translations

    def transfer(batch, known):
        rot, trans = run(model, batch, known)
        base, _ = run(curve_only, batch, known)
        curve, _ = bezier(batch, known)
        return quat_normalize(quat_mul(curve, quat_mul(quat_conj(base), rot))), trans

    methods = {"fill": resolve_method(skeleton, schema), "bezier": bezier,
               "key curve": lambda batch, known: run(curve_only, batch, known), "transfer": transfer}
    wrist = {"wrist": "known"} if skeleton == "hand" else {}
    for name, method in methods.items():
        r = keys.run(skeleton, name, every=(5, 10, 20), method=method, **wrist)
        print(name, {n: (round(v["L2Q"], 4), round(v["L2P"], 4)) for n, v in r["every"].items()})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "hand")
