"""The any-order motion model and the fill engine: conditioning, no leakage, orders, seeds, cache, files.

Uses tiny untrained models (fast); an untrained model's head is zero, so its fill is exactly the
known-cells interpolation, which also checks the geometry of the whole pipeline (canonical frame, 6D,
moving-joint translations, long-window stitching).
"""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from training.inbetween import fill as fill_engine
from training.inbetween import sampling
from training.inbetween.baselines import interpolate_cells
from training.inbetween.checkpoint import CheckpointError, card_path, load_model, save_model
from training.inbetween.config import AnyOrderTrainConfig
from training.inbetween.datasets import MaskMix, make_batch, sample_masks
from training.inbetween.features import FeatureSpec
from training.inbetween.task import build_model, frame_order
from training.motion.rotations import quat_align, quat_angle, quat_mul
from training.motion.skeleton import get_schema

torch.set_num_threads(1)


def tiny(skeleton="hand", variant="query", seed=0, randomise=True):
    torch.manual_seed(seed)
    m = build_model(AnyOrderTrainConfig(skeleton=skeleton, variant=variant, d_model=32, n_heads=2,
                                        n_enc_layers=1, n_dec_layers=2, dropout=0.0))
    if randomise:  # a non-zero head, so outputs depend on the inputs
        torch.nn.init.normal_(m.out.weight, std=0.05)
    return m.eval()


def synthetic(skeleton="hand", n=2, t=40, seed=0):
    """Smooth random motion of a schema: local rotations (N,T,J,4), translations (N,T,J,3)."""
    schema = get_schema(skeleton)
    rng = np.random.default_rng(seed)
    j = schema.n_joints
    from training.motion.rotations import axis_angle_to_quat

    phase = rng.uniform(0, 2 * np.pi, size=(n, 1, j, 3))
    amp = rng.uniform(0.1, 0.8, size=(n, 1, j, 3))
    tt = np.arange(t)[None, :, None, None] / 30.0
    rot = axis_angle_to_quat(amp * np.sin(2 * np.pi * 0.7 * tt + phase))
    trans = np.broadcast_to(rng.normal(size=(n, 1, j, 3)), (n, t, j, 3)).copy()
    for m in schema.moving:
        trans[:, :, m] = rng.normal(size=(n, 1, 3)) + np.cumsum(rng.normal(scale=0.02, size=(n, t, 3)), axis=1)
    return rot, trans, np.broadcast_to(np.arange(t) / 30.0, (n, t)).copy()


def inbetween_mask(n, t, j, ctx=10, gap=15):
    known = np.zeros((n, t, j), dtype=bool)
    known[:, :ctx] = True
    known[:, ctx + gap :] = True
    return known


@pytest.mark.parametrize("frames", [40, 150])
def test_known_rotations_come_back_normalised_in_windows_and_long_shots(frames):
    """Known rotations come back divided by their norms whatever the shot's length (a long shot, filled window by
    window, gave them back as given: a quaternion of norm 2 stayed so); a known zero rotation is refused in both."""
    model = tiny("hand")
    rot, trans, times = synthetic("hand", n=1, t=frames)
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[:, ::10] = True
    known[:, -1] = True
    scaled = rot * np.where(known, 2.0, 1.0)[..., None]
    r = fill_engine.fill(model, scaled, trans, known, times)
    want = scaled[known] / np.linalg.norm(scaled[known], axis=-1, keepdims=True)
    assert np.array_equal(r.rotations[known], want)
    scaled[0, 10] = 0.0
    with pytest.raises(ValueError, match="a known rotation is a zero quaternion"):
        fill_engine.fill(model, scaled, trans, known, times)


@pytest.mark.parametrize("variant", ["query", "triples"])
@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_known_cells_come_back_unchanged(skeleton, variant):
    model = tiny(skeleton, variant)
    rot, trans, times = synthetic(skeleton)
    known = inbetween_mask(*rot.shape[:3])
    known[:, 20, :5] = True  # a partially keyed frame inside the gap
    r = fill_engine.fill(model, rot, trans, known, times)
    assert np.array_equal(r.rotations[known], rot[known] / np.linalg.norm(rot[known], axis=-1, keepdims=True))
    assert np.array_equal(r.translations[known], trans[known])
    assert np.isfinite(r.rotations).all() and np.isfinite(r.translations).all()
    assert (r.entropy[known] == 0).all() and (r.spread_deg[~known] > 0).all()


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_untrained_model_fills_like_interpolation_even_across_long_windows(skeleton):
    model = tiny(skeleton, randomise=False)
    rot, trans, times = synthetic(skeleton, n=1, t=150)
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[:, [0, 1, 2, 40, 41, 90, 149]] = True
    known[:, 120, :3] = True
    r = fill_engine.fill(model, rot, trans, known, times)
    base_rot, base_trans, _ = interpolate_cells(rot, trans, known)
    assert np.abs(quat_align(r.rotations, base_rot) - base_rot).max() < 1e-5
    moving = list(get_schema(skeleton).moving)
    assert np.abs(r.translations[:, :, moving] - base_trans[:, :, moving]).max() < 1e-4


def test_hand_fill_turns_with_the_hand():
    """Hand models work in the wrist's own frame: turning and moving the whole recording turns and moves
    the fill the same way, and leaves every finger's local rotation as it was."""
    from training.motion.rotations import axis_angle_to_quat, quat_apply, quat_mul

    model = tiny("hand")
    assert model.cfg.features.frame == "root"
    rot, trans, times = synthetic("hand", n=2, t=40)
    known = inbetween_mask(*rot.shape[:3])
    turn = axis_angle_to_quat(np.array([0.3, -1.9, 0.8]))
    rot2, trans2 = rot.copy(), trans.copy()
    rot2[:, :, 0] = quat_mul(turn, rot[:, :, 0])
    trans2[:, :, 0] = quat_apply(turn, trans[:, :, 0]) + np.array([4.0, -2.0, 1.0])
    a = fill_engine.fill(model, rot, trans, known, times)
    b = fill_engine.fill(model, rot2, trans2, known, times)
    assert np.abs(quat_align(b.rotations[:, :, 1:], a.rotations[:, :, 1:]) - a.rotations[:, :, 1:]).max() < 1e-4
    wrist = quat_mul(turn, a.rotations[:, :, 0])
    assert np.abs(quat_align(b.rotations[:, :, 0], wrist) - wrist).max() < 1e-4
    moved = quat_apply(turn, a.translations[:, :, 0]) + np.array([4.0, -2.0, 1.0])
    assert np.abs(b.translations[:, :, 0] - moved).max() < 1e-4
    # the property is the frame's doing: the same network in the old unturned hand frame does not have it
    model.cfg.features = dataclasses.replace(model.cfg.features, frame="yaw")
    c = fill_engine.fill(model, rot2, trans2, known, times)
    assert np.abs(quat_align(c.rotations[:, :, 1:], a.rotations[:, :, 1:]) - a.rotations[:, :, 1:]).max() > 1e-3


def test_canonical_frame_is_checked():
    with pytest.raises(ValueError, match="frame must be one of"):
        build_model(AnyOrderTrainConfig(skeleton="hand", features=FeatureSpec(frame="world")))


@pytest.mark.parametrize("variant", ["query", "triples"])
def test_target_values_never_reach_the_prediction(variant):
    """Change the ground truth of target cells: the model's inputs and outputs stay the same."""
    schema = get_schema("hand")
    model = tiny("hand", variant)
    rng = np.random.default_rng(3)
    rot, trans, _ = synthetic("hand", n=4, t=65)
    known, target = sample_masks(rng, 4, 65, schema.n_joints, MaskMix())
    rot2, trans2 = rot.copy(), trans.copy()
    rot2[target] = np.roll(rot2[target], 1, axis=-1)
    trans2[target] += 5.0
    b1 = make_batch(rot, trans, np.full(4, 30.0), known, target, schema, model.cfg.features)
    b2 = make_batch(rot2, trans2, np.full(4, 30.0), known, target, schema, model.cfg.features)
    order = frame_order(rng, known, target)
    t1 = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b1.items()} | {"order": torch.from_numpy(order)}
    t2 = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b2.items()} | {"order": torch.from_numpy(order)}
    with torch.no_grad():
        o1, o2 = model(t1), model(t2)
    if variant == "query":
        for k in o1:
            assert torch.allclose(o1[k], o2[k]), k
    else:
        # teacher forcing feeds generated frames back: the frame at step i only sees frames before it
        for i in range(4):
            first_target_step = int(np.argmax(b1["target"][i].any(-1)[order[i]]))
            f = order[i][first_target_step]
            assert torch.allclose(o1["rot6d"][i, f], o2["rot6d"][i, f])


@pytest.mark.parametrize("variant,k", [("query", 1), ("query", 4), ("triples", 1), ("triples", 2)])
@pytest.mark.parametrize("order", sampling.ORDERS)
def test_each_order_visits_every_target_once(variant, k, order):
    model = tiny("hand", variant)
    rot, trans, times = synthetic("hand", n=1, t=16)
    known = inbetween_mask(1, 16, 17, ctx=4, gap=5)
    known[0, 6, :10] = True
    log: list = []
    out = sampling.sample(model, rot[0], trans[0], known[0], times[0], order=order, k=k, n=2, seed=1,
                             visit_log=log)
    assert len(out) == 2 and len(log) == 2
    for visits in log:
        if variant == "query":
            expected = {tuple(c) for c in np.argwhere(~known[0])}
            assert len(visits) == len(expected) and set(visits) == expected
        else:
            expected = set(np.flatnonzero((~known[0]).any(-1)).tolist())
            assert len(visits) == len(expected) and set(visits) == expected
    if order == "forward" and variant == "query":
        assert log[0] == sorted(log[0])
    for r in out:
        assert np.array_equal(r.translations[known[0]], trans[0][known[0]])


def test_seeds_reproduce_samples_and_differ_between_seeds():
    model = tiny("hand")
    rot, trans, times = synthetic("hand", n=1, t=12)
    known = inbetween_mask(1, 12, 17, ctx=3, gap=6)[0]
    a = sampling.sample(model, rot[0], trans[0], known, times[0], order="random", k=8, seed=7, n=2)
    b = sampling.sample(model, rot[0], trans[0], known, times[0], order="random", k=8, seed=7, n=2)
    c = sampling.sample(model, rot[0], trans[0], known, times[0], order="random", k=8, seed=8, n=2)
    assert np.array_equal(a[0].rotations, b[0].rotations) and np.array_equal(a[1].translations, b[1].translations)
    assert not np.allclose(a[0].rotations, c[0].rotations)
    assert not np.allclose(a[0].rotations, a[1].rotations)  # variations differ from each other


def test_sampling_lower_temperature_stays_closer_to_the_mean():
    model = tiny("hand")
    rot, trans, times = synthetic("hand", n=1, t=12)
    known = inbetween_mask(1, 12, 17, ctx=3, gap=6)[0]
    mean = fill_engine.fill(model, rot, trans, known[None], times)
    from training.motion.rotations import quat_angle

    def dev(temp):
        s = sampling.sample(model, rot[0], trans[0], known, times[0], k=17, temperature=temp, seed=0, n=4)
        return np.mean([quat_angle(x.rotations, mean.rotations[0])[~known].mean() for x in s])

    assert dev(0.1) < dev(1.0)


