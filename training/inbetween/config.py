"""The configurations of the any-order models, in plain dataclasses: what a model card stores, readable
without torch (the card's checks and the torch-free inference runtime read them before, or without, any network)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
