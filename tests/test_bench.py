"""The in-betweening benchmark on real data: JSON shape, baselines, canonical frame, no peeking."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from training.bench import inbetween
from training.motion import clip, windows
from training.motion.rotations import quat_apply
from training.motion.skeleton import BODY, HAND

pytestmark = pytest.mark.data

HAND_TEST_FILE = "manipnet/teapot3/leftHand.bvh"
BODY_TEST_FILES = (
    "bandai/dataset-1/dataset-1_walk-back_angry_001.bvh",
    "bandai/dataset-1/dataset-1_walk-left_feminine_001.bvh",
    "bandai/dataset-1/dataset-1_bye_happy_001.bvh",
)


def test_test_files_are_in_the_test_split(data_root: Path) -> None:
    from training.motion.splits import split_files

    hand_test = {p.resolve() for p in split_files("hand", "test", data_root)}
    body_test = {p.resolve() for p in split_files("body", "test", data_root)}
    assert (data_root / HAND_TEST_FILE).resolve() in hand_test
    assert {(data_root / f).resolve() for f in BODY_TEST_FILES} <= body_test
    body_train = {p.resolve() for p in split_files("body", "train", data_root)}
    assert not body_train & body_test
    assert len(body_train) + len(body_test) == len(list((data_root / "bandai").glob("*/*.bvh")))


@pytest.fixture(scope="module")
def hand_results(data_root: Path) -> dict[str, dict]:
    files = [data_root / HAND_TEST_FILE]
    return {m: inbetween.run("hand", m, data=files, gaps=(5,), root=data_root) for m in ("interp", "zero")}


@pytest.mark.slow  # the fixture scores a whole 4,000-frame take twice
def test_run_returns_the_documented_json(hand_results: dict[str, dict]) -> None:
    r = hand_results["interp"]
    assert {"method", "skeleton", "windows", "gaps"} <= set(r)
    assert r["method"] == "interp" and r["skeleton"] == "hand"
    # one 120 fps file gives 4 clips at 30 fps; windows of 65 frames every 40
    phases = [len(range(k, 4000, 4)) for k in range(4)]
    assert r["windows"] == sum(len(range(0, n - 65 + 1, 40)) for n in phases) == 96
    assert list(r["gaps"]) == ["5"]
    assert set(r["gaps"]["5"]) == {"L2Q", "L2P", "NPSS", "pop"}
    for v in r["gaps"]["5"].values():
        assert isinstance(v, float) and math.isfinite(v) and v > 0.0
    assert json.loads(json.dumps(r)) == r  # plain JSON
    assert "gap 5" in inbetween.format_table(r)


@pytest.mark.slow
def test_interpolation_beats_zero_velocity(hand_results: dict[str, dict]) -> None:
    interp, zero = hand_results["interp"]["gaps"]["5"], hand_results["zero"]["gaps"]["5"]
    for metric in ("L2Q", "L2P", "NPSS"):
        assert interp[metric] < zero[metric], metric


def test_unknown_method_and_empty_input(data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="unknown method"):
        inbetween.run("hand", "no-such-method", data=[data_root / HAND_TEST_FILE], root=data_root)
    with pytest.raises(FileNotFoundError, match="no .bvh files"):
        inbetween.run("hand", "interp", data=[tmp_path], root=data_root)


def test_ground_truth_method_scores_zero_and_never_sees_the_answer(data_root: Path) -> None:
    clips = inbetween.load_protocol_clips([data_root / HAND_TEST_FILE], HAND)
    w = windows.cut(clips, inbetween.WINDOW, inbetween.STRIDE)
    mean, std = np.zeros((HAND.n_joints, 3)), np.ones((HAND.n_joints, 3))
    seen: list[np.ndarray] = []

    def oracle(batch: windows.Windows, known: np.ndarray):
        # the method gets the context and the target frame, and NaN everywhere in the gap
        assert batch.rotations.shape[1] == known.size == inbetween.N_CONTEXT + gap + 1
        assert known[: inbetween.N_CONTEXT].all() and known[-1] and not known[inbetween.N_CONTEXT : -1].any()
        assert np.isnan(batch.rotations[:, ~known]).all() and np.isnan(batch.translations[:, ~known]).all()
        assert np.isfinite(batch.rotations[:, known]).all() and np.isfinite(batch.translations[:, known]).all()
        assert np.array_equal(batch.rotations[:, known], w.rotations[:, : known.size][:, known])
        seen.append(known)
        # the answer comes from the closure, never from the batch
        return w.rotations[:, : known.size].copy(), w.translations[:, : known.size].copy()

    for gap in (5, 15):
        score, _ = inbetween.score_gap(oracle, w, gap, mean, std)
        assert abs(score.L2Q) < 1e-9 and abs(score.L2P) < 1e-9 and abs(score.NPSS) < 1e-9
    assert len(seen) == 2

    # a method that answers with its (NaN) input is refused, not scored
    with pytest.raises(ValueError, match="NaN"):
        inbetween.score_gap(lambda b, k: (b.rotations, b.translations), w, 5, mean, std)

    # and one that is off by a little scores more than zero
    def shifted(batch: windows.Windows, known: np.ndarray):
        rot, trans = oracle(batch, known)
        trans[:, ~known, HAND.root] += 0.1
        return rot, trans

    gap = 5
    score, _ = inbetween.score_gap(shifted, w, gap, mean, std)
    assert score.L2P > 0.0 and abs(score.L2Q) < 1e-9


@pytest.fixture(scope="module")
def body_windows(data_root: Path) -> windows.Windows:
    clips = inbetween.load_protocol_clips([data_root / f for f in BODY_TEST_FILES], BODY)
    w = windows.cut(clips, inbetween.WINDOW, inbetween.STRIDE)
    assert len(w) >= 6
    return w


def test_body_canonical_frame(body_windows: windows.Windows) -> None:
    ref = inbetween.N_CONTEXT - 1
    hips = BODY.root
    assert BODY.joints[hips] == "Hips"
    g_rot, g_pos = body_windows.fk()
    yaw, offset = windows.canonical_frame(g_rot, g_pos, BODY, ref)
    rot, pos = windows.to_canonical(g_rot, g_pos, yaw, offset)

    # the windows face many ways before: the test can fail
    before = quat_apply(g_rot[:, ref, hips], np.array([0.0, 0.0, 1.0]))
    assert np.ptp(np.arctan2(before[:, 2], before[:, 0])) > 0.5

    # Hips' local +Z at the last context frame, projected on the ground, points along +X
    fwd = quat_apply(rot[:, ref, hips], np.array([0.0, 0.0, 1.0]))
    horizontal = np.hypot(fwd[:, 0], fwd[:, 2])
    assert np.all(horizontal > 0.1)
    assert np.allclose(fwd[:, 2] / horizontal, 0.0, atol=1e-9)
    assert np.all(fwd[:, 0] > 0.0)
    # the mean horizontal Hips position over the window is the origin; heights are kept
    assert np.allclose(pos[:, :, hips, [0, 2]].mean(axis=1), 0.0, atol=1e-9)
    assert np.allclose(pos[..., 1], g_pos[..., 1])
    # a rigid motion: distances between joints are unchanged, rotations stay consistent with positions
    assert np.allclose(
        np.linalg.norm(pos[:, :, 5] - pos[:, :, 20], axis=-1), np.linalg.norm(g_pos[:, :, 5] - g_pos[:, :, 20], axis=-1)
    )
    bone = body_windows.translations[:, :, 3]  # Chest's offset from Spine, in Spine's frame
    spine = BODY.index("Spine")
    assert np.allclose(pos[:, :, 3] - pos[:, :, spine], quat_apply(rot[:, :, spine], bone), atol=1e-9)
    assert np.all(np.sum(rot[:, 1:] * rot[:, :-1], axis=-1) > 0)  # hemisphere-continuous in time


def test_hand_canonical_frame_only_centres(data_root: Path) -> None:
    c = clip.load(data_root / HAND_TEST_FILE, "hand").frames(slice(0, 400))
    w = windows.cut(windows.at_protocol_rate(c), 65, 40)
    g_rot, g_pos = w.fk()
    yaw, offset = windows.canonical_frame(g_rot, g_pos, HAND, 9)
    assert np.array_equal(yaw, np.tile([0.0, 0.0, 0.0, 1.0], (len(w), 1)))
    rot, pos = windows.to_canonical(g_rot, g_pos, yaw, offset)
    assert np.allclose(pos[:, :, HAND.root].mean(axis=1), 0.0, atol=1e-12)
    assert np.allclose(pos, g_pos - g_pos[:, :, HAND.root].mean(axis=1)[:, None, None])
    assert np.allclose(np.abs(np.sum(rot * g_rot, axis=-1)), 1.0)


def test_probe_ridge_recovers_a_linear_map() -> None:
    from training.bench import probe

    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 6)) * [1, 2, 3, 4, 5, 6] + 10.0
    w = rng.normal(size=(6, 3))
    y = x @ w + 1.5
    fitted = probe.ridge(x, y, 1e-9)
    z = rng.normal(size=(20, 6))
    np.testing.assert_allclose(fitted(z), z @ w + 1.5, atol=1e-5)
    np.testing.assert_allclose(probe.ridge(x, y, 1e9)(z), np.broadcast_to(y.mean(0), (20, 3)), atol=1e-4)


@pytest.mark.slow  # about 3 s
def test_probe_on_real_windows(data_root: Path) -> None:
    from training.bench import probe

    r = probe.run("hand", gap=5, windows=300, lambdas=(1e-6, 1e6), root=data_root)
    assert r["test_windows"] > 0 and [x["lambda"] for x in r["ridge"]] == [1e-6, 1e6]
    base = r["baseline"]
    assert all(0.0 < base[part][k] < 90.0 for part in ("test", "train") for k in ("top", "others"))
    # more inputs than windows: the weakly regularised map fits its own windows far better than the baseline
    loose, tight = r["ridge"]
    assert loose["train"]["top"] < 0.5 * base["train"]["top"]
    # a map held at zero only adds the mean residual: close to the baseline
    assert abs(tight["test"]["top"] - base["test"]["top"]) < 0.5
    assert "ridge lambda=1e-06" in probe.format_table(r)


def test_keyed_every_keys_frame_zero_and_every_nth_and_scores_between() -> None:
    from training.bench.keys import keyed_every

    known, frames = keyed_every(10)
    assert np.array_equal(np.nonzero(known)[0], [0, 10, 20, 30, 40, 50, 60])
    assert frames.min() == 1 and frames.max() == 59 and not known[frames].any() and len(frames) == 54
    with pytest.raises(ValueError, match="every"):
        keyed_every(1)


@pytest.mark.slow  # 2 to 6 s
def test_keys_benchmark_scores_only_the_frames_between_keys(data_root: Path, tmp_path: Path) -> None:
    """Interpolation through the keys scores what an untrained model (exactly interpolation) scores, a
    model of the truth scores zero, and zero velocity is worse; the JSON names every setting."""
    import torch

    from training.bench import keys
    from training.inbetween.checkpoint import save_model
    from training.inbetween.config import AnyOrderTrainConfig
    from training.inbetween.task import build_model

    files = [data_root / HAND_TEST_FILE]
    torch.manual_seed(0)
    untrained = save_model(build_model(AnyOrderTrainConfig(skeleton="hand", d_model=32, n_enc_layers=1,
                                                           n_dec_layers=1)), tmp_path / "u.safetensors")
    res = {m: keys.run("hand", str(m), every=(5, 20), data=files, root=data_root)
           for m in ("interp", "zero", untrained)}
    assert set(res["interp"]) == {"method", "skeleton", "windows", "every"} and res["interp"]["windows"] > 0
    for n in ("5", "20"):
        assert res["zero"]["every"][n]["L2P"] > res["interp"]["every"][n]["L2P"] > 0
        for m in ("L2Q", "L2P"):
            assert math.isclose(res[untrained]["every"][n][m], res["interp"]["every"][n][m], rel_tol=1e-3)
    assert res["interp"]["every"]["20"]["L2P"] > res["interp"]["every"]["5"]["L2P"]  # sparser keys, harder
    # per-window scores average to the benchmark's numbers; bands sort windows by the baseline's error
    for m in ("L2Q", "L2P"):
        assert math.isclose(np.mean(res["zero"]["every"]["5"]["windows"][m]), res["zero"]["every"]["5"][m],
                            rel_tol=1e-9)
    bands = keys.by_difficulty(res["zero"], res["interp"], bands=3)
    rows = bands["20"]
    assert [r["windows"] for r in rows] == [len(x) for x in np.array_split(np.arange(res["interp"]["windows"]), 3)]
    assert rows[0]["baseline_L2P"] < rows[1]["baseline_L2P"] < rows[2]["baseline_L2P"]
    assert all(r["L2P"] > 1 for r in rows) and rows[-1]["share_worse"] > 0.5  # holding a key is worse
    same = keys.by_difficulty(res[untrained], res["interp"], bands=3)["5"]
    assert all(math.isclose(r["L2P"], 1.0, rel_tol=1e-2) for r in same)
    assert "band" in keys.format_difficulty(bands, "zero", "interp")
    with pytest.raises(ValueError, match="bands"):
        keys.by_difficulty(res["zero"], res["interp"], bands=0)
    n = res["interp"]["windows"]  # more bands than windows: empty bands had NaN means (and --json wrote NaN)
    with pytest.raises(ValueError, match=f"--bands {n + 1}: more bands than the {n} windows"):
        keys.by_difficulty(res["zero"], res["interp"], bands=n + 1)
    w, mean, std = inbetween.protocol_windows("hand", files, data_root)
    known, frames = keys.keyed_every(5)
    truth = lambda batch, k: (w.rotations[:, : k.size].copy(), w.translations[:, : k.size].copy())  # noqa: E731
    gq, pq, gp, pp, _ = inbetween.fill_and_score(truth, w, known, frames)
    assert gq.shape[1] == len(frames) and np.allclose(pq, gq) and np.allclose(pp, gp)


def test_keys_bands_without_a_baseline_is_refused(capsys) -> None:
    from anyfill.cli import main

    assert main(["bench", "keys", "--skeleton", "hand", "--method", "interp", "--bands", "3"]) == 2
    assert "--baseline other than --method" in capsys.readouterr().err
    bad = ["bench", "keys", "--skeleton", "hand", "--method", "hand", "--baseline", "interp", "--bands", "-1"]
    assert main(bad) == 2
    assert "--bands -1" in capsys.readouterr().err


def test_keys_wrist_known_is_for_the_hand(capsys) -> None:
    from anyfill.cli import main

    assert main(["bench", "keys", "--skeleton", "body", "--method", "interp", "--wrist", "known"]) == 2
    assert "hand skeleton" in capsys.readouterr().err


def test_keys_wrist_known_gives_the_wrist_and_scores_the_fingers_in_its_frame(data_root: Path) -> None:
    """``--wrist known``: every method sees the wrist on every frame and the fingers only at the keys; the
    scores are the fingers' own in the wrist's frame (finite, zero for the truth, not the keyed mode's), and
    interp and Bezier fill each finger exactly as they do with the wrist keyed (channels are independent)."""
    from training.bench import keys

    w = windows.cut(inbetween.load_protocol_clips([data_root / HAND_TEST_FILE], HAND), inbetween.WINDOW,
                    inbetween.STRIDE)
    pick = np.sort(np.random.default_rng(0).choice(len(w), 6, replace=False))
    w = windows.Windows(HAND, w.fps, w.rotations[pick], w.translations[pick], [w.sources[i] for i in pick])
    known, frames = keys.keyed_every(10)
    cells, scored = keys.keyed_cells(10, HAND, "known")
    assert cells.shape == (inbetween.WINDOW, HAND.n_joints) and np.array_equal(scored, frames)
    assert cells[:, 0].all() and (cells[:, 1:] == known[:, None]).all()
    assert (keys.keyed_cells(10, HAND, "keyed")[0] == known[:, None]).all()
    with pytest.raises(ValueError, match="hand"):
        keys.keyed_cells(10, BODY, "known")
    with pytest.raises(ValueError, match="wrist"):
        keys.keyed_cells(10, HAND, "elbow")
    two, _ = keys.keyed_cells(10, HAND, "known", partial=2)  # thumb and index keyed, the rest never
    thumb_index = [j for j, name in enumerate(HAND.joints) if name.startswith(("THUMB", "INDEX"))]
    assert two[:, 0].all() and (two[:, thumb_index] == known[:, None]).all()
    assert not np.delete(two, [0, *thumb_index], axis=1).any()
    assert [HAND.joints[j] for j in keys.fingertips(HAND)] == [
        "THUMB_IP_FE", "INDEX_DIP_FE", "MIDDLE_DIP_FE", "RING_DIP_FE", "PINKY_DIP_FE"]

    seen = []
    tip_mean, tip_std = np.zeros((5, 3)), np.ones((5, 3))
    for name in ("interp", "bezier"):
        base = inbetween.resolve_method(name, HAND)

        def spy(batch, k, base=base):
            seen.append((batch, k))
            return base(batch, k)

        got = keys.score_every(spy, w, 10, tip_mean, tip_std, wrist="known")
        batch, k = seen[-1]
        assert np.array_equal(k, cells)
        assert np.isfinite(batch.rotations[:, :, 0]).all() and np.isfinite(batch.translations[:, :, 0]).all()
        assert np.isnan(batch.rotations[:, ~known, 1:]).all() and np.isfinite(batch.rotations[:, known]).all()
        assert all(np.isfinite(got[m]) and got[m] > 0 for m in ("L2Q", "L2P", "tips"))
        plain = keys.score_every(base, w, 10, np.zeros((HAND.n_joints, 3)), np.ones((HAND.n_joints, 3)))
        assert not math.isclose(got["L2Q"], plain["L2Q"], rel_tol=1e-3)  # the keyed mode scores the wrist too
        # the fingers' curves do not depend on the wrist for these fills: the same fill as with the wrist keyed
        rot_k, trans_k, _ = inbetween.fill_and_score(base, w, known, frames, local=True)
        rot_c, trans_c, _ = inbetween.fill_and_score(base, w, cells, frames, local=True)
        assert np.allclose(np.abs(np.sum(rot_k[:, :, 1:] * rot_c[:, :, 1:], -1)), 1.0)
        assert np.allclose(rot_c[:, :, 0], w.rotations[:, : len(known), 0])  # the wrist as given
    truth = lambda batch, k: (w.rotations[:, : len(k)].copy(), w.translations[:, : len(k)].copy())  # noqa: E731
    zero = keys.score_every(truth, w, 10, tip_mean, tip_std, wrist="known")
    assert zero["L2Q"] < 1e-9 and zero["L2P"] < 1e-9 and zero["tips"] < 1e-9
    # partly keyed: a finger never keyed is held in the rest pose by interp, its bone offsets given
    rot_p, trans_p, _ = inbetween.fill_and_score(inbetween.resolve_method("interp", HAND), w, two, frames, local=True)
    never = np.delete(np.arange(HAND.n_joints), [0, *thumb_index])
    assert np.allclose(rot_p[:, :, never], [0, 0, 0, 1])
    assert np.allclose(trans_p[:, :, never], w.translations[:, : len(known)][:, :, never])
    assert keys.score_every(truth, w, 10, tip_mean, tip_std, wrist="known", partial=2)["L2Q"] < 1e-9


def test_pop_ratio_compares_the_steps_at_the_keys_with_the_motion_own():
    """1 for the ground truth itself; a fill that leaps into a key shows its leap over the truth's step there;
    only steps that touch a key count."""
    from training.bench.inbetween import pop_ratio

    frames = np.arange(10, 16)  # key 10, gap 11..14, key 15
    gt = np.zeros((2, 6, 3, 3))
    gt[..., 0] = frames[None, :, None]  # every joint moves 1 per frame
    assert pop_ratio(gt, gt, frames, [10, 15]) == pytest.approx(1.0)
    leap = gt.copy()
    leap[:, 4, :, 0] -= 2.0  # the last filled frame lags: the step into key 15 is 3, not 1
    assert pop_ratio(gt, leap, frames, [10, 15]) == pytest.approx(3.0)
    inside = gt.copy()
    inside[:, 2, :, 0] += 5.0  # a bump in the middle of the gap is not a pop
    assert pop_ratio(gt, inside, frames, [10, 15]) == pytest.approx(1.0)


def test_perturbed_conventions_move_no_joint_turn_the_keys_and_are_turned_back(body_windows: windows.Windows) -> None:
    """``--perturb-conventions``: the method sees turned keys (same joint positions), its fill is turned back
    before scoring; interpolation (slerp is bi-invariant) scores the same; the turns are seeded."""
    from training.motion.skeleton import forward_kinematics

    conv = inbetween.Conventions(45.0, 15.0, seed=3)
    mean, std = np.zeros((BODY.n_joints, 3)), np.ones((BODY.n_joints, 3))
    gap = 15
    seen = []

    def oracle(batch: windows.Windows, known: np.ndarray):
        seen.append(batch)
        # the true answer in the turned conventions: what a perfect model of the turned rig gives
        from training.motion.conventions import apply_twists

        n = known.size
        return apply_twists(body_windows.rotations[:, :n], body_windows.translations[:, :n],
                            conv.angles(BODY, len(body_windows)), BODY)

    score, _ = inbetween.score_gap(oracle, body_windows, gap, mean, std, conv)
    assert score.L2Q < 1e-9 and score.L2P < 1e-9 and score.NPSS < 1e-9
    known = inbetween.protocol_known(gap)
    b = seen[0]
    _, p_seen = forward_kinematics(b.rotations[:, known], b.translations[:, known], BODY.parents)
    _, p_true = forward_kinematics(body_windows.rotations[:, : known.size][:, known],
                                   body_windows.translations[:, : known.size][:, known], BODY.parents)
    assert np.abs(p_seen - p_true).max() < 1e-6
    assert not np.allclose(b.rotations[:, known], body_windows.rotations[:, : known.size][:, known], atol=1e-3)
    np.testing.assert_array_equal(conv.angles(BODY, 4), inbetween.Conventions(45.0, 15.0, seed=3).angles(BODY, 4))

    interp = inbetween.resolve_method("interp", BODY)
    plain, _ = inbetween.score_gap(interp, body_windows, gap, mean, std)
    turned, _ = inbetween.score_gap(interp, body_windows, gap, mean, std, conv)
    for m in ("L2Q", "L2P", "NPSS"):
        assert abs(getattr(turned, m) - getattr(plain, m)) <= 1e-6 * max(getattr(plain, m), 1e-9)
    # a method that holds the keys' local rotations as captured is hurt: the bench sees convention errors
    def captured_locals(batch: windows.Windows, known: np.ndarray):
        rot, trans = interp(batch, known)
        n = known.size
        return body_windows.rotations[:, :n].copy(), trans

    assert inbetween.score_gap(captured_locals, body_windows, gap, mean, std, conv)[0].L2Q > 0.01
