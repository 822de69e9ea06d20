"""Training windows come from the training split only; statistics from training windows only."""

import numpy as np
import pytest

from training.inbetween.datasets import MaskMix, WindowSampler, feature_stats, load_clips, rest_offsets, sample_masks
from training.motion.splits import split_files

pytestmark = pytest.mark.data


@pytest.mark.slow  # reads every body training file (about 20 s)
def test_body_training_and_validation_clips_come_from_distinct_training_files(data_root):
    test = {str(p) for p in split_files("body", "test", data_root)}
    train = load_clips("body", "train", data_root, fps=(30.0,))
    val = load_clips("body", "val", data_root, fps=(30.0,))
    train_names, val_names = {c.name for c in train}, {c.name for c in val}
    assert train_names and val_names and not (train_names & val_names)
    assert not ((train_names | val_names) & test)
    assert all(abs(c.fps - 30.0) < 1e-3 for c in train)


@pytest.mark.slow  # every training take read
def test_hand_clips_are_training_takes_mirrored_and_at_each_rate(data_root):
    clips = load_clips("hand", "val", data_root, fps=(30.0, 40.0))
    assert all("teapot3" not in c.name for c in clips)  # the test take
    assert {round(c.fps, 3) for c in clips} == {30.0, 40.0}
    # both the capture and its mirror image: WRIST x positions of opposite signs for the same take
    names = {c.name for c in clips}
    assert len(names) == 10  # 5 takes x 2 hands


