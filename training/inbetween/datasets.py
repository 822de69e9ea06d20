"""Training data for the fill models: windows cut from the training split, with known/target masks.

Only files of the training split (``splits.json``) are ever read here; validation data is carved out
of them (bodies: every 10th training file; hands: the last 15 % of each take), and normalisation
statistics come from training windows only. Each batch is built whole and vectorised (canonical frame,
6D, interpolation baseline of the known cells), so one CPU core keeps up with training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.inbetween.features import (
    DEFAULT_FEATURES,
    FeatureSpec,
    canonical_batch,
    canonical_from_known,
    to_canonical,
)
from training.motion import clip as clip_io
from training.motion.conventions import apply_twists, random_twists
from training.motion.skeleton import Schema, get_schema
from training.motion.splits import split_files
from training.motion.windows import at_protocol_rate


@dataclass(frozen=True)
class RigConventions:
    """An augmentation: each training window's joints turned about their own bone axes by random constant
    angles, as a rig of other conventions holds them (moving no joint position; see
    :func:`training.motion.conventions.apply_twists`)."""

    twist_deg: float = 0.0  # largest twist of a joint (uniform in +-this; 0: off)
    hinge_deg: float = 0.0  # largest tilt of a hinge (a knee: its thigh and shin turned together)
    share: float = 1.0  # the share of windows turned (the others as captured)

    @property
    def on(self) -> bool:
        return self.share > 0 and (self.twist_deg > 0 or self.hinge_deg > 0)


@dataclass
class MaskMix:
    """How often each kind of known/target pattern is drawn while training."""

    inbetween: float = 0.45  # context frames, a gap, a target frame (the benchmark's pattern)
    keyframes: float = 0.25  # a few full keys anywhere, fill the rest
    cells: float = 0.15  # any subset of cells (any-order sampling states)
    pose: float = 0.15  # partially keyed frames, half of them a single pose alone (pose completion)
    every: float = 0.0  # a key every n frames (n from 2 to 20, any phase): how animators key a shot
    wrist: float = 0.0  # the root known on every frame, the rest keyed every n frames or partly (a full rig's hand)


WRIST_PARTLY = 0.5  # share of the ``wrist`` windows whose branches (fingers) are keyed partly, not all at the keys
# a partly keyed branch: keyed at the keys, never known, or known on every frame (a finger the rig drives)
BRANCH_STATES = (0.5, 0.35, 0.15)


def wrist_known(rng: np.random.Generator, t: int, j: int, root: int, branches: list[list[int]]) -> np.ndarray:
    """One window's known cells (t, j) for a full rig's hand (``MaskMix.wrist``): the root (the hand's wrist,
    which the arm gives) known on every frame, the other joints keyed every n frames (n from 2 to 20, any
    phase, as ``MaskMix.every``), as ``anyfill bench keys --wrist known`` keys them; in :data:`WRIST_PARTLY` of
    the windows each branch (a finger) is instead keyed at the keys, never known or known on every frame
    (:data:`BRANCH_STATES`), at least one branch not known throughout (``--partial K``: K fingers keyed)."""
    step = int(rng.integers(2, 21))
    known = np.zeros((t, j), dtype=bool)
    known[int(rng.integers(0, step)) :: step] = True
    if branches and rng.random() < WRIST_PARTLY:
        states = rng.choice(3, size=len(branches), p=BRANCH_STATES)
        if (states == 2).all():
            states[int(rng.integers(0, len(branches)))] = 0
        for b, state in zip(branches, states, strict=True):
            if state > 0:
                known[:, b] = state == 2
    known[:, root] = True
    return known


def load_clips(skeleton: str, part: str, root=None, fps: tuple[float, ...] = (30.0,), mirror: bool = True,
               speeds: tuple[float, ...] = (1.0,), reverse: bool = False) -> list[clip_io.Clip]:
    """Training clips ('train' or 'val' part of the training split) at each of the given frame rates.
    Hands are also mirrored (left <-> right), doubling the data. Augmentations: each clip played at each of
    the given ``speeds`` (1 = as captured; leave it out and the clip as captured is not used) and, with
    ``reverse``, each of those also backwards."""
    schema = get_schema(skeleton)
    files = split_files(skeleton, "train", root)
    out: list[clip_io.Clip] = []
    for i, f in enumerate(files):
        if skeleton == "body" and (i % 10 == 0) != (part == "val"):
            continue
        c = clip_io.load(f, schema)
        if skeleton != "body":
            cut_at = int(c.n_frames * 0.85)
            c = c.frames(slice(0, cut_at)) if part == "train" else c.frames(slice(cut_at, None))
        variants = [c, c.mirrored()] if (mirror and skeleton == "hand") else [c]
        variants = [v.at_speed(s) if s != 1.0 else v for v in variants for s in speeds]
        variants += [v.reversed() for v in variants] if reverse else []
        for v in variants:
            for rate in fps:
                out.extend(at_protocol_rate(v, rate))
    return out


def rest_offsets(skeleton: str, root=None) -> np.ndarray:
    """Each joint's rest-pose local translation (J, 3), as written into a model's card for retargeting: the
    mean over the training files of the schema's reference side, never mirrored (hands: right hands; a left
    hand is its mirror image). The windows the network trains on mix both sides, so their mean would
    cancel the hand's sideways offsets."""
    schema = get_schema(skeleton)
    files = split_files(skeleton, "train", root)
    if skeleton == "hand":
        files = [f for f in files if "right" in Path(f).name.lower()]
    if not files:
        raise ValueError(f"no training files of the reference side for {skeleton}")
    return np.concatenate([clip_io.load(f, schema).translations for f in files]).mean(axis=0)


