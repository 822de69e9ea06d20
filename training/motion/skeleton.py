"""Skeleton schemas (``hand``, ``body``) and forward kinematics.

A schema fixes the joint names, their order and the parent of each joint, so that a model trained on
one file can read any other file (or Blender rig) of the same kind. Forward kinematics turns local
rotations and translations into global ones, in the BVH file's space (Y up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.motion.rotations import quat_apply, quat_mirror_x, quat_mul

HAND_JOINTS = (
    "WRIST",
    "THUMB_CMC_FE", "THUMB_CMC_AA", "THUMB_MCP_FE", "THUMB_IP_FE",
    "INDEX_MCP", "INDEX_PIP_FE", "INDEX_DIP_FE",
    "MIDDLE_MCP", "MIDDLE_PIP_FE", "MIDDLE_DIP_FE",
    "RING_MCP", "RING_PIP_FE", "RING_DIP_FE",
    "PINKY_MCP", "PINKY_PIP_FE", "PINKY_DIP_FE",
)  # fmt: skip
HAND_PARENTS = (-1, 0, 1, 2, 3, 0, 5, 6, 0, 8, 9, 0, 11, 12, 0, 14, 15)

BODY_JOINTS = (
    "joint_Root", "Hips", "Spine", "Chest", "Neck", "Head",
    "Shoulder_L", "UpperArm_L", "LowerArm_L", "Hand_L",
    "Shoulder_R", "UpperArm_R", "LowerArm_R", "Hand_R",
    "UpperLeg_L", "LowerLeg_L", "Foot_L", "Toes_L",
    "UpperLeg_R", "LowerLeg_R", "Foot_R", "Toes_R",
)  # fmt: skip
BODY_PARENTS = (-1, 0, 1, 2, 3, 4, 3, 6, 7, 8, 3, 10, 11, 12, 1, 14, 15, 16, 1, 18, 19, 20)


@dataclass(frozen=True)
class Schema:
    """A named skeleton layout. ``root`` is the joint that carries the character's translation;
    ``moving`` lists every joint whose translation may change over time (the others keep constant bone
    offsets); ``up`` is the vertical axis of the capture space."""

    name: str
    joints: tuple[str, ...]
    parents: tuple[int, ...]
    root: int
    moving: tuple[int, ...]
    up: int = 1
    fps: float = 30.0  # the rate the model is trained at
    units: str = ""
    euler_order: str = "ZXY"  # the capture's rotation channels (intrinsic, as BVH lists them): how a rig keys them

    @property
    def n_joints(self) -> int:
        return len(self.joints)

    def index(self, name: str) -> int:
        try:
            return self.joints.index(name)
        except ValueError:
            raise KeyError(f"unknown joint {name!r} for the {self.name} skeleton") from None

    def children(self) -> list[list[int]]:
        out: list[list[int]] = [[] for _ in self.joints]
        for j, p in enumerate(self.parents):
            if p >= 0:
                out[p].append(j)
        return out

    def above_root(self) -> list[int]:
        """The joints above the root, its parent first (the body's joint_Root; none for the hand): they place the
        whole figure, and a rig usually has no bone for them."""
        out, j = [], self.parents[self.root]
        while j >= 0:
            out.append(j)
            j = self.parents[j]
        return out

    def branches(self) -> list[list[int]]:
        """Each of the root's children with every joint below it, in the schema's order (the hand: its five
        fingers, thumb first): what an animator keys, or leaves, as one piece."""
        kids = self.children()

        def below(j: int) -> list[int]:
            return [j] + [d for c in kids[j] for d in below(c)]

        return [below(c) for c in kids[self.root]]


HAND = Schema("hand", HAND_JOINTS, HAND_PARENTS, root=0, moving=(0,), units="dm (ManipNet)", euler_order="YXZ")
# Bandai: Hips carries the motion; joint_Root stays at the origin except in a few dataset-1 "normal" takes
BODY = Schema("body", BODY_JOINTS, BODY_PARENTS, root=1, moving=(0, 1), units="cm (Bandai)")
SCHEMAS: dict[str, Schema] = {"hand": HAND, "body": BODY}


def get_schema(name: str) -> Schema:
    try:
        return SCHEMAS[name]
    except KeyError:
        raise KeyError(f"unknown skeleton {name!r}; expected one of {', '.join(SCHEMAS)}") from None


def check_topological(parents) -> None:
    for j, p in enumerate(parents):
        if p >= j:
            raise ValueError(f"joint {j} has parent {p}: parents must come before their children")


def forward_kinematics(
    local_rot: np.ndarray, local_trans: np.ndarray, parents
) -> tuple[np.ndarray, np.ndarray]:
    """Global rotations (..., J, 4) and positions (..., J, 3) from local rotations (..., J, 4) and local
    translations (..., J, 3): p_j = p_parent + R_parent t_j, R_j = R_parent r_j."""
    check_topological(parents)
    local_rot = np.asarray(local_rot, dtype=np.float64)
    local_trans = np.asarray(local_trans, dtype=np.float64)
    g_rot = np.empty(np.broadcast_shapes(local_rot.shape[:-1], local_trans.shape[:-1]) + (4,))
    g_pos = np.empty(g_rot.shape[:-1] + (3,))
    for j, p in enumerate(parents):
        if p < 0:
            g_rot[..., j, :] = local_rot[..., j, :]
            g_pos[..., j, :] = local_trans[..., j, :]
        else:
            g_rot[..., j, :] = quat_mul(g_rot[..., p, :], local_rot[..., j, :])
            g_pos[..., j, :] = g_pos[..., p, :] + quat_apply(g_rot[..., p, :], local_trans[..., j, :])
    return g_rot, g_pos


def mirror_x(local_rot: np.ndarray, local_trans: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mirror a motion through the YZ plane. ManipNet's left and right hands are each other's mirror
    images in X (same joint names, X offsets negated), so this turns a left hand into a right one."""
    t = np.array(local_trans, dtype=np.float64, copy=True)
    t[..., 0] *= -1.0
    return quat_mirror_x(local_rot), t
