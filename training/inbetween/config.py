"""The configurations of the any-order models, in plain dataclasses: what a model card stores, readable
without torch (the card's checks and the torch-free inference runtime read them before, or without, any network),
and the training run's settings with their check (``anyfill train anyorder --print-config`` reads them without
Lightning)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from training.checks import at_least, divides, one_of, positive_list, whole, within
from training.inbetween.features import FeatureSpec


@dataclass
class AnyOrderConfig:
    d_model: int = 192
    n_heads: int = 4
    n_enc_layers: int = 3  # query variant: encoder depth; triples variant: unused
    n_dec_layers: int = 3  # query variant: decoder depth; triples variant: depth of the causal stack
    ff_mult: int = 4
    dropout: float = 0.1
    n_freqs: int = 16  # Fourier frequencies per position coordinate
    min_period: float = 0.05  # shortest and longest period of the Fourier features, in position units
    max_period: float = 20.0


@dataclass
class MotionConfig:
    skeleton: str = "hand"
    n_joints: int = 17
    n_moving: int = 1
    variant: str = "query"  # query | triples
    max_frames: int = 65  # training window length; longer windows are filled piecewise
    core: AnyOrderConfig = field(default_factory=AnyOrderConfig)
    kappa_offset: float = 4.0  # log kappa = head output + offset: starts the spread near 0.15 rad
    features: FeatureSpec = field(default_factory=FeatureSpec)  # what the model reads of a window (frame settled)
    key_gate: float = 0.0  # > 0: corrections fade in with the time to the joint's nearest key (seconds; learned)
    # the share of the learned corrections of the key curve that is kept, per joint's rotation and for the moving
    # positions: set after training where a correction does not pay on held-out takes (empty: all keep 1)
    rot_scale: tuple[float, ...] = ()
    pos_scale: float = 1.0
    # > 0: corrections of a keyed joint's curve fade where the curve hardly moves, by 1 - exp(-(v / motion_gate)^2),
    # v the curve's speed at the frame in feature standard deviations per second (mean over joints): near-still
    # motion is where the curve is already right and a correction is noise (chosen by calibration)
    motion_gate: float = 0.0
    # > 0: corrections of a cell between two keys of its joint fade with the length L of that gap, by
    # 1 - exp(-(L / gap_gate)^2), seconds, for the rotations and for the moving positions: on gaps of a frame or
    # two the curve through the keys is already right, and a correction there is the network's noise, which
    # for the root's position (standardised by its whole path's spread) is centimetres (chosen by calibration)
    gap_gate_rot: float = 0.0
    gap_gate_pos: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.features, dict):  # JSON cards give a dict
            self.features = FeatureSpec(**self.features)
        self.features = self.features.for_skeleton(self.skeleton)
        self.rot_scale = tuple(float(x) for x in self.rot_scale)  # JSON cards give lists
        for name in ("motion_gate", "gap_gate_rot", "gap_gate_pos"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be 0 (off) or above; got {getattr(self, name)}")
        if self.rot_scale and len(self.rot_scale) != self.n_joints:
            raise ValueError(f"rot_scale has {len(self.rot_scale)} entries; the skeleton has {self.n_joints} joints")

    @property
    def known_width(self) -> int:
        """The width of a known frame's features: each joint's 6D rotation, the moving joints' positions and
        every cell's known bit."""
        j, m = self.n_joints, self.n_moving
        return j * 6 + m * 3 + j + m

    @property
    def query_width(self) -> int:
        """The width of a target frame's features: a known frame's, the curve through the keys, target and
        has-key bits and (with ``key_velocity``) the displacements carried from the previous and next keys."""
        j, m = self.n_joints, self.n_moving
        width = self.known_width + j * 6 + m * 3 + j + j + m
        return width + (2 * (j * 6 + m * 3) if self.features.key_velocity else 0)

    @classmethod
    def from_card(cls, config: dict[str, Any]) -> MotionConfig:
        """The config a model card stores (its ``config``), cards of every age alike."""
        c = dict(config)
        c["core"] = AnyOrderConfig(**c["core"])
        c["features"] = FeatureSpec.from_card(c)
        return cls(**c)