def test_triples_cache_matches_the_uncached_model():
    model = tiny("hand", "triples")
    torch.manual_seed(0)
    x = torch.randn(2, 9, 32)
    with torch.no_grad():
        full, _ = model.core(x)
        cache, outs = None, []
        for i in range(9):
            h, cache = model.core(x[:, i : i + 1], cache=cache)
            outs.append(h)
        stepped = torch.cat(outs, dim=1)
        # candidates scored side by side see the cache and themselves only
        _, prefix = model.core(x[:, :5])
        side, _ = model.core(x[:, 5:9], cache=prefix, independent=True)
        one, _ = model.core(x[:, 7:8], cache=prefix)
    assert torch.allclose(full, stepped, atol=1e-5)
    assert torch.allclose(side[:, 2:3], one, atol=1e-5)


def test_query_core_drops_invalid_tokens_without_changing_outputs():
    """Known and query tokens that are not valid are cut before the passes (the speed of sampling);
    every valid query's output equals the full masked pass."""
    from training.inbetween.config import AnyOrderConfig
    from training.inbetween.transformer import QueryEncoderDecoder

    torch.manual_seed(0)
    core = QueryEncoderDecoder(AnyOrderConfig(d_model=32, n_heads=2, n_enc_layers=2, n_dec_layers=2, dropout=0.0))
    core.eval()
    b, t = 3, 12
    known_tok, query_tok = torch.randn(b, t, 32), torch.randn(b, t, 32)
    known_valid = torch.rand(b, t) < 0.4
    known_valid[:, 0] = True
    query_valid = ~known_valid
    query_valid[0, 1:] = False  # rows of different lengths: the short ones are padded
    with torch.no_grad():
        full = core.decode(query_tok, query_valid, core.encode(known_tok, known_valid), known_valid)
        cut = core(known_tok, known_valid, query_tok, query_valid)
    assert torch.allclose(cut[query_valid], full[query_valid], atol=1e-5)
    assert not torch.allclose(cut[query_valid], torch.zeros_like(cut[query_valid]))


def test_calibration_keeps_only_the_corrections_that_pay(tmp_path):
    """Noise corrections are shrunk (lower L2Q on the held-out batches, kept through a model file);
    an untrained model's zero corrections tie at every share and keep all of it."""
    from training.inbetween.calibrate import calibrate
    from training.inbetween.task import AnyOrderModule

    schema = get_schema("hand")
    rot, trans, _ = synthetic("hand", n=4, t=40, seed=5)
    known = inbetween_mask(4, 40, schema.n_joints, ctx=8, gap=20)
    torch.manual_seed(0)
    module = AnyOrderModule(AnyOrderTrainConfig(skeleton="hand", d_model=32, n_heads=2, n_enc_layers=1,
                                                n_dec_layers=1, dropout=0.0))
    b = make_batch(rot, trans, np.full(4, 30.0), known, ~known, schema, module.model.cfg.features)
    batch = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}
    untouched = calibrate(module, [batch])
    assert (untouched["rot_scale_top"], untouched["rot_scale_other"], untouched["pos_scale"]) == (1.0, 1.0, 1.0)
    torch.nn.init.normal_(module.model.out.weight, std=0.3)  # corrections that are noise
    offset = module.model.cfg.kappa_offset  # the first calibration re-fitted it already
    report = calibrate(module, [batch])
    assert report["rot_scale_top"] < 1.0 and report["rot_scale_other"] < 1.0
    assert report["val_calibrated"]["l2q"] < 0.8 * report["val_trained"]["l2q"]
    cfg = module.model.cfg
    assert cfg.rot_scale[0] == report["rot_scale_top"] and cfg.rot_scale[1] == report["rot_scale_other"]
    # the spreads are re-fitted to the calibrated means: the chosen shift is the best of the grid
    assert cfg.kappa_offset == offset + report["kappa_shift"]
    with torch.no_grad():
        fitted = float(module.losses(batch)["von_mises"])
        module.model.cfg = dataclasses.replace(cfg, kappa_offset=offset)
        unshifted = float(module.losses(batch)["von_mises"])
        module.model.cfg = cfg
    assert fitted == pytest.approx(report["val_calibrated"]["von_mises"]) and fitted <= unshifted
    save_model(module.model, tmp_path / "cal.safetensors")
    loaded, _ = load_model(tmp_path / "cal.safetensors")
    assert loaded.cfg == cfg
    with torch.no_grad():
        assert torch.allclose(loaded(batch)["rot6d"], module.model.eval()(batch)["rot6d"])



def _noise_corrections():
    """A small hand training module (eval mode) whose network's corrections are noise, seeded."""
    from training.inbetween.task import AnyOrderModule

    torch.manual_seed(0)
    module = AnyOrderModule(AnyOrderTrainConfig(skeleton="hand", d_model=32, n_heads=2, n_enc_layers=1,
                                                n_dec_layers=1, dropout=0.0))
    module.model.eval()
    torch.nn.init.normal_(module.model.out.weight, std=0.3)
    return module


def test_motion_gate_keeps_the_curve_on_still_keys_and_calibration_finds_it(tmp_path):
    """With the motion gate a keyed joint's curve is left alone where its keys do not move (a correction
    there is noise) and corrected where they do; a joint with no key keeps the network's prediction. On
    still motion with noise corrections, calibration picks a gate, which takes L2Q back to the curve's."""
    from training.inbetween.calibrate import calibrate
    from training.inbetween.config import MotionConfig

    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="motion_gate"):
            MotionConfig(motion_gate=bad)
    schema = get_schema("hand")
    rot, trans, _ = synthetic("hand", n=4, t=40, seed=5)
    still_rot, still_trans = np.repeat(rot[:, :1], 40, axis=1), np.repeat(trans[:, :1], 40, axis=1)
    known = inbetween_mask(4, 40, schema.n_joints, ctx=8, gap=20)
    known[0, :, 5:8] = False  # window 0: the index finger has no key at all
    module = _noise_corrections()
    model = module.model

    def batch(r, t):
        b = make_batch(r, t, np.full(4, 30.0), known, ~known, schema, model.cfg.features)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}

    still, moving = batch(still_rot, still_trans), batch(rot, trans)
    trained = model.cfg
    with torch.no_grad():
        free = model(still)["rot6d"]
        model.cfg = dataclasses.replace(trained, motion_gate=0.1)
        gated, gated_moving = model(still)["rot6d"], model(moving)["rot6d"]
        model.cfg = trained
        free_moving = model(moving)["rot6d"]
    gap = slice(8, 28)
    assert torch.allclose(gated[:, gap][1:], still["base6d"][:, gap][1:], atol=1e-5)  # the curve, to float error
    assert not torch.allclose(free[:, gap], still["base6d"][:, gap], atol=1e-2)  # the noise it removed
    assert torch.equal(gated[0, gap, 5:8], free[0, gap, 5:8])  # no key: all the network's
    moved = (gated_moving[:, gap] - moving["base6d"][:, gap]).norm(dim=-1)
    assert moved.mean() > 0.5 * (free_moving[:, gap] - moving["base6d"][:, gap]).norm(dim=-1).mean()
    report = calibrate(module, [still])
    assert report["motion_gate"] > 0 and model.cfg.motion_gate == report["motion_gate"]
    with torch.no_grad():
        model.cfg = dataclasses.replace(trained, rot_scale=(0.0,) * schema.n_joints, pos_scale=0.0)
        curve = float(module.losses(still)["l2q"])
    assert report["val_calibrated"]["l2q"] == pytest.approx(curve, rel=1e-3)
    assert curve < report["val_trained"]["l2q"]


def test_gap_gate_leaves_short_gaps_to_the_curve_and_calibration_finds_it():
    """``gap_time`` is the length of the gap a cell lies in (large outside its joint's keys). With gap gates, a
    correction in a one-frame gap nearly vanishes while one in a long gap stays; a joint with no key keeps the
    network's prediction. On keys every other frame with noise corrections, calibration picks both gates,
    and the keyed windows' error comes back near the curve's."""
    from training.inbetween.baselines import NO_KEY_TIME, gap_time
    from training.inbetween.calibrate import calibrate
    from training.inbetween.config import MotionConfig

    known = np.zeros((1, 12, 2), dtype=bool)
    known[0, [2, 4, 10], 0] = True
    g = gap_time(known, np.arange(12)[None] / 30.0)
    assert np.allclose(g[0, 3, 0], 2 / 30) and np.allclose(g[0, 5:10, 0], 6 / 30) and g[0, 2, 0] == 0
    assert (g[0, [0, 1, 11], 0] == NO_KEY_TIME).all() and (g[0, :, 1] == NO_KEY_TIME).all()
    with pytest.raises(ValueError, match="gap_gate_pos"):
        MotionConfig(gap_gate_pos=-0.1)

    schema = get_schema("hand")
    rot, trans, _ = synthetic("hand", n=4, t=40, seed=5)
    dense = np.zeros((4, 40, schema.n_joints), dtype=bool)
    dense[:, ::2] = True  # a key every other frame
    wide = inbetween_mask(4, 40, schema.n_joints, ctx=8, gap=20)
    wide[0, :, 5:8] = False  # window 0: the index finger has no key at all
    module = _noise_corrections()
    model = module.model

    def batch(known):
        b = make_batch(rot, trans, np.full(4, 30.0), known, ~known, schema, model.cfg.features)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}

    short, long = batch(dense), batch(wide)
    trained = model.cfg
    with torch.no_grad():
        free_s, free_l = model(short), model(long)
        model.cfg = dataclasses.replace(trained, gap_gate_rot=0.2, gap_gate_pos=0.2)
        gated_s, gated_l = model(short), model(long)
        model.cfg = trained

    def moved(out, b):  # how far the fill is from the curve in the cells between two keys
        return (out["rot6d"] - b["base6d"]).norm(dim=-1)[b["target"] & (b["gap_time"] < 1.0)].mean()

    assert moved(gated_s, short) < 0.15 * moved(free_s, short)  # gaps of 2/30 s: 1 - exp(-(1/3)^2) of it
    assert moved(gated_l, long) > 0.9 * moved(free_l, long)  # a 0.7 s gap keeps nearly all of it
    assert torch.equal(gated_l["rot6d"][0, 8:28, 5:8], free_l["rot6d"][0, 8:28, 5:8])  # no key: the network's
    report = calibrate(module, [long], keyed=[short])
    assert report["gap_gate_rot"] > 0 and report["gap_gate_pos"] > 0
    assert (model.cfg.gap_gate_rot, model.cfg.gap_gate_pos) == (report["gap_gate_rot"], report["gap_gate_pos"])
    with torch.no_grad():
        out = model(short)
        fill, curve = module.window_errors(short, out["rot6d"], out["pos"]), module.window_errors(
            short, short["base6d"], short["basepos"])
        free = module.window_errors(short, free_s["rot6d"], free_s["pos"])
    assert (fill < 1.1 * curve).all() and (free > 1.5 * curve).all()

    # windows the curve fills exactly (a still hand, keyed): nothing to correct, they do not choose the gates
    still_rot, still_trans = np.repeat(rot[:, :1], 40, axis=1), np.repeat(trans[:, :1], 40, axis=1)
    b = make_batch(still_rot, still_trans, np.full(4, 30.0), dense, ~dense, schema, trained.features)
    still = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}
    with torch.no_grad():
        assert (module.window_errors(still, still["base6d"], still["basepos"]) == 0).all()
    model.cfg = trained
    with_still = calibrate(module, [long], keyed=[short, still])
    for gates in ("keyed_log_error_ratio_by_gap_gate_rot", "keyed_log_error_ratio_by_gap_gate_pos"):
        assert with_still[gates] == pytest.approx(report[gates], rel=1e-5)


