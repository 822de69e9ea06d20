"""Long shots: cut at fully keyed frames into pieces filled as one batch, equal to the window-by-window
fill wherever the scheme is the same, and without a seam where a shot is cut."""

import numpy as np
import pytest
import torch
from test_anyorder import synthetic, tiny

from training.inbetween import fill as fill_engine
from training.motion.rotations import quat_angle

torch.set_num_threads(1)


def window_by_window(model, rot, trans, known, times):
    """The fill of a long shot as it was before pieces: overlapping windows one after another from the start,
    each conditioned on what the previous one committed and seeing the next key of every joint beyond it."""
    n, t, j = known.shape
    length = fill_engine.model_length(model)
    ctx = length // 4
    rot_out, trans_out, known_now = rot.copy(), trans.copy(), known.copy()
    start = 0
    while True:
        end = min(start + length, t)
        ahead = known[:, end:].any(axis=0)
        extra = sorted({end + int(np.argmax(ahead[:, jj])) for jj in np.flatnonzero(ahead.any(axis=0))})
        idx = np.concatenate([np.arange(start, end), np.array(extra, dtype=int)])
        r, tr, _ = fill_engine._window_fill(model, rot_out[:, idx], trans_out[:, idx], known_now[:, idx], times[:, idx])
        commit_to = end if end == t else end - ctx
        c, w = slice(start, commit_to), slice(0, commit_to - start)
        fillable = ~known[:, c]
        rot_out[:, c] = np.where(fillable[..., None], r[:, w], rot_out[:, c])
        trans_out[:, c] = np.where(fillable[..., None], tr[:, w], trans_out[:, c])
        known_now[:, c] = True
        if end == t:
            return rot_out, trans_out
        start = commit_to - ctx


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_a_shot_with_no_fully_keyed_frame_fills_as_window_by_window(skeleton):
    model = tiny(skeleton)
    rot, trans, times = synthetic(skeleton, n=1, t=230, seed=3)
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[:, ::10, 1:] = True  # every joint but the first keyed every 10 frames: no frame holds the whole pose
    known[:, 5::40, 0] = True
    known[:, 0] = True  # the first frame is whole: nothing to cut at
    r = fill_engine.fill(model, rot, trans, known, times)
    ref_rot, ref_trans = window_by_window(model, rot, trans, known, times)
    assert np.abs(r.rotations - ref_rot).max() < 1e-5
    assert np.abs(r.translations - ref_trans).max() < 1e-5
    seq = fill_engine.fill(model, rot, trans, known, times, cut=False)
    assert np.abs(seq.rotations - ref_rot).max() < 1e-5


def test_pieces_cut_at_whole_poses_within_one_window():
    known = np.zeros((300, 4), dtype=bool)
    known[::10] = True
    known[5, :2] = True  # half a pose: never a cut
    assert fill_engine.pieces(known, 65) == [(0, 60), (60, 120), (120, 180), (180, 240), (240, 290), (290, 299)]
    sparse = np.zeros((300, 4), dtype=bool)
    sparse[[0, 150, 299]] = True  # nothing in reach: a piece longer than the window
    assert fill_engine.pieces(sparse, 65) == [(0, 150), (150, 299)]


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_batched_pieces_equal_each_piece_filled_alone(skeleton, monkeypatch):
    """Windows of different lengths run padded in one batch; the padding changes nothing."""
    model = tiny(skeleton)
    rot, trans, times = synthetic(skeleton, n=2, t=260, seed=1)
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[0, ::10] = True
    known[1, ::7] = True
    known[1, 150:] = False
    known[1, [150, 259]] = True  # the second shot ends in a piece longer than the window: windows in turn
    known[0, 33, :3] = True
    batched = fill_engine.fill(model, rot, trans, known, times)
    monkeypatch.setattr(fill_engine, "BATCH", 1)
    alone = fill_engine.fill(model, rot, trans, known, times)
    # a random tiny model amplifies float32 rounding of a batch of another size (the shipped model: 1e-7)
    assert np.abs(batched.rotations - alone.rotations).max() < 1e-4
    assert np.abs(batched.translations - alone.translations).max() < 1e-4
    assert np.abs(batched.spread_deg - alone.spread_deg).max() < 1e-3
    assert (batched.spread_deg[~known] > 0).all() and (batched.spread_deg[known] == 0).all()


def _steps(q):
    return np.degrees(quat_angle(q[1:], q[:-1]))  # (T - 1, J)


def test_a_long_real_shot_has_no_seam_where_it_is_cut(data_root):
    """Cut frames are keys, so the pose is exact there; the motion through them changes speed no more than it
    does through the keys inside a piece (where one window sees both sides)."""
    from backend.registry import load_one
    from training.motion import clip as clip_io

    lm = load_one("body")
    clip = clip_io.load(data_root / "bandai/dataset-1/dataset-1_dance-short_normal_001.bvh", "body")
    t = clip.n_frames
    known = np.zeros((1, t, clip.schema.n_joints), dtype=bool)
    known[0, ::10] = True
    times = (np.arange(t) / clip.fps)[None]
    r = fill_engine.fill(lm.model, clip.rotations[None], clip.translations[None], known, times)
    cuts = [b for _, b in fill_engine.pieces(known[0], lm.length)][:-1]
    inner = [f for f in range(10, t - 10, 10) if f not in cuts]
    step = _steps(r.rotations[0])
    accel = np.abs(step[1:] - step[:-1])  # change of speed through frame f + 1, degrees per frame, per joint
    at_cuts, at_keys = accel[np.array(cuts) - 1].mean(), accel[np.array(inner) - 1].mean()
    assert at_cuts <= 1.25 * at_keys, (at_cuts, at_keys)
    # and no jump beyond the motion's own steps: every step next to a cut is within the capture's largest steps
    true_step = _steps(clip.rotations)
    near = np.concatenate([step[np.array(cuts) - 1], step[np.array(cuts)]])
    assert (near <= true_step.max(axis=0) + 1.0).all()
    root = r.translations[0, :, clip.schema.root]
    jumps = np.linalg.norm(np.diff(root, axis=0), axis=-1)
    true_jumps = np.linalg.norm(np.diff(clip.translations[:, clip.schema.root], axis=0), axis=-1)
    assert jumps[np.concatenate([np.array(cuts) - 1, np.array(cuts)])].max() <= true_jumps.max() * 1.1


def _long_hand_shot():
    """A 200-frame hand shot (four model windows) keyed at frames 0, 1, 100 and 199, and a small model."""
    model = tiny("hand", randomise=False)
    rot, trans, times = synthetic("hand", n=1, t=200)
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[:, [0, 1, 100, 199]] = True
    return model, rot, trans, known, times


def test_long_fill_stops_between_model_windows_when_cancelled():
    model, rot, trans, known, times = _long_hand_shot()
    asked = []

    def cancel() -> bool:  # let the first window run, then cancel
        asked.append(1)
        return len(asked) > 1

    with pytest.raises(fill_engine.Cancelled, match="fill cancelled at frame"):
        fill_engine.fill(model, rot, trans, known, times, cancel=cancel)
    assert len(asked) == 2  # 200 frames take 4 windows of 65; it stopped at the second
    assert fill_engine.fill(model, rot, trans, known, times, cancel=lambda: False).rotations.shape == rot.shape


def test_long_fill_reports_progress_in_frames():
    model, rot, trans, known, times = _long_hand_shot()
    seen = []
    fill_engine.fill(model, rot, trans, known, times, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] and [d for d, _ in seen] == sorted(d for d, _ in seen)
