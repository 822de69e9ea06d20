"""The fill engine: deterministic fill with a trained motion model (any-order sampling of variations:
:mod:`.sampling`, on the same windows and inputs).

Input is local motion in a schema, (N, T, J, 4) quaternions and (N, T, J, 3) translations, a known-cell
mask (N, T, J) and the frame times in seconds (N, T) (any rate, any spacing). Unknown cells may hold
anything (NaN included): they are never read. Known cells come back exactly as given.

* :func:`fill` - the distribution means, in one pass per window (query variant) or with the known
  frames as a cached prefix and every target scored side by side (triples variant). Shots longer than
  the model's training length are cut at frames where every joint is keyed (the whole pose is known there,
  so the pieces on either side do not depend on each other) and the pieces run as one batch; a piece
  longer than the model's window is filled by overlapping windows, each conditioned on what the previous
  one committed. Either way there is no seam.
* :func:`fill_at_rate` - the same at a frame rate the model was trained at (a 60 or 120 fps rig).

The backend, the command line and the benchmarks call these; neither re-implements them. The model is the torch
:class:`~training.inbetween.model.MotionFill` or, for a deterministic fill without importing torch, its numpy
twin (:mod:`.numpy_model`); torch is imported where a torch model is called.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import i0e, i1e

from training.inbetween.baselines import at_frames
from training.inbetween.features import (
    Canonical,
    canonical_batch,
    canonical_from_known,
    from_canonical,
    moving_translations,
    to_canonical,
)
from training.inbetween.numpy_model import NumpyMotionFill
from training.motion.rotations import dot, quat_slerp, sixd_to_quat, vector_norm
from training.motion.skeleton import get_schema

if TYPE_CHECKING:
    import torch

    from training.inbetween.model import MotionFill

# the frame rates and the time span a window may have (:func:`fill_at_rate` refuses others before any work: a BVH
# with a frame time of 1000 s would otherwise be filled on a grid of a million frames at a trained rate)
MIN_FPS, MAX_FPS = 0.001, 1000.0
MAX_SECONDS = 3600.0
MAX_VALUE = 1e6  # any rotation or translation number a caller gives (10 km in cm; 2,800 turns in degrees)
# the most frames a window may have once put on a grid at a trained rate (:func:`fill_at_rate`; sampling:
# :data:`.sampling.MAX_SAMPLE_GRID_FRAMES`): three keys a thousand seconds apart would otherwise make a grid of
# 72,000 frames from a request of a few hundred bytes
MAX_GRID_FRAMES = 8192
# two consecutive keys of a joint this close (rotation, radians; a moving joint's position too, in the skeleton's
# units) are one pose held: the frames between them are that pose (:class:`Holds`)
HOLD_ANGLE = 1e-4
HOLD_DISTANCE = 1e-4
# frames: how far from a partial key (some joints keyed on a frame, others not) the joints left to the model are
# smoothed, and the width of that smoothing (:func:`smooth_partial_keys`; chosen on two training takes of the
# hand, thumb and index keyed every 5 / 10 / 20 frames: the fewest pops with the error no worse, radius 2-6 tried)
PARTIAL_RADIUS = 4
PARTIAL_SIGMA = 2.0


class Cancelled(Exception):
    """Raised inside :func:`fill` or :func:`.sampling.sample` when its ``cancel`` callback says so."""


class FrameRateError(ValueError):
    """A window's frames the engine refuses for their rate or span (the server answers it naming ``frames``)."""

    field = "frames"


@dataclass
class FillResult:
    rotations: np.ndarray  # (N, T, J, 4)
    translations: np.ndarray  # (N, T, J, 3)
    entropy: np.ndarray  # (N, T, J) rotation entropy (nats) per cell; 0 for known cells
    spread_deg: np.ndarray  # (N, T, J) circular std of the rotation error in degrees; 0 for known cells
    # set by :func:`fill_at_rate` when the window's own rate was outside the trained range: (the window's
    # rate, the rate it was filled at), frames per second
    resampled: tuple[float, float] | None = None

    def window(self, i: int) -> FillResult:
        """Window ``i`` alone (arrays without the leading axis)."""
        return FillResult(self.rotations[i], self.translations[i], self.entropy[i], self.spread_deg[i],
                          self.resampled)


def check_shapes(model: MotionFill | NumpyMotionFill, rotations: np.ndarray, translations: np.ndarray,
                 known: np.ndarray, times: np.ndarray) -> None:
    """Raise a ValueError naming the argument whose shape does not fit the others and the model's skeleton:
    rotations (N, T, J, 4), translations (N, T, J, 3), known (N, T, J), times (N, T)."""
    if known.ndim != 3:
        raise ValueError(f"known must be (windows, frames, joints); got shape {known.shape}")
    n, t, j = known.shape
    if j != model.cfg.n_joints:
        raise ValueError(f"known has {j} joints; the {model.cfg.skeleton} model has {model.cfg.n_joints}")
    for name, a, want in (("rotations", rotations, (n, t, j, 4)), ("translations", translations, (n, t, j, 3)),
                          ("times", times, (n, t))):
        if a.shape != want:
            raise ValueError(f"{name} has shape {a.shape}; known's {known.shape} asks for {want}")