def test_relative_floor_weighs_windows_by_how_far_their_curve_is_off():
    """With ``relative_floor`` the fitting terms of a training batch weigh each window by 1 / (its curve's
    error + floor x the batch mean): windows where the curve is exact (still motion) count most, the mean
    weight is 1, identical windows weigh alike, the spreads' likelihoods are untouched, and with no floor
    (or outside training) every cell counts alike as before."""
    from training.inbetween.task import AnyOrderModule, _build

    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="relative_floor"):
            _build(AnyOrderTrainConfig(skeleton="body", relative_floor=bad))
    schema = get_schema("body")
    rot, trans, _ = synthetic("body", n=4, t=30, seed=3)
    rot[:2], trans[:2] = np.repeat(rot[:2, :1], 30, axis=1), np.repeat(trans[:2, :1], 30, axis=1)  # 0, 1: still
    known = inbetween_mask(4, 30, schema.n_joints, ctx=6, gap=16)

    def module(floor):
        torch.manual_seed(0)
        m = AnyOrderModule(AnyOrderTrainConfig(skeleton="body", d_model=32, n_heads=2, n_enc_layers=1,
                                               n_dec_layers=1, dropout=0.0, relative_floor=floor))
        torch.nn.init.normal_(m.model.out.weight, std=0.05)
        return m

    def batch(r, t):
        b = make_batch(r, t, np.full(len(r), 30.0), known[: len(r)], ~known[: len(r)], schema,
                       module(0.0).model.cfg.features)
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}

    b = batch(rot, trans)
    captured = {}
    m = module(0.5)
    original = m.window_weights
    m.window_weights = lambda *a: captured.setdefault("w", original(*a))
    with torch.no_grad():
        weighted, plain = m.losses(b, weighted=True), m.losses(b)
    w = captured["w"]
    assert w.mean() == pytest.approx(1.0) and w[0] == pytest.approx(w[1])
    assert float(w[:2].min()) > 1.5 * float(w[2:].max())  # the exact curve weighs most
    for k in ("von_mises", "pos_nll", "angle_deg"):  # spreads and the report are unweighted
        assert float(weighted[k]) == pytest.approx(float(plain[k]))
    assert float(weighted["fk"]) != pytest.approx(float(plain["fk"]))
    with torch.no_grad():  # no floor: the weighted call is the plain one
        assert all(torch.equal(v, module(0.0).losses(b)[k]) for k, v in module(0.0).losses(b, weighted=True).items())
    same = batch(np.repeat(rot[2:3], 4, axis=0), np.repeat(trans[2:3], 4, axis=0))
    with torch.no_grad():
        a, c = m.losses(same, weighted=True), m.losses(same)
    assert float(a["loss"]) == pytest.approx(float(c["loss"]), rel=1e-5)


def test_checkpoint_round_trip_and_bad_files(tmp_path):
    model = tiny("body")
    path = save_model(model, tmp_path / "body.safetensors", training={"command": "test"})
    loaded, card = load_model(path)
    assert card["schema"]["joints"][1] == "Hips" and card["training"]["command"] == "test"
    rot, trans, times = synthetic("body", n=1, t=30)
    known = inbetween_mask(1, 30, 22, ctx=5, gap=10)
    a = fill_engine.fill(model, rot, trans, known, times)
    b = fill_engine.fill(loaded, rot, trans, known, times)
    assert np.array_equal(a.rotations, b.rotations)

    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:100])
    card_path(corrupt).write_text(card_path(path).read_text())
    with pytest.raises(CheckpointError, match="corrupt"):
        load_model(corrupt)
    with pytest.raises(CheckpointError, match="no such model file"):
        load_model(tmp_path / "nowhere" / "x.safetensors")
    lonely = tmp_path / "lonely.safetensors"
    lonely.write_bytes(path.read_bytes())
    with pytest.raises(CheckpointError, match="card"):
        load_model(lonely)
    wrong = tmp_path / "wrong.safetensors"
    wrong.write_bytes(path.read_bytes())
    c = __import__("json").loads(card_path(path).read_text())
    c["config"]["core"]["d_model"] = 64
    card_path(wrong).write_text(__import__("json").dumps(c))
    with pytest.raises(CheckpointError, match="do not match"):
        load_model(wrong)
    c["config"]["core"]["d_model"] = 32
    c["config"]["rot_scale"] = [0.5, 1.0]  # a calibration for another skeleton
    card_path(wrong).write_text(__import__("json").dumps(c))
    with pytest.raises(CheckpointError, match="rot_scale has 2 entries"):
        load_model(wrong)


def test_fill_refuses_windows_without_keys_and_bad_orders():
    model = tiny("hand")
    rot, trans, times = synthetic("hand", n=1, t=10)
    with pytest.raises(ValueError, match="known cell"):
        fill_engine.fill(model, rot, trans, np.zeros(rot.shape[:3], dtype=bool), times)
    known = inbetween_mask(1, 10, 17, ctx=2, gap=3)[0]
    with pytest.raises(ValueError, match="order"):
        sampling.sample(model, rot[0], trans[0], known, times[0], order="sideways")


def test_a_pose_keyed_twice_is_held_exactly():
    """Two consecutive keys of a joint that are one pose are a hold, as Blender's auto-clamped curves make them:
    the frames between are that pose, in fills and in every sampled variation, and certain (no spread); keys
    that differ (by more than HOLD_ANGLE, or a moving joint's position) are not a hold."""
    model = tiny("body")
    schema = get_schema("body")
    hips, spine, knee = (schema.joints.index(n) for n in ("Hips", "Spine", "LowerLeg_L"))
    rot, trans, times = synthetic("body", n=1, t=40)
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[:, ::10] = True
    known[:, -1] = True
    rot[0, 20, spine] = -rot[0, 10, spine]  # the same rotation (the other sign of its quaternion)
    rot[0, 20, hips], trans[0, 20, hips] = rot[0, 10, hips], trans[0, 10, hips]  # the root held where it stood
    turn = fill_engine.HOLD_ANGLE * 3
    rot[0, 20, knee] = quat_mul(rot[0, 10, knee], np.array([np.sin(turn / 2), 0.0, 0.0, np.cos(turn / 2)]))
    res = fill_engine.fill(model, rot, trans, known, times)
    held = slice(11, 20)
    assert np.degrees(quat_angle(res.rotations[0, held, spine], rot[0, 10, spine])).max() < 1e-5
    assert np.degrees(quat_angle(res.rotations[0, held, hips], rot[0, 10, hips])).max() < 1e-5
    assert np.abs(res.translations[0, held, hips] - trans[0, 10, hips]).max() < 1e-12
    assert (res.spread_deg[0, held, spine] == 0).all() and (res.entropy[0, held, hips] == 0).all()
    assert np.degrees(quat_angle(res.rotations[0, held, knee], rot[0, 10, knee])).max() > 1e-4  # not a hold
    assert (res.spread_deg[0, 21:30, spine] > 0).all()  # the next gap moves on
    moved = trans.copy()
    moved[0, 20, hips] += 0.01  # the root's rotation held but not its position: it moves
    res = fill_engine.fill(model, rot, moved, known, times)
    assert np.abs(res.translations[0, held, hips] - trans[0, 10, hips]).max() > 1e-4
    for v in sampling.sample(model, rot[0], trans[0], known[0], times[0], n=2, k=22, seed=1):
        assert np.degrees(quat_angle(v.rotations[held, spine], rot[0, 10, spine])).max() < 1e-5
    whole = np.broadcast_to(rot[:, :1], rot.shape).copy()  # one pose keyed at both ends: every variation holds it
    still = np.broadcast_to(trans[:, :1], trans.shape).copy()
    ends = known[0] & (np.arange(40) % 39 == 0)[:, None]
    # a frame's joints per step: the hold is found from the keys and applied to what is drawn, whatever the step (k=1
    # drew the 836 cells one by one: 2.2 of the test's 2.4 s)
    for v in sampling.sample(model, whole[0], still[0], ends, times[0], n=2, k=22):
        assert np.degrees(quat_angle(v.rotations, whole[0])).max() < 1e-5
        assert np.abs(v.translations - still[0]).max() == 0
    # joint_Root, above the root, places the figure in the model's frame: it is held only where the root is (the
    # model moves the two together; joint_Root held alone under a moving root would move the whole figure)
    top = schema.parents[schema.root]
    rot[0, 20, top], trans[0, 20, top] = rot[0, 10, top], trans[0, 10, top]
    res = fill_engine.fill(model, rot, moved, known, times)
    assert np.degrees(quat_angle(res.rotations[0, held, top], rot[0, 10, top])).max() > 1e-4


@pytest.mark.data
def test_the_shipped_body_holds_a_paused_walk(data_root):
    """A walk paused for 20 frames, keyed every 10: without holds the shipped body left the pose by up to 38 degrees
    and moved the hips 7 cm inside the pause; the frames around it are filled as before."""
    from training.inbetween.checkpoint import load_model
    from training.motion import clip as clip_io

    model, _ = load_model("body")
    clip = clip_io.load(data_root / "bandai/dataset-1/dataset-1_walk_angry_001.bvh", "body")
    frames = np.r_[np.arange(41), np.full(20, 40), np.arange(41, 100)]  # the pause: frame 40 for 20 more frames
    rot, trans = clip.rotations[None, frames], clip.translations[None, frames]
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[:, ::10] = True
    res = fill_engine.fill(model, rot, trans, known, (np.arange(len(frames)) / clip.fps)[None])
    assert np.degrees(quat_angle(res.rotations[0, 40:61], rot[0, 40:61])).max() < 1e-5  # arccos's precision
    assert np.abs(res.translations[0, 40:61] - trans[0, 40:61]).max() < 1e-9
    assert np.degrees(quat_angle(res.rotations[0, 31:40], rot[0, 31:40])).mean() < 10  # a fill, not a freeze