@dataclass
class AnyOrderTrainConfig:
    skeleton: str = "hand"  # hand (ManipNet, 17 joints) or body (Bandai, 22 joints and the root's position)
    variant: str = "query"  # query (encoder-decoder: target queries read the known cells) or triples (decoder-only)
    d_model: int = 192  # the transformer's width
    n_heads: int = 4  # attention heads
    n_enc_layers: int = 3  # encoder layers of the query variant (0: none; the triples variant has no encoder)
    n_dec_layers: int = 3  # decoder layers (query) / causal layers (triples)
    dropout: float = 0.1  # dropout inside the transformer
    length: int = 65  # frames per training window (the benchmark's window)
    # what the model reads of a window (features.FeatureSpec: frame, key_velocity, base_velocity, across_keys,
    # hermite_positions, velocity_memory, clamp_keys, spline_keys, rotation_curve); each setting is also given by
    # its own name (base_velocity=0.5)
    features: FeatureSpec = field(default_factory=FeatureSpec)
    key_gate: float = 0.0  # > 0: corrections fade in away from keys over this time (seconds, learned per joint)
    fps: tuple[float, ...] = (24.0, 30.0, 40.0)  # training rates: time is continuous, so mix a few
    speeds: tuple[float, ...] = (1.0,)  # augmentation: training clips played at each of these speeds (1: as captured)
    reverse: bool = False  # augmentation: training clips also played backwards
    twist_deg: float = 0.0  # augmentation: single-child joints turned about their own bone by up to +-this (deg)
    hinge_deg: float = 0.0  # augmentation: hinges (knees) tilted by up to this (deg), thigh and shin turned together
    conventions_share: float = 1.0  # the share of training windows given those turns (validation stays as captured)
    batch_size: int = 64  # windows per training batch
    steps_per_epoch: int = 500  # training batches per epoch (windows are drawn at random, so an epoch is a count)
    lr: float = 1e-3  # AdamW's peak learning rate (linear warm-up, then cosine decay)
    weight_decay: float = 0.01  # AdamW's weight decay
    warmup_steps: int = 300  # steps of linear learning-rate warm-up (at most half the run)
    w_von_mises: float = 0.05  # weight of the rotations' von Mises-Fisher likelihood (learns the spread: entropy)
    w_angular: float = 1.0  # weight of 2 (1 - cos) of the angle between predicted and true local rotations
    w_position: float = 0.05  # weight of the Gaussian likelihood of moving joints' positions
    w_fk: float = 1.0  # forward-kinematics positions relative to the root
    w_root: float = 1.0  # moving joints' positions (the root trajectory)
    w_top_angle: float = 0.0  # extra angular term on the top joint (hands: the wrist, most of L2Q)
    w_l2q: float = 0.0  # the benchmark's L2Q itself: per frame, the norm over joints of global quaternion errors
    # > 0: each training window's fitting terms weigh 1 / (the curve's error there + this share of the batch's
    # mean curve error), so near-still windows, where the curve is nearly right, are fitted as closely,
    # relative to that error, as fast ones (the benchmarks' ratio to interpolation, window by window)
    relative_floor: float = 0.0
    # how often each known/target pattern is drawn in training (validation always uses the defaults)
    mix_inbetween: float = 0.45  # share of windows with a gap between context frames (the benchmark's pattern)
    mix_keyframes: float = 0.25  # share of windows with a few (2-8) full keys anywhere
    mix_cells: float = 0.15  # share of windows with random known cells
    mix_pose: float = 0.15  # share of windows completing a pose from some of its joints
    mix_every: float = 0.0  # share of windows keyed every n frames (n from 2 to 20), as animators key shots
    mix_wrist: float = 0.0  # share with the root known on every frame, the rest keyed every n or partly (a rig's hand)
    calibrate: bool = False  # at export: keep only the share of each correction that pays on the validation takes
    init_from: str | None = None  # start from a model file's weights (e.g. a shipped model) instead of random
    data_root: str | None = None  # folder holding splits.json; none: ../shared/data
    data_seed: int = 0  # seeds the feature statistics and the fixed validation windows
    val_windows: int = 512  # validation windows (drawn once from the validation takes)
    num_workers: int = 0  # processes making training batches (a GPU outruns one; each draws its own windows)