def _arrays(model: MotionFill | NumpyMotionFill, rotations, translations, known, times, one: str | None = None):
    """The engine's inputs as float64 / bool arrays of fitting shapes (:func:`check_shapes`). ``one``: the caller's
    name when it takes one window (arrays without the leading axis are given one; more windows are refused)."""
    rotations = np.asarray(rotations, dtype=np.float64)
    if one and rotations.ndim == 3:
        rotations, translations, known, times = (rotations[None], np.asarray(translations)[None],
                                                 np.asarray(known)[None], np.asarray(times)[None])
    if one and rotations.shape[0] != 1:
        raise ValueError(f"{one}() takes one window; it draws n variations of it")
    translations = np.asarray(translations, dtype=np.float64)
    known = np.asarray(known, dtype=bool)
    times = np.asarray(times, dtype=np.float64)
    check_shapes(model, rotations, translations, known, times)
    return rotations, translations, known, times


@dataclass(frozen=True)
class Holds:
    """The cells between two consecutive keys of their joint that are one pose (:data:`HOLD_ANGLE`; a moving
    joint's position too, :data:`HOLD_DISTANCE`), and that pose: what :func:`fill` and :func:`sample` write there.

    Why: an animator who keys one pose twice means a hold, and Blender's curves hold it exactly (their auto-clamped
    handles are flat between equal keys); the body model does not (measured: a walk held for 20 frames and keyed
    every 10 left the pose by up to 38 degrees and moved the hips 7 cm). The hold is written after the model has
    filled the window from its keys alone: told that the held cells are known, the model fills the other joints
    worse (bench inbetween, body, L2P@30 0.432 -> 0.527: a joint known on every frame, as the capture's still
    joint_Root and toes then are, is a pattern it rarely trained on)."""

    cells: np.ndarray  # (N, T, J)
    rotations: np.ndarray  # (N, T, J, 4): the held pose at held cells
    translations: np.ndarray  # (N, T, M, 3): the moving joints' held positions at their held cells
    moving: list[int]

    @classmethod
    def find(cls, model: MotionFill | NumpyMotionFill, rotations: np.ndarray, translations: np.ndarray,
             known: np.ndarray) -> Holds:
        t = known.shape[1]
        frame = np.arange(t)[None, :, None]
        prev = np.maximum.accumulate(np.where(known, frame, -1), axis=1)  # each cell's last key at or before it
        nxt = np.minimum.accumulate(np.where(known, frame, t)[:, ::-1], axis=1)[:, ::-1]  # its first at or after
        between = ~known & (prev >= 0) & (nxt < t)
        a, b = np.clip(prev, 0, t - 1), np.clip(nxt, 0, t - 1)
        qa, qb = at_frames(rotations, a), at_frames(rotations, b)
        with np.errstate(invalid="ignore", divide="ignore"):  # keys that are not finite unit quaternions: no hold
            cos = np.abs(dot(qa, qb)) / (vector_norm(qa) * vector_norm(qb))[..., 0]
            pose = qa / vector_norm(qa)  # (a zero key is refused by the fill itself)
        cells = between & (cos >= np.cos(HOLD_ANGLE / 2))
        schema = get_schema(model.cfg.skeleton)
        moving = list(schema.moving)
        held = translations[:, :, moving]
        ta, tb = at_frames(held, a[:, :, moving]), at_frames(held, b[:, :, moving])
        with np.errstate(invalid="ignore"):
            cells[:, :, moving] &= np.abs(ta - tb).max(-1) <= HOLD_DISTANCE
        # joints above the root place the whole figure in the model's frame; the model moves them with the root,
        # so one is held only where the root is held too
        cells[:, :, schema.above_root()] &= cells[:, :, [schema.root]]
        return cls(cells, pose, ta, moving)

    def apply(self, res: FillResult) -> FillResult:
        """``res`` with the held cells at their pose, certain (no entropy, no spread)."""
        if not self.cells.any():
            return res
        c, mv = self.cells, self.moving
        trans = res.translations.copy()
        trans[:, :, mv] = np.where(c[:, :, mv, None], self.translations, trans[:, :, mv])
        return replace(res, rotations=np.where(c[..., None], self.rotations, res.rotations), translations=trans,
                       entropy=np.where(c, 0.0, res.entropy), spread_deg=np.where(c, 0.0, res.spread_deg))


def _identity_like(rot: np.ndarray) -> np.ndarray:
    out = np.zeros_like(rot)
    out[..., 3] = 1.0
    return out


def _unit_known(rot: np.ndarray, known: np.ndarray) -> np.ndarray:
    """The known rotations (N, T, J, 4), a component that is not a number taken as 0, divided by their norms: exactly
    as a fill gives them back (the others as they are); a known rotation that is then zero is refused."""
    rot = np.asarray(rot, dtype=np.float64)
    given = np.nan_to_num(rot[known])
    norms = np.linalg.norm(given, axis=-1, keepdims=True)
    if (norms < 1e-6).any():
        raise ValueError("a known rotation is a zero quaternion")
    out = rot.copy()
    out[known] = given / norms
    return out