def test_one_corrupt_bone_offset_does_not_move_the_bone():
    """A bone offset (a non-moving joint's translation) is the rig, read from every frame given: one absurd frame
    (a corrupt file) must not move the bone on the filled frames, and a joint with no finite offset is refused."""
    model = tiny("body")
    rot, trans, times = synthetic("body", n=1, t=30)
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[:, ::10] = True
    clean = fill_engine.fill(model, rot, trans, known, times)
    spine = get_schema("body").joints.index("Spine")
    bad = trans.copy()
    bad[0, 3, spine] = 1e300  # a frame that is filled
    bad[0, 4, spine] = np.nan
    res = fill_engine.fill(model, rot, bad, known, times)
    filled = ~known[0, :, spine]
    assert np.allclose(res.translations[0, filled, spine], clean.translations[0, filled, spine], atol=1e-9)
    assert np.allclose(res.rotations, clean.rotations, atol=1e-6)
    bad[0, :, spine] = np.nan
    with pytest.raises(ValueError, match="no bone offset given for joint.*Spine"):
        fill_engine.fill(model, rot, bad, known, times)


def test_fill_names_the_argument_whose_shape_is_wrong():
    """A clip cut shorter than its key mask, or a mask of another skeleton, is refused by name before any work
    (it once surfaced as an IndexError deep in the long-shot loop)."""
    model = tiny("hand")
    rot, trans, times = synthetic("hand", n=1, t=200)
    known = np.zeros(rot.shape[:3], dtype=bool)
    known[:, ::10] = True
    with pytest.raises(ValueError, match=r"rotations has shape \(1, 120, 17, 4\)"):
        fill_engine.fill(model, rot[:, :120], trans, known, times)
    with pytest.raises(ValueError, match="translations has shape"):
        fill_engine.fill(model, rot, trans[:, :, :5], known, times)
    with pytest.raises(ValueError, match="times has shape"):
        fill_engine.fill_at_rate(model, rot, trans, known, times[:, :50], (24.0, 40.0))
    with pytest.raises(ValueError, match="known has 22 joints; the hand model has 17"):
        fill_engine.fill(model, rot, trans, np.zeros((1, 200, 22), dtype=bool), times)
    with pytest.raises(ValueError, match="rotations has shape"):
        sampling.sample(model, rot[0, :30], trans[0, :40], known[0, :40], times[0, :40])


def test_config_is_a_plain_dataclass():
    cfg = AnyOrderTrainConfig(skeleton="body")
    assert dataclasses.asdict(cfg)["skeleton"] == "body"


def test_likelihoods_train_only_the_spreads():
    """The von Mises and Gaussian likelihoods move the spread head alone; the means and the shared trunk
    learn from the angular and position terms (with the means inside the likelihoods, shrinking spreads
    drowned that signal and the model never left the interpolation baseline)."""
    from training.inbetween.task import AnyOrderModule

    cfg = AnyOrderTrainConfig(skeleton="body", d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1, dropout=0.0)
    module = AnyOrderModule(cfg)
    torch.nn.init.normal_(module.model.out.weight, std=0.05)
    rot, trans, times = synthetic("body", n=2, t=24)
    known = inbetween_mask(2, 24, 22, ctx=6, gap=12)
    b = make_batch(rot, trans, np.full(2, 30.0), known, ~known, get_schema("body"))
    ls = module.losses({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()})
    (ls["von_mises"] + ls["pos_nll"]).backward(retain_graph=True)
    spread = {id(p) for p in module.model.spread.parameters()}
    for name, p in module.model.named_parameters():
        moved = p.grad is not None and bool(p.grad.abs().sum() > 0)
        assert moved == (id(p) in spread), name
    module.zero_grad()
    (ls["angular"] + ls["fk"] + ls["pos_err"]).backward()
    assert module.model.out.weight.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in module.model.spread.parameters())


def test_key_velocities_carry_the_motion_from_each_key():
    """A joint moving at constant velocity: the displacement from its previous key is exact where the key's
    neighbour frame is known, zero (and unmeasured) where it is not unless ``across_keys`` takes the slope
    between the lone key's neighbouring keys, and never uses an unknown cell's value."""
    from training.inbetween.baselines import key_velocities

    t = 20
    times = np.arange(t)[None] / 30.0
    v = np.array([0.5, -1.0, 2.0])
    x = (np.array([1.0, 2.0, 3.0]) + times[0, :, None] * v)[None, :, None]  # (1, T, 1, 3)
    known = np.zeros((1, t, 1), dtype=bool)
    known[0, :5] = True  # context frames 0..4
    known[0, [12, 18]] = True  # lone keys: no known neighbour frame
    x_seen = np.where(known[..., None], x, 1e6)  # unknown cells hold garbage
    d, measured = key_velocities(x_seen, known, times)
    assert d.shape == (1, t, 1, 2, 3) and measured.shape == (1, t, 1, 2)
    for f in range(5, 12):
        assert np.allclose(d[0, f, 0, 0], v * (times[0, f] - times[0, 4])) and measured[0, f, 0, 0]
        assert np.allclose(d[0, f, 0, 1], 0.0) and not measured[0, f, 0, 1]
    assert np.allclose(d[0, :5], 0.0)  # known cells: nothing to carry
    assert np.allclose(d[0, 13:, 0, 0], 0.0) and not measured[0, 13:, 0, 0].any()  # lone keys: unknown velocity
    across, measured_across = key_velocities(x_seen, known, times, across_keys=True)
    assert np.allclose(across[:, :12, :, 0], d[:, :12, :, 0])  # measured velocities are kept
    assert (measured_across[:, :12, :, 0] == measured[:, :12, :, 0]).all()
    for f in range(13, 18):  # key 12 takes the slope from key 4 to key 18, and key 18 from 12 to nothing: none
        assert np.allclose(across[0, f, 0, 0], v * (times[0, f] - times[0, 12])) and measured_across[0, f, 0, 0]
        assert np.allclose(across[0, f, 0, 1], 0.0) and not measured_across[0, f, 0, 1]
    for f in range(5, 12):  # and key 12 is entered with that slope
        assert np.allclose(across[0, f, 0, 1], v * (times[0, f] - times[0, 12])) and measured_across[0, f, 0, 1]
    single, _ = key_velocities(x_seen[:, :1], known[:, :1], times[:, :1])  # a single pose (pose completion)
    assert single.shape == (1, 1, 1, 2, 3) and not single.any()


def test_only_given_cells_measure_key_velocities():
    """Any-order sampling marks drawn cells known but not given: a drawn cell measures no velocity and sets
    no tangent across keys, so its noise is not carried across the rest of the gap; given cells measure
    exactly as before."""
    from training.inbetween.baselines import key_velocities

    t = 20
    times = np.arange(t)[None] / 30.0
    known = np.zeros((1, t, 1), dtype=bool)
    known[0, [8, 9, 12, 13, 19]] = True  # context 8-9, drawn frames 12-13, a key at 19
    given = known.copy()
    given[0, [12, 13]] = False
    x = (np.arange(t) * 0.1)[None, :, None, None].repeat(2, axis=-1)
    x[0, 13] += 5.0  # a wild draw
    plain, m_plain = key_velocities(x, known, times, across_keys=True)
    only, m_only = key_velocities(x, known, times, across_keys=True, given=given)
    f = 16  # between the drawn frame 13 and the key 19
    assert m_plain[0, f, 0, 0] and np.abs(plain[0, f, 0, 0]).max() > 1.0  # the draws set frame 13's velocity
    assert not m_only[0, f, 0].any() and not only[0, f, 0].any()  # nor key 19's slope through them
    g = 10  # between the context key 9 and the drawn frame 12: key 9 leaves with the context's velocity
    assert m_only[0, g, 0, 0] and np.allclose(only[0, g, 0, 0], 3.0 * (times[0, g] - times[0, 9]))
    assert not m_only[0, g, 0, 1]
    same, m_same = key_velocities(x, known, times, across_keys=True, given=known)
    assert np.array_equal(same, plain) and np.array_equal(m_same, m_plain)


def test_clamped_keys_get_no_slope_where_they_turn():
    """``clamp``: a lone key that is an extreme between its neighbouring keys in a component gets a flat
    tangent in that component (Blender's auto-clamped handles); a component passing through keeps the
    Catmull-Rom slope."""
    from training.inbetween.baselines import key_velocities

    t = 21
    times = np.arange(t)[None] / 30.0
    known = np.zeros((1, t, 1), dtype=bool)
    known[0, [0, 10, 20]] = True
    x = np.full((1, t, 1, 2), 1e6)  # unknown cells hold garbage that must never be read
    x[0, [0, 10, 20], 0] = [[0.0, 0.0], [1.0, 1.0], [2.0, 0.5]]  # component 0 rises through key 10, 1 turns there
    free, _ = key_velocities(x, known, times, across_keys=True)
    clamped, measured = key_velocities(x, known, times, across_keys=True, clamp=True)
    slope = 2.0 / (20 / 30.0)
    f = 15  # between keys 10 and 20: the displacement from key 10's tangent
    assert np.allclose(free[0, f, 0, 0], [slope * 5 / 30.0, 0.5 / (20 / 30.0) * 5 / 30.0])
    assert np.allclose(clamped[0, f, 0, 0], [slope * 5 / 30.0, 0.0]) and measured[0, f, 0, 0]


def test_hermite_offsets_make_the_cubic_hermite_curve_through_the_keys():
    """Context frames measure the velocity leaving the last context key; the lone next key has none, so
    it keeps the secant slope: interpolation plus the offsets is scipy's cubic Hermite spline with those
    tangents (share 1), constant-velocity motion stays exact, and nothing is added outside the span."""
    from scipy.interpolate import CubicHermiteSpline

    from training.inbetween.baselines import hermite_offsets, key_velocities

    t = 30
    times = np.arange(t)[None] / 30.0
    known = np.zeros((1, t, 1), dtype=bool)
    known[0, :10] = True
    known[0, 22] = True
    v = 0.1 * 30.0  # context velocity per second
    for end, exact in ((2.2, True), (0.5, False)):  # on the constant-velocity line, and a stop short of it
        x = np.where(np.arange(t) < 10, np.arange(t) * 0.1, end)[None, :, None, None]
        x_seen = np.where(known[..., None], x, 1e6)
        lerp = np.interp(np.arange(t), [9, 22], [0.9, end])
        lerp = np.where(np.arange(t) <= 9, x[0, :, 0, 0], np.where(np.arange(t) >= 22, end, lerp))[None, :, None, None]
        off = hermite_offsets(lerp, *key_velocities(x_seen, known, times), known, times)
        secant = (end - 0.9) / (13 / 30.0)
        spline = CubicHermiteSpline([9 / 30.0, 22 / 30.0], [0.9, end], [v, secant])
        gap = np.arange(10, 22)
        assert np.allclose((lerp + off)[0, gap, 0, 0], spline(gap / 30.0), atol=1e-9)
        assert np.allclose(off[0, :10], 0.0) and np.allclose(off[0, 22:], 0.0)  # keys and the trailing frames
        assert np.allclose(off, 0.0) == exact
    half = hermite_offsets(lerp, *key_velocities(x_seen, known, times), known, times, share=0.5)
    assert np.allclose(half, 0.5 * off)


