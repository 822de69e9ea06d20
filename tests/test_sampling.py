"""Any-order sampling of the query model: correctness of the fast sampler and its calibration.

Tiny untrained models with a random head (fast, seeded): the encoding reused across steps, known cells
unchanged, every target drawn once, seeds, temperature 0 as the deterministic fill, the root's draws bounded,
and the calibration carried by the model card.
"""

import dataclasses

import numpy as np
import pytest
import torch

from tests.test_anyorder import inbetween_mask, synthetic, tiny
from training.inbetween import fill as fill_engine
from training.inbetween import sampling
from training.inbetween.checkpoint import card_path, load_model, read_card, save_model, write_card
from training.inbetween.features import (
    FeatureSpec,
    canonical_batch,
    canonical_from_known,
    moving_chain,
    to_canonical,
    update_batch,
)
from training.motion.rotations import quat_angle
from training.motion.skeleton import forward_kinematics, get_schema

torch.set_num_threads(1)


def _window(skeleton="hand", t=14, gap=8, seed=0):
    rot, trans, times = synthetic(skeleton, n=1, t=t, seed=seed)
    known = inbetween_mask(1, t, get_schema(skeleton).n_joints, ctx=3, gap=gap)[0]
    return rot[0], trans[0], known, times[0]


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_decoding_against_a_kept_encoding_equals_the_full_pass(skeleton):
    model = tiny(skeleton)
    rot, trans, known, times = _window(skeleton)
    schema = get_schema(skeleton)
    canon = canonical_from_known(rot[None], trans[None], known[None], schema, model.cfg.features.frame)
    rc, tc = to_canonical(rot[None], trans[None], canon, schema)
    b = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in
         canonical_batch(rc, tc, times[None], known[None], ~known[None], schema, model.cfg.features).items()}
    with torch.no_grad():
        full, split = model(b), model.decode(b, model.encode(b))
    for k in full:
        assert torch.allclose(full[k], split[k], atol=1e-6), k


SPECS = {"6d": FeatureSpec(base_velocity=0.5, across_keys=True, clamp_keys=True),
         "spline+rotvec": FeatureSpec(base_velocity=1.0, across_keys=True, spline_keys=True, rotation_curve="rotvec"),
         "interp": FeatureSpec(key_velocity=False)}


@pytest.mark.parametrize("skeleton", ["hand", "body"])
@pytest.mark.parametrize("spec", SPECS)
def test_a_batch_updated_column_by_column_equals_the_batch_made_anew(skeleton, spec):
    """The sampler's inputs after each draw (only the drawn joints' columns recomputed, and the moving joints'
    positions when a drawn joint carries one) are the inputs computed from scratch, bit for bit."""
    schema, spec = get_schema(skeleton), SPECS[spec].for_skeleton(skeleton)
    rot, trans, times = synthetic(skeleton, n=2, t=12, seed=3)
    rng = np.random.default_rng(5)
    known = rng.random(rot.shape[:3]) < 0.35
    known[:, 0] = True
    given = known.copy()
    canon = canonical_from_known(rot, trans, known, schema, spec.frame)
    rc, tc = to_canonical(rot, trans, canon, schema)
    draw_rot, draw_trans = to_canonical(*synthetic(skeleton, n=2, t=12, seed=4)[:2], canon, schema)
    batch = canonical_batch(rc, tc, times, known, ~known, schema, spec, given)
    chain = moving_chain(schema)
    steps = [[chain[-1]], [schema.n_joints - 1], [2, 5], [chain[0], 3]]  # moving joints' chain drawn too
    for joints in steps:
        cells = (~known)[:, :, joints]
        f = np.argmax(cells.any(axis=(0, 2)))  # the first frame with one of these joints unknown
        for j in joints:
            rc[:, f, j] = draw_rot[:, f, j]
            if j in schema.moving:  # the sampler draws moving joints' translations; bone offsets stay
                tc[:, f, j] = draw_trans[:, f, j]
            known[:, f, j] = True
        update_batch(batch, rc, tc, times, known, ~known, schema, spec, given, joints)
        fresh = canonical_batch(rc, tc, times, known, ~known, schema, spec, given)
        assert batch.keys() == fresh.keys()
        for key in fresh:
            assert np.array_equal(batch[key], fresh[key]), (joints, key)


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_temperature_zero_in_one_step_is_the_deterministic_fill(skeleton):
    model = tiny(skeleton)
    rot, trans, known, times = _window(skeleton)
    det = fill_engine.fill(model, rot[None], trans[None], known[None], times[None])
    (s,) = sampling.sample(model, rot, trans, known, times, k=known.size, temperature=0.0)
    assert np.allclose(np.abs(np.sum(s.rotations * det.rotations[0], -1)), 1.0, atol=1e-5)
    assert np.allclose(s.translations, det.translations[0], atol=1e-5)