def _sanitise(model: MotionFill, rot, trans, known):
    """Replace unknown cells so nothing unknown is ever read: rotations -> identity, moving-joint
    translations -> 0. Other joints' translations are bone offsets (the rig, not the answer): each
    takes the median of the finite values given for it, so one corrupt frame cannot move a bone."""
    schema = get_schema(model.cfg.skeleton)
    known = np.asarray(known, dtype=bool)
    rot = _unit_known(np.where(known[..., None], np.asarray(rot, dtype=np.float64), _identity_like(rot)), known)
    trans = np.asarray(trans, dtype=np.float64)
    moving = np.zeros(schema.n_joints, dtype=bool)
    moving[list(schema.moving)] = True
    finite = np.isfinite(trans)
    count = finite.sum(axis=1)
    rigid = ~moving
    if finite.all() and (trans[:, :, rigid] == trans[:, :1, rigid]).all():
        offsets = trans[:, 0]  # every bone offset the same on every frame (the moving joints' are not read)
    elif finite.all():
        offsets = np.median(trans, axis=1)  # (N, J, 3)
    else:
        with warnings.catch_warnings():  # a joint with no finite value at all is refused below
            warnings.simplefilter("ignore", RuntimeWarning)
            offsets = np.nan_to_num(np.nanmedian(np.where(finite, trans, np.nan), axis=1))
    missing = (count == 0).any(-1) & ~moving[None]
    if missing.any():
        names = sorted({schema.joints[j] for j in np.nonzero(missing)[1]})
        raise ValueError(f"no bone offset given for joint(s) {', '.join(names)}")
    out = np.broadcast_to(offsets[:, None], trans.shape).copy()
    out[:, :, moving] = np.where(known[:, :, moving, None], np.nan_to_num(trans[:, :, moving]), 0.0)
    return rot, out, known


def _to_torch(b: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}


def _distributions(model: MotionFill | NumpyMotionFill, b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """One pass of the model: per-cell means and spreads for every target of the batch."""
    if isinstance(model, NumpyMotionFill):
        return model(b)
    import torch

    tb = _to_torch(b)
    with torch.inference_mode():
        out = model(tb) if model.cfg.variant == "query" else _triples_marginals(model, tb)
    return {k: v.double().numpy() for k, v in out.items()}


def _triples_marginals(model: MotionFill, b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Triples variant, all targets at once: known frames (in time order) form the cached prefix, then
    every target frame is asked for side by side after the last known frame."""
    import torch

    kn, q, trel = model.features(b)
    inp, tgt = model.input_tokens(kn, trel), model.target_tokens(q, trel)
    n, t = kn.shape[:2]
    h_all = torch.zeros(n, t, inp.shape[-1])
    for i in range(n):
        kf = torch.nonzero(b["known"][i].any(-1)).flatten()
        tf = torch.nonzero(b["target"][i].any(-1)).flatten()
        if len(tf) == 0:
            continue
        cache = None
        if len(kf) > 1:
            _, cache = model.triples_step(inp[i : i + 1, kf[:-1]], tgt[i : i + 1, kf[1:]], None)
        last = inp[i : i + 1, kf[-1:]].expand(1, len(tf), -1)
        h, _ = model.triples_step(last, tgt[i : i + 1, tf], cache, independent=True)
        h_all[i, tf] = h[0]
    return model.head(h_all, b)


def _decode(model: MotionFill, rot_c, pos_c, canon, rot_in, trans_in, known):
    """Canonical rotations (quaternions) and moving positions -> local motion in the caller's frame; known
    cells restored exactly. Bone offsets are canonical-invariant, so the sanitised input supplies them."""
    schema = get_schema(model.cfg.skeleton)
    trans_c = moving_translations(rot_c, pos_c, trans_in, schema)
    rot, trans = from_canonical(rot_c, trans_c, canon, schema)
    rot = np.where(known[..., None], rot_in, rot)
    trans = np.where(known[..., None], trans_in, trans)
    return rot, trans


def _window_distributions(model: MotionFill, rot, trans, known, times, given=None, valid=None):
    """The model's outputs for one batch of windows of at most its length: (raw outputs, canonical frames,
    sanitised rotations and translations). ``given``: the known cells the caller was given (sampling: not
    the drawn ones), the only ones that measure key velocities. ``valid`` (N, T): the frames that exist
    (a batch of windows of different lengths is padded; padding frames are neither known nor targets)."""
    rot, trans, known = _sanitise(model, rot, trans, known)
    schema = get_schema(model.cfg.skeleton)
    canon = canonical_from_known(rot, trans, known, schema, model.cfg.features.frame)
    rot_c, trans_c = to_canonical(rot, trans, canon, schema)
    target = ~known if valid is None else ~known & valid[..., None]
    b = canonical_batch(rot_c, trans_c, times, known, target, schema, model.cfg.features, given)
    return _distributions(model, b), canon, rot, trans


def distributions(model: MotionFill, rot, trans, known, times) -> tuple[dict[str, np.ndarray], Canonical]:
    """The model's outputs for every cell of windows of at most its length (canonical frame: 6D rotation means,
    log kappa, moving positions and their log sigma) and that canonical frame: what calibration compares with
    the truth."""
    out, canon, _, _ = _window_distributions(model, rot, trans, known, times)
    return out, canon


def _window_fill(model: MotionFill, rot, trans, known, times, valid=None):
    """Fill one batch of windows of at most the model's length: (rotations, translations, raw outputs)."""
    given_trans = np.asarray(trans, dtype=np.float64)
    out, canon, rot, trans = _window_distributions(model, rot, trans, known, times, valid=valid)
    r, t = _decode(model, sixd_to_quat(out["rot6d"]), out["pos"], canon, rot, trans, known)
    t = np.where(known[..., None] & np.isfinite(given_trans), given_trans, t)  # known cells exactly as given
    return r, t, out