@pytest.mark.slow  # about 4 s
def test_speed_and_reverse_augment_the_hand_clips(data_root):
    """``speeds`` adds each clip played faster or slower (resampled to the training rate), ``reverse`` each
    played backwards; the captured clips stay as they were."""
    plain = load_clips("hand", "val", data_root, fps=(30.0,))
    aug = load_clips("hand", "val", data_root, fps=(30.0,), speeds=(1.0, 1.25), reverse=True)
    assert all(abs(c.fps - 30.0) < 1e-3 for c in aug)
    frames = sum(c.n_frames for c in plain)
    # as captured (4 phases of the 120 fps capture), played 1.25x as fast (150 fps: 5 phases), both backwards
    assert len(aug) == 2 * (len(plain) + len(plain) * 5 // 4)
    assert sum(c.n_frames for c in aug) == 4 * frames
    first = plain[0]
    same = [c for c in aug if c.n_frames == first.n_frames and np.allclose(c.rotations, first.rotations)]
    backwards = [c for c in aug if c.n_frames == first.n_frames and np.allclose(c.rotations, first.rotations[::-1])]
    assert same and backwards


@pytest.mark.slow
def test_statistics_are_from_training_windows_and_masks_are_consistent(data_root):
    sampler = WindowSampler(load_clips("hand", "val", data_root, fps=(30.0,)), 65)
    stats = feature_stats(sampler, np.random.default_rng(0), n=64)
    assert stats["rot_mean"].shape == (17, 6) and (stats["rot_std"] > 0).all()
    rng = np.random.default_rng(1)
    known, target = sample_masks(rng, 200, 65, 17, MaskMix())
    assert not (known & target).any()
    assert known.any(axis=(1, 2)).all() and target.any(axis=(1, 2)).all()


def test_the_animators_mask_keys_every_nth_frame():
    """``MaskMix(every=...)``: whole poses keyed every n frames (n from 2 to 20, any phase), every other cell a
    target; the spacings cover the range."""
    known, target = sample_masks(np.random.default_rng(0), 300, 65, 22, MaskMix(0, 0, 0, 0, every=1.0))
    assert (known ^ target).all()  # every cell is one or the other
    assert (known.all(-1) | ~known.any(-1)).all()  # whole poses
    steps = set()
    for k in known.any(-1):
        frames = np.flatnonzero(k)
        gaps = set(np.diff(frames).tolist())
        assert len(gaps) == 1 and frames[0] < next(iter(gaps))  # regular, starting within the first step
        steps |= gaps
    assert steps == set(range(2, 21))


def test_the_full_rigs_hand_mask_knows_the_wrist_and_keys_the_fingers_every_nth_frame():
    """``MaskMix(wrist=...)``: the wrist (the root) known on every frame; each finger keyed every n frames (n
    from 2 to 20, any phase), or partly: a finger keyed at the keys, never, or on every frame, never all
    known throughout. With every finger keyed and the phase 0 the window is ``bench keys --wrist known``'s."""
    from training.bench.keys import keyed_cells
    from training.motion.skeleton import get_schema

    hand = get_schema("hand")
    branches = hand.branches()
    known, target = sample_masks(np.random.default_rng(0), 400, 65, 17, MaskMix(0, 0, 0, 0, wrist=1.0),
                                 root=hand.root, branches=branches)
    assert (known ^ target).all()
    assert known[:, :, hand.root].all()
    steps, partly, states = set(), 0, set()
    for k in known:
        per_branch = []
        for b in branches:
            frames = k[:, b]
            assert (frames.all(-1) | ~frames.any(-1)).all()  # a finger keyed whole
            per_branch.append("every" if frames.all() else "never" if not frames.any() else "keys")
        assert set(per_branch) != {"every"}  # something to fill
        states |= set(per_branch)
        partly += set(per_branch) != {"keys"}
        keyed = [b for b, s in zip(branches, per_branch, strict=True) if s == "keys"]
        if keyed:
            frames = np.flatnonzero(k[:, keyed[0][0]])
            gaps = set(np.diff(frames).tolist())
            assert len(gaps) == 1 and frames[0] < next(iter(gaps))  # regular, starting within the first step
            assert all((k[:, b[0]] == k[:, keyed[0][0]]).all() for b in keyed)  # the same keys for each
            steps |= gaps
            if set(per_branch) == {"keys"} and frames[0] == 0:
                assert (k == keyed_cells(next(iter(gaps)), hand, "known")[0]).all()
    assert steps == set(range(2, 21)) and states == {"keys", "never", "every"}
    assert 0.4 < partly / len(known) < 0.6


@pytest.mark.slow  # reads the hand's validation takes (about 20 s on a busy CPU)
def test_calibration_scores_the_hand_as_a_full_rig_keys_it(data_root):
    """The masks calibration chooses the gap gates and the kept corrections on: for the hand, the wrist known
    on every frame and the fingers keyed (a full rig); for the body, whole poses every n frames (as before)."""
    from training.inbetween.config import AnyOrderTrainConfig
    from training.inbetween.task import AnyOrderData, keyed_as_animators_do

    assert keyed_as_animators_do("body") == MaskMix(0, 0, 0, 0, every=1)
    assert keyed_as_animators_do("hand") == MaskMix(0, 0, 0, 0, wrist=1)
    cfg = AnyOrderTrainConfig(skeleton="hand", val_windows=16, batch_size=8, data_root=str(data_root))
    val, keyed = AnyOrderData(cfg).validation_batches()
    assert len(val) == len(keyed) == 2
    for b in keyed:
        known = b["known"].numpy()
        assert known[:, :, 0].all() and not known[:, :, 1:].all()
    assert not all(b["known"][:, :, 0].all() for b in val)


@pytest.mark.parametrize("skeleton", ["hand", pytest.param("body", marks=pytest.mark.slow)])  # body: about 10 s
def test_rest_offsets_are_the_reference_side_and_match_the_shipped_cards(data_root, skeleton):
    """A card's rest offsets drive the extension's retargeting: they must be one real skeleton (hands: the
    right hand), not the mean of a hand and its mirror image, whose sideways offsets cancel (that made the
    Blender extension mis-align a real right-hand rig and fill it 9 skeleton sizes off)."""
    import json

    from backend.rest import REST_OFFSETS
    from training.inbetween.checkpoint import card_path, resolve_path

    rest = rest_offsets(skeleton, data_root)
    reference = np.array(REST_OFFSETS[skeleton])
    bones = slice(2, None)  # the moving joints' entries are only neutral defaults
    assert np.abs(rest[bones] - reference[bones]).max() < 5e-3
    if skeleton == "hand":
        assert (rest[1:, 0] < 0).sum() >= 12  # the right hand's fingers lie towards -x
    card = json.loads(card_path(resolve_path(skeleton)).read_text())
    assert np.abs(np.array(card["schema"]["rest_offsets"])[bones] - reference[bones]).max() < 5e-3


@pytest.mark.parametrize(("text", "says"), [
    ("{}", "no list of bandai test files"),
    ('{"bandai": {"test": []}, "manipnet": {"test": []}}', "no list of manipnet train files"),
    ("{not json", "not a valid JSON file"),
])
def test_a_splits_file_without_the_splits_is_named(tmp_path, text, says):
    """A data folder whose splits.json lacks a split (it said only ``manipnet``: a bare KeyError) or is not JSON."""
    (tmp_path / "splits.json").write_text(text)
    with pytest.raises(ValueError, match=f"{tmp_path / 'splits.json'}: {says}"):
        split_files("hand", "test", tmp_path)