def test_velocity_memory_shrinks_the_share_on_spans_longer_than_it():
    """With ``memory`` the Hermite share is ``share * memory / span`` on spans longer than the memory and the
    full share on shorter ones: a key's velocity carries the motion about that long, not across a long gap."""
    from training.inbetween.baselines import hermite_offsets, key_velocities

    t = 40
    times = np.arange(t)[None] / 30.0
    for key, span_s in ((14, 5 / 30.0), (39, 30 / 30.0)):  # a 0.17 s span and a 1 s span after the context
        known = np.zeros((1, t, 1), dtype=bool)
        known[0, :10] = True
        known[0, key] = True
        x = np.where(np.arange(t) < 10, np.arange(t) * 0.1, 0.5)[None, :, None, None]
        x_seen = np.where(known[..., None], x, 1e6)
        lerp = np.interp(np.arange(t), [9, key], [0.9, 0.5])[None, :, None, None]
        vel = key_velocities(x_seen, known, times)
        full = hermite_offsets(lerp, *vel, known, times)
        assert np.abs(full).max() > 0.01
        remembered = hermite_offsets(lerp, *vel, known, times, memory=0.5)
        assert np.allclose(remembered, full * min(1.0, 0.5 / span_s))


def test_spline_keys_take_blenders_slopes_each_joint_through_its_own_keys():
    """With ``spline``, a key's slope is that of Blender's default curve (:func:`auto_clamped_slopes`, checked
    against real Blender; :func:`auto_clamped_columns` solves it) through the joint's own keys, joint by joint
    and window by window, whatever the pattern, but for the window's first and last keys, which take their
    segment's slope (a straight motion keeps its slope at every key); a key with a known neighbour frame keeps
    its finite difference."""
    from training.inbetween.baselines import auto_clamped_columns, key_velocities, spline_key_slopes

    rng = np.random.default_rng(3)
    n, t, j = 3, 40, 4
    known = rng.random((n, t, j)) < 0.3
    known[:, [0, 39]] = True
    known[:, 1:] &= ~known[:, :-1]  # no two keyed frames side by side (a run is the next check's)
    times = np.cumsum(rng.uniform(0.02, 0.05, size=(n, t)), axis=1)
    x = np.cumsum(rng.normal(size=(n, t, j, 2)), axis=1)
    slopes = spline_key_slopes(x, known, times)
    for w in range(n):
        for joint in range(j):
            k = np.flatnonzero(known[w, :, joint])
            alone = auto_clamped_columns(np.tile(times[w, k], (2, 1)), x[w, k, joint].T, np.ones((2, len(k)), bool),
                                         flat_ends=False).T
            assert np.allclose(slopes[w, k, joint], alone, atol=1e-12)
            assert not slopes[w, ~known[w, :, joint], joint].any()
    line = 2.0 + 3.0 * times[..., None, None] * np.ones((1, 1, j, 2))
    assert np.allclose(spline_key_slopes(line, known, times)[known], 3.0)
    run = known.copy()
    run[:, 5:12] = True  # a run of keyed frames: inside it, the slope between a key's neighbours
    central = (x[:, 7:11] - x[:, 5:9]) / (times[:, 7:11] - times[:, 5:9])[..., None, None]
    assert np.allclose(spline_key_slopes(x, run, times)[:, 6:10], central)
    sparse = known & ~np.roll(known, 1, axis=1) & ~np.roll(known, -1, axis=1)  # keys without a known neighbour
    sparse[:, [0, 39]] = False
    vel, measured = key_velocities(x, sparse, times, across_keys=True, spline=True)
    spl = spline_key_slopes(x, sparse, times)
    w, f, joint = np.argwhere(sparse & (np.cumsum(sparse, 1) > 1) & (np.cumsum(sparse[:, ::-1], 1)[:, ::-1] > 1))[0]
    nxt = f + 1 + np.flatnonzero(sparse[w, f + 1 :, joint])[0]
    assert measured[w, nxt - 1, joint, 0]  # the cell before the next key leaves key f with its spline slope
    assert np.allclose(vel[w, nxt - 1, joint, 0], spl[w, f, joint] * (times[w, nxt - 1] - times[w, f]))
    with pytest.raises(ValueError, match="spline_keys and clamp_keys"):
        FeatureSpec(spline_keys=True, clamp_keys=True)


def test_rotvec_curve_turns_a_hinge_at_its_own_rate():
    """A joint turning at a constant rate about a fixed axis, 80 degrees between keys 10 frames apart and 320
    in all: the rotation-vector curve follows it exactly (its angle is a straight line, which the spline keeps,
    past 180 degrees too), while the 6D curve between the same keys cuts the corner; keys come back as they are,
    and a joint without keys keeps its input."""
    from training.inbetween.features import canonical_batch
    from training.motion.rotations import axis_angle_to_quat, sixd_to_quat

    schema = get_schema("hand")
    t = 41
    times = np.arange(t)[None] / 30.0
    axis = np.array([0.3, 0.2, 0.93]) / np.linalg.norm([0.3, 0.2, 0.93])
    angle = np.radians(8.0) * np.arange(t)  # 80 degrees every 10 frames
    rot = np.tile(np.array([0.0, 0.0, 0.0, 1.0]), (1, t, schema.n_joints, 1))
    rot[0, :, 6] = axis_angle_to_quat(angle[:, None] * axis)
    trans = np.zeros((1, t, schema.n_joints, 3))
    known = np.zeros((1, t, schema.n_joints), dtype=bool)
    known[0, ::10] = True
    known[0, :, 0] = True  # the wrist, as a full rig gives it
    known[0, :, 9] = False  # a joint never keyed
    errors = {}
    for curve in ("6d", "rotvec"):
        spec = FeatureSpec(frame="root", base_velocity=1.0, across_keys=True, spline_keys=True,
                           rotation_curve=curve)
        b = canonical_batch(rot, trans, times, known, ~known, schema, spec)
        base = sixd_to_quat(b["base6d"].astype(np.float64))
        errors[curve] = np.degrees(quat_angle(base[0, :, 6], rot[0, :, 6])).max()
        assert np.allclose(quat_angle(base[known], rot[known]), 0.0, atol=1e-3)
        assert np.allclose(quat_angle(base[0, :, 9], np.array([0.0, 0.0, 0.0, 1.0])), 0.0, atol=1e-3)
    assert errors["rotvec"] < 0.05 and errors["6d"] > 1.0, errors


def test_untrained_hermite_model_keeps_keys_and_leaves_them_with_their_velocity():
    """A zero-head model with ``base_velocity`` fills the Hermite baseline: known cells come back exactly,
    and the first filled frame continues the context's motion better than interpolation does."""
    torch.manual_seed(0)
    model = build_model(AnyOrderTrainConfig(skeleton="body", d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=2,
                                            dropout=0.0, features=FeatureSpec(base_velocity=1.0))).eval()
    assert model.cfg.features.base_velocity == 1.0
    rot, trans, times = synthetic("body", n=1, t=40)
    known = inbetween_mask(1, 40, 22, ctx=10, gap=20)
    known[:, 31:] = False  # one key after the gap, as in the benchmark
    h = fill_engine.fill(model, rot, trans, known, times)
    i = fill_engine.fill(tiny("body", randomise=False), rot, trans, known, times)
    assert np.allclose(h.rotations[known], rot[known], atol=1e-12)
    err = lambda r: quat_angle(r[:, 10], rot[:, 10]).mean()  # noqa: E731
    assert err(h.rotations) < 0.5 * err(i.rotations)


def test_key_gate_fades_corrections_in_away_from_keys():
    """With ``key_gate`` a correction is scaled by 1 - exp(-d / tau), d the time to the joint's nearest key:
    the same weights without the gate give the ungated correction, and a cell next to a key moves less."""
    from training.inbetween.baselines import NO_KEY_TIME, key_time

    torch.manual_seed(0)
    kw = dict(skeleton="hand", d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=2, dropout=0.0)
    gated = build_model(AnyOrderTrainConfig(**kw, key_gate=0.1)).eval()
    torch.nn.init.normal_(gated.out.weight, std=0.05)
    plain = build_model(AnyOrderTrainConfig(**kw)).eval()
    assert plain.load_state_dict(gated.state_dict(), strict=False).unexpected_keys == ["log_gate_time"]
    rot, trans, times = synthetic("hand", n=1, t=30)
    known = inbetween_mask(1, 30, 17, ctx=5, gap=20)
    known[:, 10, 3] = True  # one joint keyed inside the gap
    known[:, :, 7] = False  # one joint never keyed
    b = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in make_batch(
        rot, trans, np.full(1, 30.0), known, ~known, get_schema("hand"), gated.cfg.features).items()}
    kt = key_time(known, times)
    assert kt[0, 6, 0] == pytest.approx(2 / 30) and kt[0, 11, 3] == pytest.approx(1 / 30)
    assert (kt[0, :, 7] == NO_KEY_TIME).all() and (kt[known] == 0).all()
    with torch.inference_mode():
        g, p = gated(b), plain(b)
    gate = 1.0 - np.exp(-kt / 0.1)
    base = b["base6d"].numpy()
    dg, dp = g["rot6d"].numpy() - base, p["rot6d"].numpy() - base
    assert np.allclose(dg, gate[..., None] * dp, atol=1e-6)
    assert gate[0, 11, 3] < 0.3 and gate[0, 15, 7] == 1.0 and np.abs(dp[0, 11, 3]).sum() > 0


def test_hermite_positions_off_keeps_the_root_trajectory_linear(tmp_path):
    """``hermite_positions=False``: rotations follow the Hermite baseline, the moving joints' positions the
    straight interpolation (what ``base_velocity=0`` gives); the model config carries the choice."""
    rot, trans, _ = synthetic("body", n=2, t=40)
    known = inbetween_mask(2, 40, 22, ctx=10, gap=20)
    known[:, 31:] = False
    schema, fps = get_schema("body"), np.full(2, 30.0)
    batch = lambda spec: make_batch(rot, trans, fps, known, ~known, schema, spec)  # noqa: E731
    linear = batch(FeatureSpec("yaw", True, 0.0, True))
    hermite = batch(FeatureSpec("yaw", True, 0.5, True))
    mixed = batch(FeatureSpec("yaw", True, 0.5, True, hermite_positions=False))
    assert np.array_equal(mixed["basepos"], linear["basepos"])
    assert np.array_equal(mixed["base6d"], hermite["base6d"])
    assert not np.allclose(hermite["basepos"], linear["basepos"])
    model = build_model(AnyOrderTrainConfig(skeleton="body", d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1,
                                            features=FeatureSpec(base_velocity=0.5, hermite_positions=False)))
    assert model.cfg.features == FeatureSpec("yaw", True, 0.5, False, hermite_positions=False)
    loaded, _ = load_model(save_model(model, tmp_path / "m.safetensors"))
    assert loaded.cfg.features == model.cfg.features