def sample_masks(rng: np.random.Generator, n: int, t: int, j: int, mix: MaskMix, max_gap: int = 50,
                 root: int = 0, branches: list[list[int]] | None = None):
    """Known and target cell masks (n, t, j). Cells that are neither are absent from the window. ``root`` and
    ``branches`` (the schema's root and :meth:`~training.motion.skeleton.Schema.branches`) are what the
    ``wrist`` pattern keys (:func:`wrist_known`)."""
    known = np.zeros((n, t, j), dtype=bool)
    target = np.zeros((n, t, j), dtype=bool)
    p = np.array([mix.inbetween, mix.keyframes, mix.cells, mix.pose, mix.every, mix.wrist])
    kinds = rng.choice(len(p), size=n, p=p / p.sum())
    for i, kind in enumerate(kinds):
        if kind == 5:
            known[i] = wrist_known(rng, t, j, root, branches or [])
            target[i] = ~known[i]
        elif kind == 0:
            ctx = int(rng.integers(1, 11))
            gap = int(rng.integers(1, min(max_gap, t - ctx - 1) + 1))
            known[i, :ctx] = True
            known[i, ctx + gap] = True
            target[i, ctx : ctx + gap] = True
        elif kind == 4:
            step = int(rng.integers(2, 21))
            known[i, int(rng.integers(0, step)) :: step] = True
            target[i] = ~known[i]
        else:
            n_keys = int(rng.integers(2, 9))
            keys = rng.choice(t, size=n_keys, replace=False)
            known[i, keys] = True
            if kind == 2:
                known[i] |= rng.random((t, j)) < rng.uniform(0.05, 0.9)
            elif kind == 3:
                if rng.random() < 0.5:  # a single pose to complete: one frame present, some joints known
                    f = int(rng.integers(0, t))
                    known[i] = False
                    known[i, f] = rng.random(j) < rng.uniform(0.1, 0.8)
                    known[i, f, 0] |= rng.random() < 0.7
                    if not known[i, f].any():
                        known[i, f, int(rng.integers(0, j))] = True
                    target[i, f] = ~known[i, f]
                    continue
                frames = rng.choice(t, size=int(rng.integers(1, 6)), replace=False)
                known[i, frames] |= rng.random((len(frames), j)) < rng.uniform(0.2, 0.8)
            target[i] = ~known[i]
    return known, target