def assert_variations(a, b, rot, trans, known) -> None:
    """Two runs ``a``, ``b`` of one seed: the same draws; known cells as given (rotations as unit quaternions);
    every value finite; no entropy on known cells, a spread on every target; the variations differ."""
    unit = rot / np.linalg.norm(rot, axis=-1, keepdims=True)
    for x, y in zip(a, b, strict=True):
        assert np.array_equal(x.rotations, y.rotations) and np.array_equal(x.translations, y.translations)
        assert np.array_equal(x.rotations[known], unit[known]) and np.array_equal(x.translations[known], trans[known])
        assert np.isfinite(x.rotations).all() and np.isfinite(x.translations).all()
        assert (x.entropy[known] == 0).all() and (x.spread_deg[~known] > 0).all()
    assert not np.allclose(a[0].rotations, a[1].rotations)


@pytest.mark.parametrize("order, refresh", [(o, None) for o in sampling.ORDERS] + [("lowest-entropy", 1)])
def test_k1_draws_every_target_once_keeps_known_cells_and_reproduces(order, refresh):
    model = tiny("body")
    rot, trans, known, times = _window("body", t=7, gap=2)
    known[4, :15] = True  # a partially keyed frame in the gap
    log: list = []
    a = sampling.sample(model, rot, trans, known, times, order=order, k=1, n=3, seed=4, refresh=refresh,
                           visit_log=log)
    b = sampling.sample(model, rot, trans, known, times, order=order, k=1, n=3, seed=4, refresh=refresh)
    expected = sorted(map(tuple, np.argwhere(~known)))
    for visits in log:
        assert len(visits) == len(expected) and sorted(visits) == expected
    assert_variations(a, b, rot, trans, known)


def test_forward_order_visits_cells_in_time_then_joint_order():
    model = tiny("hand")
    rot, trans, known, times = _window("hand")
    log: list = []
    sampling.sample(model, rot, trans, known, times, order="forward", k=5, n=2, visit_log=log)
    assert log[0] == sorted(log[0]) == log[1]


def test_root_draws_are_capped_however_wide_the_spread():
    model = tiny("body")
    with torch.no_grad():  # a spread head that says the root may be anywhere (log sigma at its clamp)
        model.spread[-1].bias[model.cfg.n_joints:] = 50.0
    rot, trans, known, times = _window("body")
    det = fill_engine.fill(model, rot[None], trans[None], known[None], times[None])
    hips = get_schema("body").root
    model.sampling = sampling.SamplingCalibration(pos_cap=(0.5, 2.0))
    out = sampling.sample(model, rot, trans, known, times, k=known.size, temperature=1.0, n=4, seed=1)

    def hips_move(s):  # how far the Hips' world position is from the fill's
        return np.linalg.norm(forward_kinematics(s.rotations, s.translations, parents)[1][:, hips] - det_hips, axis=-1)

    parents = get_schema("body").parents
    det_hips = forward_kinematics(det.rotations[0], det.translations[0], parents)[1][:, hips]
    for s in out:  # one step: every draw is around the deterministic fill, at most the cap away
        assert 0.1 < hips_move(s).max() <= 2.0 + 1e-6
    model.sampling = None
    wild = sampling.sample(model, rot, trans, known, times, k=known.size, temperature=1.0, n=1, seed=1)[0]
    assert hips_move(wild).max() > 10.0