@pytest.mark.slow
@pytest.mark.data
def test_killed_training_run_resumes_from_its_last_checkpoint(tmp_path, data_root):
    """A run stopped after 2 steps continues from its checkpoint to 4 (the scheduler's state included),
    and refuses a run folder that holds a different model config."""
    from training.train import main

    run = tmp_path / "run"
    args = ["anyorder", "--named", "tiny", "skeleton=hand", "fps=30", "val_windows=32", "batch_size=8",
            f"data_root={data_root}", "trainer.threads=1", "trainer.progress=false", "--run-dir", str(run)]
    assert main([*args, "trainer.max_steps=2"]) == 0
    first = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert first["global_step"] == 2
    assert main([*args, "trainer.max_steps=4"]) == 0
    again = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert again["global_step"] == 4
    assert again["lr_schedulers"][0]["last_epoch"] == 4
    assert (run / "export" / "hand-query.safetensors").is_file()
    # a run folder from before a setting existed resumes while the setting keeps its default
    saved = json.loads((run / "config.json").read_text())
    del saved["config"]["num_workers"]
    (run / "config.json").write_text(json.dumps(saved))
    assert main([*args, "trainer.max_steps=4"]) == 0
    with pytest.raises(ValueError, match="different model config \\(differs in: num_workers\\)"):
        main([*args, "num_workers=1", "trainer.max_steps=4"])
    with pytest.raises(ValueError, match="different model config"):
        main([*args[:-2], "d_model=48", "--run-dir", str(run), "trainer.max_steps=6"])



