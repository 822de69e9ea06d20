"""Proxy for residual transfer: the hand's fill correction (fill vs its own key curve) applied on Blender's Bezier
through the same keys, scored as bench keys --skeleton hand --wrist known."""
import copy, sys
import numpy as np, torch
sys.path.insert(0, '.')
torch.set_num_threads(1)
from training.bench import keys as K
from training.bench.inbetween import resolve_method, as_cells
from training.inbetween.checkpoint import load_model
from training.inbetween.fill import fill
from training.motion.skeleton import get_schema
from training.motion.rotations import quat_mul, quat_conj, quat_normalize
sk = sys.argv[1] if len(sys.argv) > 1 else 'hand'
schema = get_schema(sk)
model, _ = load_model(sk)
zero = copy.deepcopy(model)
with torch.no_grad():
    zero.out.weight.zero_(); zero.out.bias.zero_()
bez = resolve_method('bezier', schema)
def run_model(m, batch, known):
    n, t, j = batch.rotations.shape[:3]
    cells = np.broadcast_to(as_cells(known)[None], (n, t, j))
    times = np.broadcast_to(np.arange(t) / batch.fps, (n, t))
    r = fill(m, batch.rotations, batch.translations, cells, times)
    return r.rotations, r.translations
def transfer(batch, known):
    fr, ft = run_model(model, batch, known)
    br, _ = run_model(zero, batch, known)
    zr, zt = bez(batch, known)
    delta = quat_mul(quat_conj(br), fr)
    return quat_normalize(quat_mul(zr, delta)), ft
def keycurve(batch, known):
    return run_model(zero, batch, known)
kw = dict(wrist='known') if sk == 'hand' else {}
for name, m in (('fill', resolve_method(sk, schema)), ('bezier', bez), ('keycurve', keycurve), ('transfer', transfer)):
    r = K.run(sk, name, every=(5, 10, 20), method=m, **kw)
    print(name, {n: (round(v['L2Q'], 4), round(v['L2P'], 4)) for n, v in r['every'].items()})