def test_calibrated_spreads_scale_each_joints_draws():
    model = tiny("hand")
    rot, trans, known, times = _window("hand")
    det = fill_engine.fill(model, rot[None], trans[None], known[None], times[None])
    from training.motion.rotations import quat_angle

    def spread(cal):
        model.sampling = cal
        out = sampling.sample(model, rot, trans, known, times, k=known.size, n=8, seed=2)
        return np.mean([quat_angle(s.rotations, det.rotations[0])[~known].reshape(-1, 17) for s in out], axis=(0, 1))

    scale = np.ones(17)
    scale[3] = 0.1
    narrow = spread(sampling.SamplingCalibration(rot_scale=tuple(scale)))
    wide = spread(sampling.SamplingCalibration())
    assert narrow[3] < 0.3 * wide[3] and np.allclose(narrow[5], wide[5], rtol=0.5)
    half = spread(sampling.SamplingCalibration(temperature=0.5))  # the calibrated default temperature
    assert half.mean() < 0.7 * wide.mean()
    model.sampling = None


def test_the_card_carries_the_sampling_calibration(tmp_path):
    model = tiny("hand")
    path = save_model(model, tmp_path / "m.safetensors")
    assert load_model(path)[0].sampling is None
    card = read_card(path)
    card["sampling"] = {"rot_scale": [0.5] * 17, "pos_scale": [[1.0, 2.0, 3.0]], "pos_cap": [0.25],
                        "temperature": 0.3, "command": "anyfill bench calibrate-sampling --model m --write"}
    write_card(path, card)
    cal = load_model(path)[0].sampling
    assert cal == dataclasses.replace(sampling.SamplingCalibration(), rot_scale=(0.5,) * 17,
                                      pos_scale=((1.0, 2.0, 3.0),), pos_cap=(0.25,), temperature=0.3)
    assert card_path(path).is_file()


def test_spread_calibration_undoes_a_spread_too_narrow(monkeypatch):
    from training.bench import calibrate_sampling

    model = tiny("hand")

    def windows(skeleton, split, gap, n, root=None):
        assert split == "val"  # calibration never reads the test split
        rot, trans, times = synthetic(skeleton, n=3, t=10 + gap + 1, seed=gap)
        known = inbetween_mask(3, 10 + gap + 1, 17, ctx=10, gap=gap)
        return rot, trans, known, times

    monkeypatch.setattr(calibrate_sampling, "sampling_windows", windows)
    cal, fit = calibrate_sampling.fit_spreads(model, "hand", windows=3)
    model.cfg = dataclasses.replace(model.cfg, kappa_offset=model.cfg.kappa_offset + 2 * np.log(2.0))  # spread / 2
    narrow, _ = calibrate_sampling.fit_spreads(model, "hand", windows=3)
    assert len(cal.rot_scale) == 17 and np.all(np.isfinite(cal.rot_scale)) and min(cal.rot_scale) > 0
    assert np.allclose(np.array(narrow.rot_scale) / np.array(cal.rot_scale), 2.0, rtol=0.02)
    assert np.allclose(narrow.pos_scale, cal.pos_scale) and cal.pos_cap[0] > 0
    assert len(fit["rot_rms_error_deg"]) == 17


def test_a_calibration_for_another_skeleton_is_refused(tmp_path):
    from training.inbetween.checkpoint import CheckpointError

    path = save_model(tiny("hand"), tmp_path / "m.safetensors")
    card = read_card(path)
    card["sampling"] = {"rot_scale": [1.0] * 22, "temperature": 0.2}  # the body's joints
    write_card(path, card)
    with pytest.raises(CheckpointError, match="sampling calibration"):
        load_model(path)


def _long_shot(skeleton="body", t=150):
    """A shot longer than the model's window: whole poses every 8 frames, but for 80 frames in the middle only
    some joints keyed (a stretch no cut can shorten, drawn by overlapping windows)."""
    rot, trans, times = synthetic(skeleton, n=1, t=t, seed=3)
    known = np.zeros((t, get_schema(skeleton).n_joints), dtype=bool)
    known[::8] = True
    known[40:120, :4] = False
    known[-1] = True
    return rot[0], trans[0], known, times[0]


def _largest_step(rot: np.ndarray) -> float:
    """The largest frame-to-frame turn of any joint (degrees)."""
    dot = np.abs(np.sum(rot[1:] * rot[:-1], -1)).clip(0.0, 1.0)
    return float(np.degrees(2 * np.arccos(dot)).max())