@pytest.mark.slow
@pytest.mark.data
def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path, data_root):
    """Killed after its first epoch and run again, a run trains its second epoch on that epoch's windows
    (Lightning asks for the loader before it restores its loop, so the epoch comes from the checkpoint)
    and ends with the weights of the run that was never stopped; with data-loader workers as without."""
    from training.train import main

    for workers in (0, 2):
        args = ["anyorder", "--named", "tiny", "skeleton=hand", "fps=30", "val_windows=8", "batch_size=4",
                "steps_per_epoch=2", "dropout=0.1", f"num_workers={workers}", f"data_root={data_root}",
                "trainer.threads=1", "trainer.progress=false"]
        whole, parts = tmp_path / f"whole{workers}", tmp_path / f"parts{workers}"
        cmd = [*args, "trainer.max_epochs=2"]
        assert main([*cmd, "--run-dir", str(whole)]) == 0
        # the same command, killed after its first epoch: only that epoch's checkpoint is left
        shutil.copytree(whole, parts)
        for name in ("last.ckpt", "step00000004.ckpt"):
            (parts / "checkpoints" / name).unlink()
        assert [p.name for p in (parts / "checkpoints").iterdir()] == ["step00000002.ckpt"]
        assert main([*cmd, "--run-dir", str(parts)]) == 0
        a = torch.load(whole / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        b = torch.load(parts / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"num_workers={workers}: the resumed run drifted"


class _CountingSampler:
    """Stands in for a WindowSampler: a batch is a few numbers drawn from the stream's generator."""

    def batch(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        return {"x": rng.random((n, 3))}


def _epoch(batches, workers: int) -> list[np.ndarray]:
    from torch.utils.data import DataLoader

    return [b["x"].numpy() for b in DataLoader(batches, batch_size=None, num_workers=workers)]


def test_training_batches_differ_across_workers_and_ranks_and_repeat_with_the_seed():
    """Data-loader workers and DDP ranks each draw their own windows (no batch twice), an epoch has its
    steps whatever the worker count, the draw is a function of (seed, epoch), and one stream alone draws
    what runs made before workers existed drew."""
    from training.inbetween.task import _Batches

    def batches(rank=0, world=1, epoch=0):
        b = _Batches(_CountingSampler(), batch_size=2, steps=5, seed=7, variant="query", rank=rank, world_size=world)
        b.epoch = epoch
        return b

    one = _epoch(batches(), 0)
    old = np.random.default_rng([7, 0])
    assert len(one) == 5 and all(np.array_equal(x, old.random((2, 3))) for x in one)
    two = _epoch(batches(), 2)
    assert len(two) == 5
    assert len({x.tobytes() for x in two}) == 5  # the two workers do not repeat each other
    assert all(np.array_equal(a, b) for a, b in zip(two, _epoch(batches(), 2), strict=True))  # seeded
    assert not np.array_equal(two[0], _epoch(batches(epoch=1), 2)[0])  # a new epoch, new windows
    ranks = _epoch(batches(0, 2), 0) + _epoch(batches(1, 2), 0)
    assert len({x.tobytes() for x in ranks}) == 10  # DDP ranks do not train on the same batches


def test_fill_at_rate_fills_a_high_rate_window_on_a_trained_rate_grid():
    """A 120 fps window on a 24-40 fps model is filled on a grid at 40 fps that holds every keyed frame: known
    cells come back exactly, targets are finite, joints known on every frame stay conditioning curves, and the
    result says it was resampled; at a trained rate it is plain fill()."""
    m = tiny("hand")
    rot, trans, _ = synthetic("hand", n=1, t=121)
    times = (np.arange(121) / 120.0)[None]
    j = rot.shape[2]
    known = np.zeros((1, 121, j), dtype=bool)
    known[:, ::20] = True  # a key every 20 frames
    known[:, :, 0] = True  # the wrist known on every frame
    out = fill_engine.fill_at_rate(m, rot, trans, known, times, (24.0, 40.0))
    assert np.array_equal(out.rotations[known], rot[known])
    assert np.isfinite(out.rotations).all() and np.isfinite(out.spread_deg).all()
    assert (out.spread_deg[~known] > 0).all()
    # the same window at 30 fps is within the trained rates: exactly fill()
    t30 = (np.arange(121) / 30.0)[None]
    a = fill_engine.fill_at_rate(m, rot, trans, known, t30, (24.0, 40.0))
    b = fill_engine.fill(m, rot, trans, known, t30)
    assert np.array_equal(a.rotations, b.rotations)
    assert out.resampled == pytest.approx((120.0, 40.0)) and a.resampled is None


@pytest.mark.parametrize("pattern", ["context and end", "keys every 10"])
def test_a_window_that_skips_frames_is_filled_as_if_every_frame_were_sent(pattern):
    """A request of the keys and a target far apart, numbered at a trained rate (30 fps): frames 0-9, one target and
    the last three of 143, or a key every 10 frames and one frame between (the extension's Complete Pose). Filled on
    the grid of all its frames, exactly as the same window sent with every frame, and not reported as resampled. The
    model used to read the 14 frames as one 4.7 s window, twice the trained length; Complete Pose's frames were read
    as a 3 fps window, put on a 24 fps grid and slerped between its keys (1.6-1.9x further from the capture)."""
    m = tiny("body")
    rot, trans, _ = synthetic("body", n=1, t=143)
    times = (np.arange(143) / 30.0)[None]
    known = np.zeros((1, 143, rot.shape[2]), dtype=bool)
    if pattern == "context and end":
        known[:, :10], known[:, 140:] = True, True
    else:
        known[:, ::10] = True
    keys = np.flatnonzero(known[0, :, 0]).tolist()
    dense = fill_engine.fill_at_rate(m, rot, trans, known, times, (24.0, 40.0), fps=30.0)
    for target in (12, 75):
        sent = sorted({*keys, target})
        i = sent.index(target)
        sparse = fill_engine.fill_at_rate(m, rot[:, sent], trans[:, sent], known[:, sent], times[:, sent],
                                          (24.0, 40.0), fps=30.0)
        assert sparse.resampled is None
        assert quat_angle(sparse.rotations[0, i], dense.rotations[0, target]).max() < 1e-6
        assert np.abs(sparse.translations[0, i] - dense.translations[0, target]).max() < 1e-6
        assert not fill_engine.one_call(m, times[:, sent], (24.0, 40.0), 30.0)  # not stacked with unbroken windows


def test_a_grid_fill_reaches_the_rig_frames_along_cubic_curves():
    """What carries a fill on the grid back to a 120 fps rig's frames follows a smooth motion far closer than
    straight slerps between grid frames (which make the speed jump at every grid frame), whatever hemisphere
    each grid quaternion is on, and goes through the grid frames exactly."""
    grid_t = np.sort(np.concatenate([np.arange(0.0, 2.0, 1 / 40), [0.01, 0.51, 1.33]]))
    fine_t = np.arange(0.0, grid_t[-1], 1 / 120)

    def motion(t):  # (T, 2, 4): two joints turning back and forth about tilted axes, and their positions
        ang = np.stack([1.2 * np.sin(2.1 * t), 0.7 * np.cos(3.3 * t)], axis=1)
        axis = np.array([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]])
        q = np.concatenate([np.sin(ang / 2)[..., None] * axis, np.cos(ang / 2)[..., None]], axis=-1)
        return q, np.stack([np.sin(t), t**2, np.cos(2 * t)], axis=1)[:, None].repeat(2, axis=1)

    q, tr = motion(grid_t)
    q[::3] *= -1  # the same rotations, some on the other hemisphere
    rq, rt = fill_engine._smooth_at(grid_t, q, tr, fine_t)
    lq, lt, _, _ = fill_engine._interpolate_at(grid_t, q, tr, fine_t)
    true_q, true_t = motion(fine_t)
    cubic, straight = quat_angle(rq, true_q).max(), quat_angle(lq, true_q).max()
    assert cubic < straight / 5, (cubic, straight)
    assert np.abs(rt - true_t).max() < np.abs(lt - true_t).max() / 5
    on_grid = np.isin(np.round(fine_t * 120), np.round(grid_t * 120)) & np.isclose(
        fine_t[:, None], grid_t[None], atol=1e-9).any(1)
    assert quat_angle(rq[on_grid], true_q[on_grid]).max() < 1e-6


def test_cards_written_before_one_feature_spec_load_with_what_they_meant(tmp_path):
    """A card whose config holds the feature settings flat (every shipped card) loads them; a setting it leaves
    out means what the model config defaulted to then (``key_velocity`` off, the ``yaw`` frame)."""
    model = build_model(AnyOrderTrainConfig(skeleton="hand", d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1,
                                            features=FeatureSpec(frame="yaw", key_velocity=False, base_velocity=0.5)))
    path = save_model(model, tmp_path / "m.safetensors")
    card = json.loads(card_path(path).read_text())
    features = card["config"].pop("features")
    card["config"].update({k: v for k, v in features.items() if k not in ("frame", "key_velocity")})
    card_path(path).write_text(json.dumps(card))
    loaded, _ = load_model(path)
    assert loaded.cfg == model.cfg
    assert loaded.cfg.features == FeatureSpec("yaw", False, 0.5)


def test_a_calibrated_model_file_starts_a_fine_tune_as_trained(tmp_path):
    """``init_from`` a shipped (calibrated) model: its weights load, its calibration (settings, not weights)
    is dropped, so the fine-tune starts from the network as trained; a run may teach it another curve (its
    features); another architecture is refused."""
    cfg = AnyOrderTrainConfig(skeleton="hand", d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1)
    torch.manual_seed(0)
    model = build_model(cfg)
    trained = model.cfg
    model.cfg = dataclasses.replace(trained, rot_scale=(0.0,) * trained.n_joints, pos_scale=0.75, motion_gate=0.1,
                                    gap_gate_rot=0.2, kappa_offset=trained.kappa_offset + 0.75)
    path = save_model(model, tmp_path / "shipped.safetensors")
    tuned = build_model(dataclasses.replace(cfg, init_from=str(path)))
    assert tuned.cfg == trained
    assert all(torch.equal(a, b) for a, b in zip(tuned.state_dict().values(), model.state_dict().values(), strict=True))
    spline = dataclasses.replace(cfg.features, across_keys=True, spline_keys=True, rotation_curve="rotvec")
    retaught = build_model(dataclasses.replace(cfg, features=spline, init_from=str(path)))
    assert retaught.cfg == dataclasses.replace(trained, features=spline.for_skeleton("hand"))
    assert all(torch.equal(a, b) for a, b in zip(retaught.state_dict().values(), model.state_dict().values(),
                                                 strict=True))
    with pytest.raises(ValueError, match="differs"):
        build_model(dataclasses.replace(cfg, d_model=64, init_from=str(path)))


@pytest.mark.slow  # reads the hand's validation takes
def test_a_trained_model_file_is_calibrated_again_on_its_runs_validation_data(tmp_path, data_root):
    """``python -m training.inbetween.recalibrate MODEL OUT``: the card's training config names the
    run's validation takes; the earlier calibration is undone first, the new one (gap gates included) is
    written into OUT's card and its config, and a model whose card has no training config is refused."""
    from training.inbetween.checkpoint import CheckpointError
    from training.inbetween.recalibrate import recalibrate

    cfg = AnyOrderTrainConfig(skeleton="hand", d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1,
                              val_windows=16, batch_size=16, data_root=str(data_root))
    torch.manual_seed(0)
    model = build_model(cfg)
    model.cfg = dataclasses.replace(model.cfg, motion_gate=0.4, kappa_offset=model.cfg.kappa_offset + 1.0)
    path = save_model(model, tmp_path / "m.safetensors",
                      training={"config": dataclasses.asdict(cfg), "calibration": {"kappa_shift": 1.0}})
    report = recalibrate(path, tmp_path / "again.safetensors")
    again, card = load_model(tmp_path / "again.safetensors")
    assert card["training"]["calibration"] == report and "gap_gate_pos" in report
    assert again.cfg.gap_gate_rot == report["gap_gate_rot"] and again.cfg.motion_gate == report["motion_gate"]
    assert again.cfg.kappa_offset == pytest.approx(build_model(cfg).cfg.kappa_offset + report["kappa_shift"])
    bare = save_model(model, tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match="no training config"):
        recalibrate(bare, tmp_path / "x.safetensors")


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_inference_path_equals_the_training_path(skeleton):
    """Inference (no gradients) projects self-attention with one stacked matmul, drops all-true masks and calls
    no dropout: its outputs equal the path training takes to 1e-5, padded batches and changed weights included."""
    from training.inbetween.features import canonical_batch, canonical_from_known, to_canonical

    model = tiny(skeleton, seed=3)
    schema = get_schema(skeleton)
    rot, trans, times = synthetic(skeleton, n=2, t=30, seed=4)
    known = inbetween_mask(2, 30, schema.n_joints, ctx=8, gap=12)
    known[1, 20:] = False  # rows of different lengths: the batch is padded and masked
    canon = canonical_from_known(rot, trans, known, schema, model.cfg.features.frame)
    rot_c, trans_c = to_canonical(rot, trans, canon, schema)
    b = fill_engine._to_torch(canonical_batch(rot_c, trans_c, times, known, ~known, schema, model.cfg.features))

    def both():
        with torch.enable_grad():
            slow = model(b)
        with torch.inference_mode():
            fast = model(b)
        for k in slow:
            assert torch.allclose(slow[k], fast[k], atol=1e-5), k
        return fast

    first = both()
    with torch.no_grad():  # a training step changes the weights in place: the stacked copy follows
        model.core.encoder[0].attn.q.weight.add_(0.05)
        model.core.decoder[-1].attn.kv.bias.add_(0.05)
    second = both()
    assert not torch.allclose(first["rot6d"], second["rot6d"])


def _counting(traced):
    """The traced passes with a call counter on each, to tell whether inference went through them."""
    calls = {"n": 0}

    def wrap(fn):
        def call(*args):
            calls["n"] += 1
            return fn(*args)
        return call

    return traced._replace(encode=wrap(traced.encode), decode=wrap(traced.decode),
                           decode_kv=wrap(traced.decode_kv)), calls


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_traced_inference_equals_the_eager_layers(skeleton):
    """A loaded model's unmasked inference runs through traced copies of its layers: the same outputs as the
    eager layers (1e-5) for a window and for an encoding decoded with its cached keys and values; padded batches,
    gradients and training stay eager, and changed weights are never served by a stale trace."""
    from training.inbetween.features import canonical_batch, canonical_from_known, to_canonical

    model = tiny(skeleton, seed=5)
    assert model.core.trace_inference()
    model.core.traced, calls = _counting(model.core.traced)
    schema = get_schema(skeleton)
    rot, trans, times = synthetic(skeleton, n=1, t=30, seed=6)
    known = inbetween_mask(1, 30, schema.n_joints, ctx=8, gap=12)
    canon = canonical_from_known(rot, trans, known, schema, model.cfg.features.frame)
    rot_c, trans_c = to_canonical(rot, trans, canon, schema)
    b = fill_engine._to_torch(canonical_batch(rot_c, trans_c, times, known, ~known, schema, model.cfg.features))
    traced = model.core.traced

    def run():
        with torch.inference_mode():
            whole = model(b)
            parts = model.decode(b, model.encode(b))
        return whole, parts

    def compare():
        fast = run()
        used = calls["n"]
        model.core.traced = None
        slow = run()
        model.core.traced = traced
        for f, s in zip(fast, slow, strict=True):
            for k in s:
                assert torch.allclose(f[k], s[k], atol=1e-5), k
        return fast[0], used

    first, used = compare()
    assert used == 4  # encode + decode of the window, encode + decode with the cached keys and values
    calls["n"] = 0
    with torch.no_grad():  # weights changed in place (a training step): eager, and the new weights' outputs
        model.core.decoder[0].mlp[0].weight.add_(0.05)
    second, used = compare()
    assert used == 0 and not torch.allclose(first["rot6d"], second["rot6d"])
    assert model.core.trace_inference()  # traced again from the new weights
    model.core.traced, calls = _counting(model.core.traced)
    traced = model.core.traced
    third, used = compare()
    assert used == 4 and torch.allclose(third["rot6d"], second["rot6d"], atol=1e-5)
    calls["n"] = 0
    padded = dict(b, known=b["known"].clone())
    padded["known"][0, 3:6] = False  # frames with no known cell: the encoder's tokens are cut, not masked
    with torch.inference_mode():
        model(padded)
    assert calls["n"] == 2
    with torch.enable_grad():
        model(b)
    model.train()
    with torch.inference_mode():
        model(b)
    assert calls["n"] == 2  # gradients or training mode: eager
    assert "core.traced" not in "".join(model.state_dict())  # not part of the weights


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_traced_queries_and_head_equal_the_eager_ones(skeleton):
    """A loaded model runs the arithmetic around its core through traced copies too (a decode step's queries, the
    head of a window and of a step): the same outputs as eager (1e-5); a one-frame window, gradients and training stay
    eager, and changed weights (a parameter or a buffer, in place or replaced) or settings (the config, as calibration
    changes it) are never served by a stale trace."""
    from training.inbetween.features import canonical_batch, canonical_from_known, to_canonical

    model = tiny(skeleton, seed=5)
    schema = get_schema(skeleton)
    rot, trans, times = synthetic(skeleton, n=1, t=30, seed=6)
    known = inbetween_mask(1, 30, schema.n_joints, ctx=8, gap=12)
    known[:, 0, :3] = False  # a frame with known and target cells
    canon = canonical_from_known(rot, trans, known, schema, model.cfg.features.frame)
    rot_c, trans_c = to_canonical(rot, trans, canon, schema)
    batch = canonical_batch(rot_c, trans_c, times, known, ~known, schema, model.cfg.features)
    b = fill_engine._to_torch(batch)
    one = fill_engine._to_torch({k: v if k in ("has_key", "moving_has_key") else v[:, :1] for k, v in batch.items()})
    calls = {"queries": 0, "head": 0}

    def counting(name, fn):
        def call(*args):
            calls[name] += 1
            return fn(*args)
        return call

    def trace():  # traced from the current weights, each use counted
        for name, traced in (("queries", model.traced_queries), ("head", model.traced_head)):
            assert traced.trace()
            traced.traced = counting(name, traced.traced)

    def run():
        with torch.inference_mode():
            return model(b), model.decode(b, model.encode(b)), model(one)

    def compare():
        calls.update(queries=0, head=0)
        fast = run()
        used = dict(calls)
        kept = model.traced_queries.traced, model.traced_head.traced
        model.traced_queries.traced = model.traced_head.traced = None
        slow = run()
        model.traced_queries.traced, model.traced_head.traced = kept
        for f, s in zip(fast, slow, strict=True):
            for k in s:
                assert torch.allclose(f[k], s[k], atol=1e-5), k
        return fast[0], used

    trace()
    first, used = compare()
    assert used == {"queries": 1, "head": 2}  # the window's head and the step's queries and head; not one frame's
    for change in (lambda: model.out.weight.add_(0.05), lambda: model.rot_std.mul_(1.5),
                   lambda: setattr(model.out, "bias", torch.nn.Parameter(model.out.bias + 0.05)),
                   lambda: setattr(model.cfg, "rot_scale", (0.5,) * model.cfg.n_joints),
                   lambda: setattr(model, "cfg", dataclasses.replace(model.cfg, motion_gate=50.0))):
        with torch.no_grad():  # weights or settings changed in place or replaced (a training step, new statistics, a
            change()  # loaded state, calibration): eager, the new outputs
        second, used = compare()
        assert used == {"queries": 0, "head": 0} and not torch.allclose(first["rot6d"], second["rot6d"])
        trace()  # traced again from the new weights
        third, used = compare()
        assert used == {"queries": 1, "head": 2} and torch.allclose(third["rot6d"], second["rot6d"], atol=1e-5)
        first = third
    calls.update(queries=0, head=0)
    with torch.enable_grad():
        model.decode(b, model.encode(b))
    model.train()
    with torch.inference_mode():
        model.decode(b, model.encode(b))
    assert calls == {"queries": 0, "head": 0}  # gradients or training mode: eager
    assert not any("traced" in k for k in model.state_dict())  # not part of the weights


def network_inputs(model, rot, trans, times, known) -> dict[str, torch.Tensor]:
    """The network's inputs of windows, as a fill builds them (canonical frame, features), as tensors."""
    from training.inbetween.features import canonical_batch, canonical_from_known, to_canonical

    schema = get_schema(model.cfg.skeleton)
    canon = canonical_from_known(rot, trans, known, schema, model.cfg.features.frame)
    rot_c, trans_c = to_canonical(rot, trans, canon, schema)
    return fill_engine._to_torch(canonical_batch(rot_c, trans_c, times, known, ~known, schema, model.cfg.features))


def even_and_padded(skeleton: str):
    """A tiny model and two batches of two 30-frame rows: each row with as many frames with known cells and as many
    with targets (a partly keyed frame in each: a known frame and a target one), and the same with one more keyed
    frame in the second row (rows of different counts: padding)."""
    model = tiny(skeleton, seed=5)
    rot, trans, times = synthetic(skeleton, n=2, t=30, seed=6)
    known = inbetween_mask(2, 30, model.cfg.n_joints, ctx=8, gap=12)
    known[0, 12, :4] = known[1, 15, 2:5] = True
    uneven = known.copy()
    uneven[1, 9] = True
    return model, *(network_inputs(model, rot, trans, times, k) for k in (known, uneven))


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_a_window_runs_as_one_traced_graph_equal_to_the_eager_pass(skeleton):
    """A loaded model runs a window's whole pass (inputs, layers, head) as one traced graph when every row of the batch
    has as many frames with known cells and as many with targets: the eager pass's outputs (1e-5), frames partly
    keyed included. Rows of different counts (padding), a one-frame window, gradients and changed weights run eager."""
    model, even, padded = even_and_padded(skeleton)
    calls = {"n": 0}

    def trace():
        assert model.traced_window.trace()
        graph = model.traced_window.traced

        def counted(*args):
            calls["n"] += 1
            return graph(*args)

        model.traced_window.traced = counted

    def compare(b):
        calls["n"] = 0
        with torch.inference_mode():
            fast = model(b)
        used = calls["n"]
        kept, model.traced_window.traced = model.traced_window.traced, None
        with torch.inference_mode():
            slow = model(b)
        model.traced_window.traced = kept
        target = b["target"]
        for k in ("rot6d", "log_kappa"):
            assert torch.allclose(fast[k][target], slow[k][target], atol=1e-5), k
        assert torch.allclose(fast["pos"], slow["pos"], atol=1e-5) and torch.allclose(fast["log_sigma"],
                                                                                    slow["log_sigma"], atol=1e-5)
        return fast, used

    trace()
    first, used = compare(even)
    assert used == 1
    assert compare(padded)[1] == 0  # rows of different counts: eager, with masks
    one = {k: v if k in ("has_key", "moving_has_key") else v[:, :1] for k, v in even.items()}
    assert compare(one)[1] == 0
    with torch.no_grad():  # a weight of the core changed in place: eager, the new weights' outputs
        model.core.encoder[0].mlp[0].weight.add_(0.05)
    second, used = compare(even)
    assert used == 0 and not torch.allclose(first["rot6d"], second["rot6d"])
    trace()
    third, used = compare(even)
    assert used == 1 and torch.allclose(third["rot6d"][even["target"]], second["rot6d"][even["target"]], atol=1e-5)
    calls["n"] = 0
    with torch.enable_grad():
        model(even)
    assert calls["n"] == 0  # gradients: eager


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_a_sampling_step_runs_as_one_traced_graph_equal_to_the_eager_decode(skeleton):
    """A loaded model decodes a sampling step (queries, the layers against a kept encoding, the head) as one traced
    graph when the encoding has no padding and the rows as many target frames: the eager decode's outputs (1e-5).
    An encoding of rows of different counts, or changed weights, decode eager."""
    model, even, padded = even_and_padded(skeleton)
    calls = {"n": 0}
    assert model.traced_step.trace()
    graph = model.traced_step.traced

    def counted(*args):
        calls["n"] += 1
        return graph(*args)

    def compare(b):
        calls["n"] = 0
        model.traced_step.traced = counted
        with torch.inference_mode():
            enc = model.encode(b)
            fast = model.decode(b, enc)
            used = calls["n"]
            model.traced_step.traced = None
            slow = model.decode(b, enc)
        model.traced_step.traced = counted
        target = b["target"]
        for k in ("rot6d", "log_kappa"):
            assert torch.allclose(fast[k][target], slow[k][target], atol=1e-5), k
        assert torch.allclose(fast["pos"], slow["pos"], atol=1e-5)
        return fast, used

    first, used = compare(even)
    assert used == 1
    assert compare(padded)[1] == 0  # an encoding of rows of different counts: eager, masked
    with torch.no_grad():
        model.query_in.weight.add_(0.05)
    second, used = compare(even)
    assert used == 0 and not torch.allclose(first["rot6d"], second["rot6d"])


def test_traced_copies_are_built_one_at_a_time_across_threads(monkeypatch):
    """``torch.jit.trace`` swaps one process-wide map: two threads tracing at once (a server's first fill beside its
    first sample) broke each other with ``IndexError: unordered_map::at``. Copies are built one at a time, each once,
    and both threads get the eager outputs."""
    import threading
    import time

    model = tiny("hand", seed=5)
    model.core.trace_on_first_use = True
    for traced in (model.traced_queries, model.traced_head, model.traced_window, model.traced_step):
        traced.on_first_use = True
    rot, trans, times = synthetic("hand", n=1, t=20, seed=6)
    b = network_inputs(model, rot, trans, times, inbetween_mask(1, 20, model.cfg.n_joints, ctx=6, gap=8))
    trace, state = torch.jit.trace, {"active": 0, "most": 0, "traces": 0}
    lock = threading.Lock()

    def slow_trace(*args, **kwargs):  # each trace lasts long enough for the other thread to start one
        with lock:
            state["active"] += 1
            state["most"] = max(state["most"], state["active"])
            state["traces"] += 1
        time.sleep(0.2)
        try:
            return trace(*args, **kwargs)
        finally:
            with lock:
                state["active"] -= 1

    monkeypatch.setattr(torch.jit, "trace", slow_trace)
    start, results, errors = threading.Barrier(2), {}, []

    def run(name, fn):
        start.wait()
        try:
            with torch.inference_mode():
                results[name] = fn()
        except Exception as e:  # noqa: BLE001 - the test reports any failure of either thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=("window", lambda: model(b))),
               threading.Thread(target=run, args=("step", lambda: model.decode(b, model.encode(b))))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and state["most"] == 1
    assert model.traced_window.traced is not None and model.traced_step.traced is not None
    traces = state["traces"]
    for traced in (model.traced_window, model.traced_step):
        traced.traced = None
    model.core.traced, model.core.trace_on_first_use = None, False
    for traced in (model.traced_queries, model.traced_head, model.traced_window, model.traced_step):
        traced.on_first_use = False
    with torch.inference_mode():
        eager = {"window": model(b), "step": model.decode(b, model.encode(b))}
    target = b["target"]
    for name in ("window", "step"):
        assert torch.allclose(results[name]["rot6d"][target], eager[name]["rot6d"][target], atol=1e-5), name
    assert traces == state["traces"] and traces >= 2  # each copy traced once (the core's passes are three traces)


def test_weights_fixed_walks_a_module_once_on_its_own_thread_only():
    """Inside :func:`weights_fixed` (a sampling run) a module's weights key is worked out once and given again; outside,
    and on other threads, every call walks the weights, so a change is seen."""
    import threading

    from training.inbetween.tracing import weights_fixed, weights_key

    model = tiny("hand")
    with weights_fixed():
        first = weights_key(model)
        assert weights_key(model) is first and weights_key(model, skip=model.core) is not first
        elsewhere = []
        worker = threading.Thread(target=lambda: elsewhere.append(weights_key(model)))
        worker.start()
        worker.join()
        assert elsewhere[0] == first and elsewhere[0] is not first
        with weights_fixed():  # nested: the outer block's keys
            assert weights_key(model) is first
        assert weights_key(model) is first
    with torch.no_grad():
        model.out.weight.add_(0.05)
    assert weights_key(model) != first


def test_a_traced_method_that_does_not_reproduce_its_examples_stays_eager():
    """A method whose traced copy differs from it on the examples it was not traced on (here a branch on a shape) is
    never served traced, not even once its owner allows tracing on first use."""
    from training.inbetween.tracing import TracedMethod, weights_key

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(3))
            self.traced = TracedMethod(self.run, lambda: [(torch.ones(1, 3),), (torch.ones(2, 3),)],
                                       lambda: weights_key(self))

        def run(self, x):
            return (x * self.scale if x.shape[0] == 1 else x * 2 * self.scale,)

    toy = Toy().eval()
    toy.traced.on_first_use = True
    with torch.inference_mode():
        assert toy.traced.serving(torch.ones(2, 3)) is None
    assert toy.traced.traced is None and not toy.traced.trace()


@pytest.mark.parametrize("skeleton", ["hand", "body"])
def test_shipped_models_fill_and_sample_traced_as_eager(skeleton):
    """The shipped models trace a window's whole pass on their first window, their encoder and a step's whole decode on
    their first sampling step; a fill and a k = 1 sample of a window equal the eager model's (1e-5)."""
    model, _ = load_model(skeleton)
    assert model.core.trace_on_first_use and model.core.traced is None and model.traced_window.on_first_use
    rot, trans, times = synthetic(skeleton, n=1, t=41, seed=7)
    known = inbetween_mask(1, 41, model.cfg.n_joints, ctx=10, gap=30)
    eager, _ = load_model(skeleton)
    eager.core.trace_on_first_use = False
    for traced in (eager.traced_queries, eager.traced_head, eager.traced_window, eager.traced_step):
        traced.on_first_use = False
    a, b = (fill_engine.fill(m, rot, trans, known, times) for m in (model, eager))
    assert model.traced_window.traced is not None and eager.traced_window.traced is None
    assert model.core.traced is None  # the window's graph served it all
    for f in ("rotations", "translations", "entropy", "spread_deg"):
        assert np.allclose(getattr(a, f), getattr(b, f), atol=1e-5), f
    short = np.s_[0, :14]  # 3 frames to draw: a few dozen steps
    a, b = (sampling.sample(m, rot[short], trans[short], known[short], times[short], k=1, seed=3, n=1)[0]
            for m in (model, eager))
    assert model.core.traced is not None and eager.core.traced is None
    assert model.traced_step.traced is not None and eager.traced_step.traced is None
    assert np.allclose(a.rotations, b.rotations, atol=1e-5) and np.allclose(a.translations, b.translations, atol=1e-4)


def test_a_saved_model_is_readable_by_others(tmp_path):
    """safetensors writes its file readable by its owner only: the model takes what a new file gets (the umask's),
    as its card does, or keeps the permissions of the file it replaces."""
    import os
    import stat

    umask = os.umask(0o022)
    try:
        path = save_model(tiny("hand"), tmp_path / "m.safetensors")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644 == stat.S_IMODE(card_path(path).stat().st_mode)
        path.chmod(0o640)
        save_model(tiny("hand"), path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(umask)
