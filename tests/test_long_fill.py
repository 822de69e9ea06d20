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
    # the keys of every joint but the first are partial keys: the engine smooths the first joint through them
    zeros = np.zeros(known.shape)
    ref = fill_engine.smooth_partial_keys(fill_engine.FillResult(ref_rot, ref_trans, zeros, zeros), known)
    ref_rot, ref_trans = ref.rotations, ref.translations
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


def _spiky(t=30, j=4):
    """A smooth turn of every joint with a one-frame jump on frame 10 (the last of a shorter window) in joints 2
    and 3."""
    from training.motion.rotations import axis_angle_to_quat

    angles = np.linspace(0.0, 1.0, t)[None, :, None, None] * np.array([0.0, 0.0, 1.0])
    rot = axis_angle_to_quat(np.broadcast_to(angles, (1, t, j, 3)).copy())
    rot[0, min(10, t - 1), 2:] = axis_angle_to_quat(np.array([0.4, 0.0, 0.35]))
    return fill_engine.FillResult(rot, np.zeros((1, t, j, 3)), np.zeros((1, t, j)), np.zeros((1, t, j)))


def _turn(a, b):
    return np.degrees(2 * np.arccos(np.abs(np.sum(a * b, -1)).clip(0.0, 1.0)))


def test_joints_left_to_the_model_on_a_partial_key_are_smoothed_through_it():
    """Frame 10 keys joints 0 and 1 only: the jump the model put in joints 2 and 3 there is smoothed away, their
    own keys and every keyed cell stay exact, and cells far from the partial key are untouched."""
    res = _spiky()
    known = np.zeros((1, 30, 4), dtype=bool)
    known[0, [0, 20, 29]] = True  # whole poses
    known[0, 10, :2] = True  # a partial key
    out = fill_engine.smooth_partial_keys(res, known)
    assert np.array_equal(out.rotations[known], res.rotations[known])
    steps = _turn(out.rotations[0, 1:, 2:], out.rotations[0, :-1, 2:])
    assert _turn(res.rotations[0, 10, 2:], res.rotations[0, 9, 2:]).min() > 20 and steps.max() < 8
    far = np.ones(30, dtype=bool)
    far[10 - fill_engine.PARTIAL_RADIUS : 10 + fill_engine.PARTIAL_RADIUS + 1] = False
    assert np.array_equal(out.rotations[0, far], res.rotations[0, far])
    assert np.array_equal(out.rotations[0, :, :2], res.rotations[0, :, :2])  # joints keyed there: their curves


def test_smoothing_a_partial_key_keeps_steady_motion_next_to_a_whole_key():
    """Joints 0 and 1 keyed alone on frame 4, whole poses on 0 and 20, the others moving steadily: their cells near
    the partial key keep that steady motion (a line is fitted, the key on frame 0 included). A mean saw one side of
    frame 1 and pulled it towards the gap's middle: the whole body jumped into the frame after the key."""
    t, j = 21, 4
    res = _spiky(t=t)
    ramp = np.linspace(0.0, 2.0, t)[None, :, None, None] * np.array([1.0, 0.5, -0.25])
    res = fill_engine.FillResult(res.rotations, np.broadcast_to(ramp, (1, t, j, 3)).copy(), res.entropy,
                                 res.spread_deg)
    known = np.zeros((1, t, j), dtype=bool)
    known[0, [0, 20]] = True
    known[0, 4, :2] = True
    out = fill_engine.smooth_partial_keys(res, known)
    np.testing.assert_allclose(out.translations, res.translations, atol=1e-12)


@pytest.mark.parametrize("t", [1, 2, 3, 4, 5])
def test_a_window_shorter_than_the_smoothing_is_smoothed_within_it(t):
    """Windows of fewer frames than the smoothing reaches (a 2- or 3-frame request with one joint keyed): the shifts
    beyond the window's ends see nothing (they raised a broadcasting error); the partial key's own cells stay."""
    res = _spiky(t=t)
    known = np.zeros((1, t, 4), dtype=bool)
    known[0, 0, :2] = True  # a partial key on the first frame
    out = fill_engine.smooth_partial_keys(res, known)
    assert out.rotations.shape == res.rotations.shape and np.isfinite(out.rotations).all()
    assert np.array_equal(out.rotations[known], res.rotations[known])
    np.testing.assert_allclose(np.linalg.norm(out.rotations, axis=-1), 1.0, atol=1e-12)


def test_whole_poses_and_joints_known_throughout_make_no_partial_key():
    res = _spiky()
    known = np.zeros((1, 30, 4), dtype=bool)
    known[0, ::10] = True
    known[0, :, 0] = True  # a conditioning curve (a wrist from the arm): known on every frame, never a partial key
    out = fill_engine.smooth_partial_keys(res, known)
    assert np.array_equal(out.rotations, res.rotations) and np.array_equal(out.translations, res.translations)


@pytest.mark.data
def test_the_shipped_hand_no_longer_twitches_its_unkeyed_fingers_at_each_key(data_root):
    """Thumb and index keyed every 10 frames, the wrist known, the other fingers left to the shipped hand: next
    to a key they had moved 5 times as far per frame as elsewhere; smoothed, no further than elsewhere."""
    from training.bench.inbetween import WINDOW, load_protocol_clips
    from training.bench.keys import in_wrist_frame, keyed_cells
    from training.inbetween.checkpoint import load_model
    from training.motion.skeleton import get_schema
    from training.motion.splits import split_files
    from training.motion.windows import cut

    schema = get_schema("hand")
    model, _ = load_model("hand")
    w = cut(load_protocol_clips(split_files("hand", "test", data_root), schema), WINDOW, 40)
    cells, _ = keyed_cells(10, schema, "known", 2)
    n = 24
    known = np.broadcast_to(cells, (n,) + cells.shape).copy()
    times = np.broadcast_to(np.arange(WINDOW) / w.fps, (n, WINDOW))
    res = fill_engine.fill(model, np.where(known[..., None], w.rotations[:n], np.nan), w.translations[:n], known,
                           times)
    raw = fill_engine._fill(model, np.where(known[..., None], w.rotations[:n], np.nan), w.translations[:n], known,
                            times, None, None, True)
    unkeyed = [j for j in range(schema.n_joints) if not cells[:, j].any()]

    def steps(r):  # (frames - 1,): the unkeyed joints' mean travel per frame in the wrist's frame
        pos = in_wrist_frame(r.rotations, r.translations, schema)[1]
        return np.linalg.norm(np.diff(pos[:, :, unkeyed], axis=1), axis=-1).mean(axis=(0, 2))

    at_keys = [k + d for k in range(10, 60, 10) for d in (-1, 0)]
    elsewhere = [f for f in range(5, 59) if f not in at_keys]
    before, after = steps(raw), steps(res)
    assert before[at_keys].mean() > 3 * before[elsewhere].mean()
    assert after[at_keys].mean() < 1.2 * after[elsewhere].mean()