def test_a_shot_longer_than_the_window_is_sampled_window_by_window():
    model = tiny("body")
    rot, trans, known, times = _long_shot()
    assert len(times) > fill_engine.model_length(model) and len(fill_engine.pieces(known, 65)) > 1
    k = model.cfg.n_joints
    log, ticks = [], []
    a = sampling.sample(model, rot, trans, known, times, k=k, n=2, seed=1, visit_log=log,
                           progress=lambda d, t: ticks.append((d, t)))
    b = sampling.sample(model, rot, trans, known, times, k=k, n=2, seed=1)
    expected = sorted(map(tuple, np.argwhere(~known)))
    assert sorted(log[0]) == expected and ticks[-1] == (len(expected), len(expected))
    assert_variations(a, b, rot, trans, known)


@pytest.mark.data
@pytest.mark.slow
def test_a_long_shot_at_temperature_zero_is_a_fill_without_a_seam(data_root):
    """The shipped body on 150 frames of a test clip keyed as an animator might (whole poses every 8 frames, the
    arms and legs only for 80 frames in the middle), and on 121 frames of it played at 60 fps keyed every 30
    (drawn on a 40 fps grid of 81 frames, never cut): window by window at temperature 0 every variation is the
    engine's own fill of the shot (each window draws the frames the fill's window commits, asking the network
    for the same targets; they differed by 0.03 deg on average, and on the 60 fps shot a toe by 4 cm in Blender,
    cut into pieces where the fill's grid is not), so no seam either."""
    from training.bench.inbetween import load_protocol_clips
    from training.motion.splits import split_files

    model, _ = load_model("body")
    schema = get_schema("body")
    clip = load_protocol_clips(split_files("body", "test", data_root)[:1], schema)[0]
    rot, trans, times = clip.rotations[:150], clip.translations[:150], np.arange(150) / clip.fps
    known = np.zeros((150, schema.n_joints), dtype=bool)
    known[::8] = True
    known[40:120, :6] = False
    known[-1] = True
    det = fill_engine.fill(model, rot[None], trans[None], known[None], times[None])
    zs = sampling.sample(model, rot, trans, known, times, k=schema.n_joints, n=2, temperature=0.0)
    assert np.array_equal(zs[0].rotations, zs[1].rotations)
    assert quat_angle(zs[0].rotations, det.rotations[0]).max() < 1e-6  # radians: float rounding
    assert np.abs(zs[0].translations - det.translations[0]).max() < 1e-5  # cm: float32 rounding
    rot, trans, times = clip.rotations[:121], clip.translations[:121], np.arange(121) / 60.0
    known = np.zeros((121, schema.n_joints), dtype=bool)
    known[::30] = True
    det = fill_engine.fill_at_rate(model, rot[None], trans[None], known[None], times[None], (24.0, 40.0))
    zs = sampling.sample_at_rate(model, rot, trans, known, times, (24.0, 40.0), k=1, n=1, temperature=0.0)
    assert quat_angle(zs[0].rotations, det.rotations[0]).max() < 1e-6


def test_variations_of_a_60_fps_window_are_drawn_at_a_trained_rate():
    model = tiny("hand")
    rot, trans, times = synthetic("hand", n=1, t=61, seed=5)
    rot, trans, times = rot[0], trans[0], np.arange(61) / 60.0
    known = np.zeros(rot.shape[:2], dtype=bool)
    known[::12] = True
    log: list = []
    res = sampling.sample_at_rate(model, rot, trans, known, times, (24.0, 40.0), k=17, n=2, seed=0,
                                     visit_log=log)
    unit = rot / np.linalg.norm(rot, axis=-1, keepdims=True)
    for r in res:
        assert r.resampled == (pytest.approx(60.0), 40.0) and r.rotations.shape == rot.shape
        assert np.allclose(r.rotations[known], unit[known], atol=1e-12) and np.isfinite(r.rotations).all()
    assert max(f for f, _ in log[0]) == 39  # drawn on a 40 fps grid: 41 frames over the 1 s window, the last a key
    assert not np.allclose(res[0].rotations, res[1].rotations)
    # at a trained rate it is sample() itself
    slow = np.arange(61) / 30.0
    a = sampling.sample_at_rate(model, rot, trans, known, slow, (24.0, 40.0), k=17, n=2, seed=0)
    b = sampling.sample(model, rot, trans, known, slow, k=17, n=2, seed=0)
    assert all(np.array_equal(x.rotations, y.rotations) and x.resampled is None for x, y in zip(a, b, strict=True))