# the shortest training window: the training masks' in-between pattern (datasets.sample_masks) takes up to
# MAX_CONTEXT context frames, then a gap of at least one frame and the target frame after it
MAX_CONTEXT = 10
MIN_LENGTH = MAX_CONTEXT + 2
# the loss terms' weights and the mask patterns' shares (the shares are normalised by their sum)
WEIGHTS = ("w_von_mises", "w_angular", "w_position", "w_fk", "w_root", "w_top_angle", "w_l2q")
MIXES = ("mix_inbetween", "mix_keyframes", "mix_cells", "mix_pose", "mix_every", "mix_wrist")


def check_settings(cfg: AnyOrderTrainConfig) -> None:
    """Settings refused as soon as they are given (``--print-config`` included), naming the valid values: every
    value that would only fail later in the run, or silently train nonsense."""
    one_of(cfg, "skeleton", ("hand", "body"))
    one_of(cfg, "variant", ("query", "triples"))
    if not isinstance(cfg.features, FeatureSpec):
        names = ", ".join(f.name for f in fields(FeatureSpec))
        raise ValueError(f"features is a group of settings, each given by its own name ({names}; e.g. "
                         f"base_velocity=0.5), not a value: got features={cfg.features!r}")
    cfg.features.for_skeleton(cfg.skeleton)
    for name in ("base_velocity", "velocity_memory"):
        at_least(cfg.features, name, meaning=" (0: off)")
    whole(cfg, "d_model", 1)
    whole(cfg, "n_heads", 1)
    divides(cfg, "n_heads", "d_model", why=" (each head reads d_model / n_heads channels)")
    whole(cfg, "n_enc_layers", 0, " (0: no encoder)")
    whole(cfg, "n_dec_layers", 1)
    within(cfg, "dropout", 0, 1, open_high=True)
    whole(cfg, "length", MIN_LENGTH, f" (frames: up to {MAX_CONTEXT} context frames, a gap and a target)")
    at_least(cfg, "key_gate", meaning=" seconds (0: off)")
    for name in ("fps", "speeds"):
        positive_list(cfg, name)
    if not isinstance(cfg.reverse, bool) or not isinstance(cfg.calibrate, bool):
        raise ValueError(f"reverse and calibrate must be true or false, got {cfg.reverse!r} and {cfg.calibrate!r}")
    at_least(cfg, "relative_floor", meaning=" (0: off)")
    for name in ("twist_deg", "hinge_deg"):
        within(cfg, name, 0, 180, meaning=" degrees (0: off)")
    within(cfg, "conventions_share", 0, 1)
    whole(cfg, "batch_size", 1)
    whole(cfg, "steps_per_epoch", 1)
    at_least(cfg, "lr", strict=True)
    at_least(cfg, "weight_decay")
    whole(cfg, "warmup_steps", 0, " (0: no warm-up)")
    for name in WEIGHTS:
        at_least(cfg, name, meaning=" (0: the term is off)")
    if not any(getattr(cfg, name) > 0 for name in WEIGHTS):
        raise ValueError(f"at least one loss weight ({', '.join(WEIGHTS)}) must be > 0: all are 0, nothing is fitted")
    for name in MIXES:
        within(cfg, name, 0, 1, what="a share ")
    if not any(getattr(cfg, name) > 0 for name in MIXES):
        raise ValueError(f"at least one mask share ({', '.join(MIXES)}) must be > 0: all are 0, no window is drawn")
    whole(cfg, "data_seed", 0)
    whole(cfg, "val_windows", 1)
    whole(cfg, "num_workers", 0, " (0: batches made in the training process)")