class WindowSampler:
    """Draws batches of random windows from clips, with masks, in the model's feature space."""

    def __init__(
        self, clips: list[clip_io.Clip], length: int, mix: MaskMix | None = None, max_gap: int = 50,
        spec: FeatureSpec = DEFAULT_FEATURES, conventions: RigConventions | None = None,
    ):
        if not clips:
            raise ValueError("no clips to sample windows from")
        self.clips = [c for c in clips if c.n_frames >= length]
        if not self.clips:
            raise ValueError(f"no clip has {length} frames")
        self.schema: Schema = clips[0].schema
        self.length = length
        self.mix = mix or MaskMix()
        self.max_gap = max_gap
        self.conventions = conventions or RigConventions()
        self.spec = spec.for_skeleton(self.schema.name)  # what the model trained on these windows reads
        sizes = np.array([c.n_frames - length + 1 for c in self.clips], dtype=np.float64)
        self.p = sizes / sizes.sum()

    def windows(self, rng: np.random.Generator, n: int):
        """n random windows as local rotations (n, T, J, 4), translations (n, T, J, 3) and fps (n,), turned by
        random rig conventions where the sampler has them."""
        idx = rng.choice(len(self.clips), size=n, p=self.p)
        rot, trans, fps = [], [], []
        for i in idx:
            c = self.clips[i]
            s = int(rng.integers(0, c.n_frames - self.length + 1))
            rot.append(c.rotations[s : s + self.length])
            trans.append(c.translations[s : s + self.length])
            fps.append(c.fps)
        rot, trans = np.stack(rot), np.stack(trans)
        rc = self.conventions
        if rc.on:  # drawn only when on, so runs without it see the windows they always did
            angles = random_twists(rng, n, self.schema, rc.twist_deg, rc.hinge_deg, share=rc.share)
            rot, trans = apply_twists(rot, trans, angles, self.schema)
        return rot, trans, np.array(fps)

    def batch(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        rot, trans, fps = self.windows(rng, n)
        known, target = sample_masks(rng, n, self.length, self.schema.n_joints, self.mix, self.max_gap,
                                     self.schema.root, self.schema.branches())
        return make_batch(rot, trans, fps, known, target, self.schema, self.spec)


def make_batch(rot, trans, fps, known, target, schema: Schema, spec: FeatureSpec = DEFAULT_FEATURES
               ) -> dict[str, np.ndarray]:
    """Features of windows with masks: ground truth and the known-cells-only interpolation baseline,
    all in each window's canonical frame (computed from known cells only)."""
    spec = spec.for_skeleton(schema.name)
    canon = canonical_from_known(rot, trans, known, schema, spec.frame)
    rot_c, trans_c = to_canonical(rot, trans, canon, schema)
    times = np.arange(rot.shape[1])[None, :] / np.asarray(fps, dtype=np.float64)[:, None]
    return canonical_batch(rot_c, trans_c, times, known, target, schema, spec)


ROT_STD_FLOOR = 0.05  # 6D entries lie in [-1, 1]


def feature_stats(sampler: WindowSampler, rng: np.random.Generator, n: int = 4096) -> dict[str, np.ndarray]:
    """Mean and std of the 6D rotations (J, 6) and moving positions (M, 3) over training windows."""
    rot, trans, fps = sampler.windows(rng, n)
    t = sampler.length
    known = np.ones((n, t, sampler.schema.n_joints), dtype=bool)
    b = make_batch(rot, trans, fps, known, ~known, sampler.schema, sampler.spec)
    r = b["rot6d"].reshape(-1, *b["rot6d"].shape[2:])
    p = b["pos"].reshape(-1, *b["pos"].shape[2:])
    # floors: a component that barely varies in training (a hinge joint's off-axis 6D entries, a root that
    # stays on the floor) must not turn a small deviation at fill time into a huge network input
    pos_floor = 0.05 * float(p.std(0).max())
    return {
        "rot_mean": r.mean(0), "rot_std": np.maximum(r.std(0), ROT_STD_FLOOR),
        "pos_mean": p.mean(0), "pos_std": np.maximum(p.std(0), pos_floor),
        "offsets": b["offsets"].mean(0),
    }