def von_mises_entropy(log_kappa: np.ndarray) -> np.ndarray:
    """Entropy of von Mises(0, kappa) in nats: log(2 pi I0(kappa)) - kappa I1(kappa) / I0(kappa)."""
    kappa = np.exp(log_kappa)
    i0, i1 = i0e(kappa), i1e(kappa)
    return np.log(2 * np.pi * i0) + kappa - kappa * i1 / i0


def _spread(out: dict[str, np.ndarray], known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ent = von_mises_entropy(out["log_kappa"])
    spread = np.rad2deg(1.0 / np.sqrt(np.exp(out["log_kappa"])))
    return np.where(known, 0.0, ent), np.where(known, 0.0, spread)


def model_length(model: MotionFill) -> int:
    return int(model.cfg.max_frames)


BATCH = 64  # model windows per call of a long fill (progress and cancellation are checked between calls)


@dataclass
class _Piece:
    """A stretch [a, b] of one shot filled on its own: by one model window when it fits, else by overlapping
    windows one after another (``start``: the first frame of its next window)."""

    shot: int
    a: int
    b: int
    start: int
    upto: int  # frames before it are committed


def pieces(known: np.ndarray, length: int) -> list[tuple[int, int]]:
    """Where one shot (known (T, J)) is cut: [a, b] stretches (inclusive, consecutive ones share their end
    frame) between frames on which every joint is keyed. Such a frame holds the whole pose, so the stretches on
    either side of it are filled independently; each takes the farthest such frame within one model window
    (``length`` frames), or, with none in reach, the next one (a longer stretch, filled by overlapping windows)."""
    t = known.shape[0]
    full = np.flatnonzero(known.all(axis=-1))
    out = []
    a = 0
    while a < t - 1:
        later = full[full > a]
        reach = later[later <= a + length - 1]
        b = int(reach[-1]) if len(reach) else int(later[0]) if len(later) else t - 1
        out.append((a, b))
        a = b
    return out or [(0, t - 1)]


def _keys_before(known: np.ndarray, a: int) -> np.ndarray:
    """Each joint's last keyed frame before frame ``a`` (known (T, J)), as sorted unique frames."""
    if a == 0:
        return np.zeros(0, dtype=int)
    behind = known[:a]
    has = behind.any(axis=0)
    return np.unique(a - 1 - np.argmax(behind[::-1], axis=0)[has])


def _keys_after(known: np.ndarray, end: int) -> np.ndarray:
    """Each joint's first keyed frame at or after frame ``end``, as sorted unique frames."""
    ahead = known[end:]
    if len(ahead) == 0:
        return np.zeros(0, dtype=int)
    has = ahead.any(axis=0)
    return np.unique(end + np.argmax(ahead, axis=0)[has])


def _window_index(known: np.ndarray, a: int, b: int, start: int, end: int) -> tuple[np.ndarray, int]:
    """The frames of one shot (known (T, J)) that a window over its frames [start, end) of the piece [a, b]
    reads, in order (-1: a spacer frame, neither known nor a target), and how many of them come before the
    window's own: the piece's first window also sees each joint's last key before the piece, and every window
    each joint's next key at or after its end. Keys beyond a piece's ends sit after a spacer, so that, as in the
    whole shot, a key at the cut is not their neighbour frame: its velocity is the slope across it, not a
    one-sided difference with a key ten frames away."""
    before = _keys_before(known, a) if start == a else np.zeros(0, dtype=int)
    after = _keys_after(known, end)
    gap = [-1] if end == b + 1 and len(after) else []
    idx = np.concatenate([before, [-1] * bool(len(before)), np.arange(start, end), gap, after]).astype(int)
    return idx, len(before) + bool(len(before))


def _window_times(times: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The times of a window's frames (:func:`_window_index`) from the shot's ``times`` (T,): a spacer halfway
    between its neighbours."""
    tm = times[idx].astype(np.float64)
    spacer = np.flatnonzero(idx < 0)
    tm[spacer] = (times[idx[spacer - 1]] + times[idx[spacer + 1]]) / 2.0
    return tm


def _gather_window(rotations: np.ndarray, translations: np.ndarray, known: np.ndarray, times: np.ndarray,
                   idx: np.ndarray, size: int | None = None):
    """One window's arrays over a shot's frames ``idx`` (:func:`_window_index`; -1: a spacer): the rotations and
    translations (R, size, J, ...) of the shot's rows (R, T, J, ...), its known cells (size, J), which of its frames
    are the shot's (size,) and their times (size,) (:func:`_window_times`). Spacers, and padding up to ``size``
    frames, are identity rotations and NaN translations, never known; padding frames' times go on a second apart.
    Why: a long fill batches windows of several shots, a long sample draws one shot's rows window by window, and
    both read the same window of a shot."""
    m = len(idx)
    size = m if size is None else size
    real = idx >= 0
    rot = np.broadcast_to(_identity_like(rotations[:1, :1]), (len(rotations), size) + rotations.shape[2:]).copy()
    trans = np.full((len(translations), size) + translations.shape[2:], np.nan)
    rot[:, :m][:, real], trans[:, :m][:, real] = rotations[:, idx[real]], translations[:, idx[real]]
    kn = np.zeros((size,) + known.shape[1:], dtype=bool)
    kn[:m][real] = known[idx[real]]
    valid = np.zeros(size, dtype=bool)
    valid[:m] = real
    tm = np.zeros(size)
    tm[:m] = _window_times(times, idx)
    tm[m:] = tm[m - 1] + np.arange(1, size - m + 1)
    return rot, trans, kn, valid, tm


def fill(
    model: MotionFill, rotations, translations, known, times, cancel: Callable[[], bool] | None = None,
    progress: Callable[[int, int], None] | None = None, cut: bool = True,
) -> FillResult:
    """Deterministic fill of windows of any length (see the module docstring). ``cancel`` is asked before
    each model call of a long fill; when it says so, :class:`Cancelled` is raised and nothing returned.
    ``progress(done, total)`` hears, in frames, how much of a long fill is committed. ``cut=False`` fills a long
    shot by overlapping windows from its start to its end, never cutting it at fully keyed frames."""
    rotations, translations, known, times = _arrays(model, rotations, translations, known, times)
    if not known.any(axis=(1, 2)).all():
        raise ValueError("every window needs at least one known cell")
    holds = Holds.find(model, rotations, translations, known)
    res = _fill(model, rotations, translations, known, times, cancel, progress, cut)
    return holds.apply(smooth_partial_keys(res, known))


def smooth_partial_keys(res: FillResult, known: np.ndarray, radius: int = PARTIAL_RADIUS,
                        sigma: float = PARTIAL_SIGMA) -> FillResult:
    """``res`` with the cells near a partial key smoothed along their joint: on a frame where some joints are
    keyed and others are not (the animator keyed the thumb and index, not the other fingers; the arms, not the
    legs), the model predicts the joints left to it there differently from the frames around it, so they jump
    into and out of every such key (measured: a hand's unkeyed fingers moved 5 times as far on the frames next
    to a key as elsewhere, a body's never-keyed legs 5.5 cm against 1.0 in the capture). Each unknown cell within
    ``radius`` frames of such a key is replaced by a line fitted (Gaussian weights of ``sigma`` frames) to its
    joint's cells around it in the same gap between that joint's own keys, those two keys included, which stay
    exact; quaternions on the centre cell's hemisphere, normalised. A line, not a mean: next to a joint's own key
    a mean sees one side only and pulled the frame after the key towards the gap's middle (a Spine keyed alone
    on frame 4 of a walk keyed every 10 frames: the whole body jumped 36 cm from frame 0 to 1, the capture 16).
    Frames with every joint keyed, and joints known on every frame (conditioning curves, such as a wrist given
    by the arm), are not partial keys, so a window keyed whole poses is unchanged."""
    n, t, _ = known.shape
    before, after = np.zeros_like(known), np.zeros_like(known)
    before[:, 1:], after[:, :-1] = known[:, :-1], known[:, 1:]
    # known cells that are keys: not inside a run of known frames, not a joint known on every frame
    keys = known & ~(before & after) & ~known.all(axis=1, keepdims=True)
    partial = ~known & keys.any(-1)[..., None]  # cells a frame with keys leaves to the model
    near = np.zeros_like(partial)
    for d in range(-radius, radius + 1):
        lo, hi = max(0, -d), min(t, t - d)
        if hi > lo:  # a window shorter than the shift has no cell that far away
            near[:, lo:hi] |= partial[:, lo + d : hi + d]
    target = near & ~known
    if not target.any():
        return res
    # a cell's gap: the known cells of its joint so far; the key opening the gap counts as the gap, the closing one
    # as the next
    gap = np.cumsum(known, axis=1)
    sums = {k: np.zeros(known.shape) for k in ("w", "d", "dd")}  # the weights' moments, per cell
    rot = [np.zeros_like(res.rotations) for _ in range(2)]  # sum w q, sum w d q
    trans = [np.zeros_like(res.translations) for _ in range(2)]
    for d in range(-radius, radius + 1):
        lo, hi = max(0, -d), min(t, t - d)
        if hi <= lo:
            continue
        other = slice(lo + d, hi + d)
        own, there = gap[:, lo:hi], gap[:, other]
        same = (there == own) | (known[:, other] & (there == own + 1))
        w = np.exp(-0.5 * (d / sigma) ** 2) * same
        q = res.rotations[:, other]
        q = np.where(np.sum(q * res.rotations[:, lo:hi], -1, keepdims=True) < 0, -q, q)
        for k, v in (("w", w), ("d", w * d), ("dd", w * d * d)):
            sums[k][:, lo:hi] += v
        for acc, values in ((rot, q), (trans, res.translations[:, other])):
            acc[0][:, lo:hi] += w[..., None] * values
            acc[1][:, lo:hi] += (w * d)[..., None] * values
    # the line's value at the cell (d = 0): (S_dd S_y - S_d S_dy) / (S_w S_dd - S_d^2); the mean where one frame
    # is all there is
    det = sums["w"] * sums["dd"] - sums["d"] ** 2
    line = det > 1e-9 * np.maximum(sums["w"] * sums["dd"], 1e-12)

    def at_cell(acc: list[np.ndarray]) -> np.ndarray:
        fitted = (sums["dd"][..., None] * acc[0] - sums["d"][..., None] * acc[1]) / np.where(line, det, 1.0)[..., None]
        return np.where(line[..., None], fitted, acc[0] / np.maximum(sums["w"], 1e-12)[..., None])

    smooth_rot = at_cell(rot)
    smooth_rot = smooth_rot / np.maximum(np.linalg.norm(smooth_rot, axis=-1, keepdims=True), 1e-12)
    return replace(res, rotations=np.where(target[..., None], smooth_rot, res.rotations),
                   translations=np.where(target[..., None], at_cell(trans), res.translations))


def _fill(model: MotionFill, rotations: np.ndarray, translations: np.ndarray, known: np.ndarray, times: np.ndarray,
          cancel: Callable[[], bool] | None, progress: Callable[[int, int], None] | None, cut: bool) -> FillResult:
    """:func:`fill` before its holds are written."""
    n, t, j = known.shape
    length = model_length(model)
    if t <= length:
        r, tr, out = _window_fill(model, rotations, translations, known, times)
        ent, spread = _spread(out, known)
        return FillResult(r, tr, ent, spread)
    # long shots: cut at fully keyed frames into pieces filled independently (see :func:`pieces`). A piece
    # longer than the model's window is filled by overlapping windows: each commits its first (length - ctx)
    # frames, and the next one starts ctx frames before that point with the committed frames as known context.
    # Every window also sees, at their true times, the next keyed frame of every joint beyond its end, and a
    # piece's first window the last keyed frame of every joint before its start, so nothing is filled blind to
    # a key on either side and a key's velocity is measured as it is in the whole shot. The windows of every
    # piece that are due run as one batch (padded to the longest), a piece's next window after its previous one.
    ctx = length // 4
    rot_out, trans_out = _unit_known(rotations, known), translations.copy()  # known cells as a window gives them
    known_now = known.copy()
    ent = np.zeros((n, t, j))
    spread = np.zeros((n, t, j))
    # a later piece's first frame is the previous one's last, a whole pose: nothing there to commit twice
    todo = [_Piece(w, a, b, a, a + (a > 0)) for w in range(n)
            for a, b in (pieces(known[w], length) if cut else [(0, t - 1)]) if not known[w, a : b + 1].all()]
    total = sum(p.b + 1 - p.upto for p in todo)
    done = 0
    while todo:
        calls = -(-len(todo) // BATCH)
        for chunk in np.array_split(np.array(todo, dtype=object), calls):
            if cancel is not None and cancel():
                raise Cancelled(f"fill cancelled at frame {min(p.start for p in chunk)} of {t}")
            wins = []
            for p in chunk:
                end = min(p.start + length, p.b + 1)
                wins.append((p, end, *_window_index(known[p.shot], p.a, p.b, p.start, end)))
            size = max(len(w[2]) for w in wins)
            parts = [_gather_window(rot_out[p.shot : p.shot + 1], trans_out[p.shot : p.shot + 1], known_now[p.shot],
                                    times[p.shot], idx, size) for p, _, idx, _ in wins]
            b_rot, b_trans = (np.concatenate(x) for x in list(zip(*parts, strict=True))[:2])
            b_known, b_valid, b_times = (np.stack(x) for x in list(zip(*parts, strict=True))[2:])
            r, tr, out = _window_fill(model, b_rot, b_trans, b_known, b_times, b_valid)
            e, s = _spread(out, b_known)
            for i, (p, end, _, lead) in enumerate(wins):
                commit_to = end if end == p.b + 1 else end - ctx
                c = np.s_[p.shot, p.upto : commit_to]  # the frames this window is the first to commit
                w = np.s_[i, lead + p.upto - p.start : lead + commit_to - p.start]
                fillable = ~known[c]
                rot_out[c] = np.where(fillable[..., None], r[w], rot_out[c])
                trans_out[c] = np.where(fillable[..., None], tr[w], trans_out[c])
                ent[c] = np.where(fillable, e[w], 0.0)
                spread[c] = np.where(fillable, s[w], 0.0)
                known_now[c] = True
                done += commit_to - p.upto
                p.upto = commit_to
                p.start = p.b + 1 if end == p.b + 1 else commit_to - ctx
            if progress is not None:
                progress(done, total)
        todo = [p for p in todo if p.start <= p.b]
    return FillResult(rot_out, trans_out, ent, spread)


def _bracket(src_times: np.ndarray, times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``times`` (T,), the sorted ``src_times`` (S,) frame before it and its weight towards the next."""
    i = np.clip(np.searchsorted(src_times, times, side="right") - 1, 0, len(src_times) - 2)
    span = np.maximum(src_times[i + 1] - src_times[i], 1e-12)
    return i, np.clip((times - src_times[i]) / span, 0.0, 1.0)


def _interpolate_at(src_times: np.ndarray, rot: np.ndarray, trans: np.ndarray, times: np.ndarray):
    """Rotations (S, J, 4) slerped and translations (S, J, 3) lerped from sorted ``src_times`` (S,) to
    ``times`` (T,) inside their span."""
    i, w = _bracket(src_times, times)
    r = quat_slerp(rot[i], rot[i + 1], w[:, None])
    tr = trans[i] + (trans[i + 1] - trans[i]) * w[:, None, None]
    return r, tr, i, w


def _smooth_at(src_times: np.ndarray, rot: np.ndarray, trans: np.ndarray, times: np.ndarray):
    """Rotations (S, J, 4) and translations (S, J, 3) on sorted ``src_times`` (S,) carried to ``times`` (T,)
    by cubic Hermite curves through every source frame (tangents by central differences over the uneven
    spacing; quaternions on one hemisphere, normalised after). A fill on a coarse grid then reaches a 60 or
    120 fps rig's frames with the motion's own speed and curvature, not as straight segments whose speed
    jumps at every grid frame."""
    from scipy.interpolate import CubicHermiteSpline

    if len(src_times) < 3:
        r, tr, _, _ = _interpolate_at(src_times, rot, trans, times)
        return r, tr
    q = rot.copy()
    flip = np.cumprod(np.where(np.sum(q[1:] * q[:-1], axis=-1) < 0, -1.0, 1.0), axis=0)
    q[1:] *= flip[..., None]
    t = np.clip(times, src_times[0], src_times[-1])
    out = []
    for y in (q, trans):
        flat = y.reshape(len(src_times), -1)
        curve = CubicHermiteSpline(src_times, flat, np.gradient(flat, src_times, axis=0, edge_order=2), axis=0)
        out.append(curve(t).reshape((len(t),) + y.shape[1:]))
    r = out[0] / np.linalg.norm(out[0], axis=-1, keepdims=True)
    return r, out[1]


GAP_STEPS = 1.5  # a step longer than this many frames at the window's rate skips frames: filled on the grid


def _rates(times: np.ndarray, fps_range: tuple[float, float], max_grid: int = MAX_GRID_FRAMES,
           fps: float | None = None) -> tuple[float, float | None]:
    """(the frames' rate, 0 for a single frame; the rate of the grid they are filled on: None for the frames as
    they are, at a rate within 10 % of the trained ``fps_range`` and skipping none; their own rate where they skip
    frames (:data:`GAP_STEPS`: a request of the keys and a few targets far apart, which the model, trained on
    unbroken windows, read as one short window: a hip 52 m off); else the nearest trained rate) of windows'
    ``times`` (N, T); refused (:class:`FrameRateError`) outside :data:`MIN_FPS`..:data:`MAX_FPS`, beyond
    :data:`MAX_SECONDS`, and when the grid would hold more than ``max_grid`` frames. ``fps``: the rate the frames
    are numbered at (a request's, a rig's), else their median spacing's (Complete Pose sends the keys and one frame:
    at its spacing, keys 10 frames apart read as 3 fps and were filled on a 24 fps grid, 1.6-1.9x further from the
    capture than at the rig's own 30)."""
    t = times.shape[1]
    steps = np.diff(times, axis=1)
    rate = 1.0 / float(np.median(steps)) if t > 1 and np.median(steps) > 0 else 0.0
    if fps and t > 1:
        rate = float(fps)
    span = float((times[:, -1] - times[:, 0]).max()) if t > 1 else 0.0
    if rate and not MIN_FPS <= rate <= MAX_FPS:
        what = f"{rate:.6g} fps" if fps else f"frames {1.0 / rate:.6g} s apart at their median spacing ({rate:.6g} fps)"
        raise FrameRateError(f"{what}: the frame rate must be within {MIN_FPS:g}..{MAX_FPS:g} fps")
    if span > MAX_SECONDS:
        raise FrameRateError(f"the window spans {span:.6g} s at {rate:.6g} fps; at most {MAX_SECONDS:g} s")
    lo, hi = fps_range
    trained = rate == 0.0 or lo * 0.9 <= rate <= hi * 1.1
    if trained and (rate == 0.0 or float(steps.max()) * rate <= GAP_STEPS):
        return rate, None
    target = rate if trained else min(max(rate, lo), hi)
    if span * target + 1 > max_grid:  # the grid's regular frames (a keyed frame between two of them adds one)
        raise FrameRateError(f"the window's {t} frames at {rate:.6g} fps span {span:.6g} s: at {target:g} fps, the "
                             f"rate the model was trained at, that is about {int(span * target) + 1} frames; at most "
                             f"{max_grid}")
    return rate, target


def _trained_grid(tm: np.ndarray, rot: np.ndarray, trans: np.ndarray, kn: np.ndarray, rate: float):
    """One window (times (T,), rotations, translations, known (T, J)) put on a grid at ``rate`` that also holds
    every frame with a key at its own time: (grid times, rotations, translations, known). Joints known on
    consecutive frames (conditioning curves) are known on the grid between them too, where those frames lie at most
    :data:`GAP_STEPS` grid frames apart (keys further apart bound a gap to fill: read as one curve, Complete Pose's
    keys every 10 frames were slerped between, not filled)."""
    t = len(tm)
    always = kn.all(axis=0)  # joints known on every frame: conditioning curves, not keys
    anchors = np.flatnonzero((kn & ~always).any(axis=1) | (np.arange(t) == 0) | (np.arange(t) == t - 1))
    regular = np.arange(tm[0], tm[-1], 1.0 / rate)
    near = np.min(np.abs(regular[:, None] - tm[anchors][None, :]), axis=1) < 0.5 / rate
    grid_t = np.sort(np.concatenate([tm[anchors], regular[~near]]))
    is_anchor = np.isin(grid_t, tm[anchors])
    g_rot, g_trans, i, _ = _interpolate_at(tm, rot, trans, grid_t)
    close = np.append(np.diff(tm) <= GAP_STEPS / rate, True)  # a frame and the next: one curve
    g_known = kn[i] & kn[np.minimum(i + 1, t - 1)] & close[i][:, None]  # between two known frames of the joint
    exact = np.searchsorted(tm, grid_t[is_anchor])
    g_rot[is_anchor], g_trans[is_anchor] = rot[exact], trans[exact]
    g_known[is_anchor] = kn[exact]
    return grid_t, g_rot, g_trans, g_known


def _from_grid(grid_t: np.ndarray, res: FillResult, tm: np.ndarray, rot: np.ndarray, trans: np.ndarray,
               kn: np.ndarray) -> tuple[np.ndarray, ...]:
    """A fill of one window on a grid (``res``: (G, J, ...) arrays) carried back to the window's frames ``tm``
    (:func:`_smooth_at`; the entropies and spreads interpolated), its known cells exactly as given."""
    r, tr = _smooth_at(grid_t, res.rotations, res.translations, tm)
    k, wgt = _bracket(grid_t, tm)
    ent = res.entropy[k] * (1 - wgt[:, None]) + res.entropy[k + 1] * wgt[:, None]
    spread = res.spread_deg[k] * (1 - wgt[:, None]) + res.spread_deg[k + 1] * wgt[:, None]
    r = np.where(kn[..., None], rot, r)
    tr = np.where(kn[..., None], trans, tr)
    return r, tr, np.where(kn, 0.0, ent), np.where(kn, 0.0, spread)


def fill_at_rate(model: MotionFill, rotations, translations, known, times, fps_range: tuple[float, float],
                 cancel: Callable[[], bool] | None = None,
                 progress: Callable[[int, int], None] | None = None, fps: float | None = None) -> FillResult:
    """:func:`fill` at a frame rate the model was trained at. A window whose frames are closer together (or
    further apart) than any trained rate (a 60 or 120 fps rig on a 24-40 fps model) is filled on a grid at
    the nearest trained rate that also holds every frame with a key at its own time; the answer is then
    carried back to the window's frames by cubic curves through the grid's frames (:func:`_smooth_at`).
    Joints known on consecutive frames (conditioning curves) are known on the grid between them too. Known
    cells come back exactly as given. ``progress`` as in :func:`fill` (frames of the grid a long window is
    filled on). A grid at another rate is filled by overlapping windows, never cut at its keyed frames: a 60 or
    120 fps rig keyed every few of its frames has a fully keyed grid frame every one or two, and pieces that
    short would see only the two keys around them (measured: 3-29 % further from the truth on the foreign rigs).
    A window that skips frames at its own rate is filled on the grid of all its frames as if they had been sent
    (:func:`_rates`, which also reads ``fps``: the rate the frames are numbered at)."""
    rotations, translations, known, times = _arrays(model, rotations, translations, known, times)
    rate, target_rate = _rates(times, fps_range, fps=fps)
    if target_rate is None:
        return fill(model, rotations, translations, known, times, cancel, progress)
    parts = []
    for w in range(known.shape[0]):
        grid_t, g_rot, g_trans, g_known = _trained_grid(times[w], rotations[w], translations[w], known[w],
                                                        target_rate)
        res = fill(model, g_rot[None], g_trans[None], g_known[None], grid_t[None], cancel, progress,
                   cut=target_rate == rate)
        parts.append(_from_grid(grid_t, res.window(0), times[w], rotations[w], translations[w], known[w]))
    res = FillResult(*(np.stack(x) for x in zip(*parts, strict=True)), resampled=resampling(rate, target_rate))
    return Holds.find(model, rotations, translations, known).apply(res)  # held on the window's own frames too



def resampling(rate: float, target_rate: float) -> tuple[float, float] | None:
    """A result's ``resampled``: (the window's rate, the grid's) where the grid has another rate; None where the
    grid only puts back the frames a window skips."""
    return None if target_rate == rate else (rate, target_rate)


def one_call(model: MotionFill, times: np.ndarray, fps_range: tuple[float, float], fps: float | None = None) -> bool:
    """Whether :func:`fill_at_rate` fills windows with these frame ``times`` (N, T) in one model call: no longer
    than the model's window, at their own (trained) rate. Such windows of one model and length can be filled
    together, stacked (a server batches its concurrent requests so); a rate the engine refuses says False, and the
    window's own call then says why."""
    if times.shape[1] > model_length(model):
        return False
    try:
        return _rates(times, fps_range, fps=fps)[1] is None
    except FrameRateError:
        return False
