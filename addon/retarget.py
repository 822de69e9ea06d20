"""Rig <-> model space through world (armature-space) rotations: numpy only, no ``bpy``.

The model lives in its skeleton's space; the animator's rig does not. Every conversion goes through each
bone's *world* rotation (armature space), so bones the model does not have (a Mixamo ``Spine1``, twist
bones) keep their own animation and the mapped bones still land where the model says.

Notation (3x3 rotation matrices; ``T`` takes armature axes to model axes: the armature object's world
rotation, then Blender's BVH-importer axis conversion, times a mirror for a hand of the other side than the
hand model's; ``s`` rig units per model unit):

* ``B_b`` a bone's rest orientation, ``W_b(f)`` its evaluated orientation at frame f (armature space);
* ``M_j`` the *matching pose*: the model's global rotation of joint j when the model stands as the rig
  does in its rest pose (characterised once, :func:`matching_pose`);
* read:  ``G_j = T W_b B_b^-1 T^-1 M_j``, local ``R_j = G_parent^-1 G_j``; a moving joint's position is
  ``T head_b / s + G_j c_j + l``;
* write: ``W_b = T^-1 G_j M_j^-1 T B_b``, solved for the bone's local pose under its actual (possibly
  unmapped, animated) parent, parents first; the root's location from ``s T^-1 (p_j - G_j c_j - l)``.

``c_j`` (:func:`anchor_offset`) is zero but for the joint the hip joints hang from: a rig's hips bone sits
higher or lower above its hip joints than the model's (Mixamo 3 cm, a CMU-style rig 10), and its head read as
the model's hips would hang the model's legs from the wrong place. ``l`` (:func:`ground_lift`, added to every
moving joint's position on the way in, taken off on the way out) brings the rig's floor onto the model's: the
training capture's ankles never go below 11-12 cm, a rig's floor is wherever its author put it.

With nothing filled, rig -> model -> rig gives back every bone's world matrix exactly, whatever ``M``.
``M`` matters for what the model sees: it is built so that the rig's rest pose, read this way, has bone
directions of the rig and twists as the training data holds them (see ``training/conventions.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

# --- small rotation helpers (numpy; Blender bundles numpy, not scipy) --------------------------------------


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _svd_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    d = np.linalg.det(r)
    if np.any(d < 0):
        u = u.copy()
        u[..., :, -1] *= np.where(d < 0, -1.0, 1.0)[..., None]
        r = u @ vt
    return r


FEW_MATRICES = 8  # orthonormal() takes the SVD for at most this many matrices


def orthonormal(m: np.ndarray) -> np.ndarray:
    """The rotation nearest to each 3x3 matrix (removes scale and shear; the polar factor). Newton's iteration
    X <- (g X + X^-T / g) / 2 on the nine entries as arrays (a bone's matrix is a rotation up to float32 noise
    and scale: one or two steps); matrices that mirror (det <= 0) take the SVD, with the nearest rotation."""
    m = np.asarray(m, dtype=np.float64)
    shape = m.shape
    if m.size <= 9 * FEW_MATRICES:  # a handful: the SVD's one call beats the iteration's array steps
        return _svd_rotation(m.reshape(-1, 3, 3)).reshape(shape)
    y = m.reshape(-1, 9).T.copy()  # (9, N): m00 m01 m02 m10 ... m22
    out = np.empty_like(y)
    idx = np.arange(y.shape[1])
    mirrored = np.zeros(y.shape[1], dtype=bool)
    for step in range(60):
        m00, m01, m02, m10, m11, m12, m20, m21, m22 = y
        c = np.stack([m11 * m22 - m12 * m21, m12 * m20 - m10 * m22, m10 * m21 - m11 * m20,
                      m02 * m21 - m01 * m22, m00 * m22 - m02 * m20, m01 * m20 - m00 * m21,
                      m01 * m12 - m02 * m11, m02 * m10 - m00 * m12, m00 * m11 - m01 * m10])  # cofactors
        det = m00 * c[0] + m01 * c[1] + m02 * c[2]
        if step == 0:
            mirrored = ~(det > 0)
            if mirrored.any():
                idx, y, c, det = idx[~mirrored], y[:, ~mirrored], c[:, ~mirrored], det[~mirrored]
        c /= det  # X^-T
        g = np.sqrt(np.sqrt(np.einsum("ij,ij->j", c, c) / np.einsum("ij,ij->j", y, y)))
        nxt = 0.5 * (g * y + c / g)
        out[:, idx] = nxt
        moving = np.abs(nxt - y).max(axis=0) > 1e-7  # quadratic convergence: the next step would move < 1e-14
        if not moving.any():
            break
        idx, y = idx[moving], nxt[:, moving]
    out = out.T.reshape(shape)
    if mirrored.any():
        flat = out.reshape(-1, 3, 3)
        flat[mirrored] = _svd_rotation(m.reshape(-1, 3, 3)[mirrored])
    return out


def rmul(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``x @ c`` for a stack of matrices x (..., n, k) and one matrix c (k, m), as one matrix product (numpy
    multiplies a stack of small matrices one by one, several times slower for a shot's frames)."""
    return (np.reshape(x, (-1, c.shape[0])) @ c).reshape(x.shape[:-1] + (c.shape[1],))


def lmul(c: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``c @ x`` for one matrix c (n, k) and a stack x (..., k, m), as one matrix product (see :func:`rmul`)."""
    return np.swapaxes(rmul(np.swapaxes(x, -1, -2), c.T), -1, -2)


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) w, x, y, z -> rotation matrices (..., 3, 3)."""
    q = unit(np.asarray(q, dtype=np.float64))
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    xx, yy, zz, xy, xz, yz, wx, wy, wz = x * x, y * y, z * z, x * y, x * z, y * z, w * x, w * y, w * z
    m = np.empty(q.shape[:-1] + (3, 3))
    m[..., 0, 0], m[..., 0, 1], m[..., 0, 2] = 1 - 2 * (yy + zz), 2 * (xy - wz), 2 * (xz + wy)
    m[..., 1, 0], m[..., 1, 1], m[..., 1, 2] = 2 * (xy + wz), 1 - 2 * (xx + zz), 2 * (yz - wx)
    m[..., 2, 0], m[..., 2, 1], m[..., 2, 2] = 2 * (xz - wy), 2 * (yz + wx), 1 - 2 * (xx + yy)
    return m


def matrix_to_quat(m: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) w, x, y, z with w >= 0."""
    m = np.asarray(m, dtype=np.float64)
    t = np.stack([1 + m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2], 1 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
                  1 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2], 1 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2]], -1)
    k = np.argmax(t, axis=-1)
    q = np.empty(m.shape[:-2] + (4,))
    d21, d02, d10 = m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] - m[..., 0, 1]
    s10, s02, s21 = m[..., 1, 0] + m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2]
    cands = [np.stack([t[..., 0], d21, d02, d10], -1), np.stack([d21, t[..., 1], s10, s02], -1),
             np.stack([d02, s10, t[..., 2], s21], -1), np.stack([d10, s02, s21, t[..., 3]], -1)]
    for i, c in enumerate(cands):
        q = np.where((k == i)[..., None], c, q)
    q = unit(q)
    return np.where(q[..., :1] < 0, -q, q)


def rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation (3x3) taking direction a onto direction b."""
    a, b = unit(a), unit(b)
    v, c = np.cross(a, b), float(np.dot(a, b))
    if c < -1 + 1e-9:  # opposite: a half turn about any axis perpendicular to a
        axis = unit(np.cross(a, [1.0, 0.0, 0.0] if abs(a[0]) < 0.9 else [0.0, 1.0, 0.0]))
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def rotation_angle(m: np.ndarray) -> np.ndarray:
    """The angle (radians, ...) each rotation matrix (..., 3, 3) turns by."""
    return np.arccos(np.clip((np.trace(m, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0))


def axis_rotations(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Rotations (..., 3, 3) about one axis by each angle (...)."""
    x, y, z = unit(np.asarray(axis, dtype=np.float64))
    c, s = np.cos(angles)[..., None, None], np.sin(angles)[..., None, None]
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + s * k + (1 - c) * (k @ k)


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    x, y, z = unit(np.asarray(axis, dtype=np.float64))
    c, s, t = np.cos(angle), np.sin(angle), 1 - np.cos(angle)
    return np.array([[t * x * x + c, t * x * y - s * z, t * x * z + s * y],
                     [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
                     [t * x * z - s * y, t * y * z + s * x, t * z * z + c]])


def fit_rotation(local: list[np.ndarray], target: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """The rotation R minimising sum w |R local - target|^2 (Wahba's problem, Kabsch's SVD)."""
    h = sum(w * np.outer(t, v) for v, t, w in zip(local, target, weights, strict=True))
    u, _, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, d]) @ vt


# --- the rig ------------------------------------------------------------------------------------------------


def ancestors(parents, start) -> list[int]:
    """The ``start`` indices and all their ancestors (``parents``: each one's parent, -1 for none), sorted."""
    out: set[int] = set()
    for b in start:
        while b >= 0 and b not in out:
            out.add(int(b))
            b = int(parents[b])
    return sorted(out)


@dataclass(frozen=True)
class Constraint:
    """A bone constraint whose effect the rig's arrays follow (:meth:`Rig.pose`): Copy Transforms, Copy Rotation,
    Copy Location and Copy Scale from a bone of the same armature, in World (or Pose) or Local space, or an
    Armature constraint (bones' deformations, weighted), at its influence (Blender blends the constrained matrix
    with the one before it by that). A generated Rigify rig hangs its controls under such bones: its arms under an
    ``ORG-shoulder`` that copies the ``shoulder`` control, its head under an ``MCH-ROT-head`` that copies the
    torso's rotation, its FK spine under ``MCH-spine`` bones that copy half the ``hips`` and ``chest`` controls."""

    kind: str  # COPY_TRANSFORMS, COPY_ROTATION, COPY_LOCATION, COPY_SCALE, ARMATURE
    target: int  # the target bone's index (ARMATURE: -1, see ``targets``)
    influence: float
    owner_local: bool = False  # the owner's Local space (else World / Pose)
    target_local: bool = False
    uniform: bool = False  # Copy Scale's Make Uniform
    targets: tuple[tuple[int, float], ...] = ()  # ARMATURE: (bone, weight)

    @property
    def sources(self) -> list[int]:
        return [t for t, _ in self.targets] if self.kind == "ARMATURE" else [self.target]


def blend_matrices(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Blender's ``interp_m4_m4m4`` (how a constraint's influence blends): locations linearly, the rotations of the
    polar decompositions spherically, their stretch linearly."""
    ua, ub = _svd_rotation(a[..., :3, :3]), _svd_rotation(b[..., :3, :3])
    pa, pb = np.swapaxes(ua, -1, -2) @ a[..., :3, :3], np.swapaxes(ub, -1, -2) @ b[..., :3, :3]
    qa, qb = matrix_to_quat(ua), matrix_to_quat(ub)
    qb = np.where((qa * qb).sum(-1, keepdims=True) < 0, -qb, qb)
    dot = np.clip((qa * qb).sum(-1, keepdims=True), -1.0, 1.0)
    angle = np.arccos(dot)
    sin = np.sin(angle)
    small = sin < 1e-6
    wa = np.where(small, 1.0 - t, np.sin((1.0 - t) * angle) / np.where(small, 1.0, sin))
    wb = np.where(small, t, np.sin(t * angle) / np.where(small, 1.0, sin))
    out = a.copy()
    out[..., :3, :3] = quat_to_matrix(wa * qa + wb * qb) @ ((1.0 - t) * pa + t * pb)
    out[..., :3, 3] = (1.0 - t) * a[..., :3, 3] + t * b[..., :3, 3]
    return out


@dataclass
class Rig:
    """An armature as plain arrays, parents before children (Blender lists bones that way)."""

    names: list[str]
    parents: np.ndarray  # (N,) index of the parent bone, -1 for roots
    rest: np.ndarray  # (N, 4, 4) bone.matrix_local (armature space)
    tails: np.ndarray  # (N, 3) rest tails, armature space
    connected: np.ndarray  # (N,) bool: head glued to the parent's tail (location ignored by Blender)
    hinge: np.ndarray | None = None  # (N,) bool: Inherit Rotation off (default: every bone inherits)
    local_location: np.ndarray | None = None  # (N,) bool: Local Location on (default: every bone)
    scale_full: np.ndarray | None = None  # (N,) bool: Inherit Scale is Full (default: every bone)
    constraints: dict[int, list[Constraint]] = field(default_factory=dict)  # bone -> its constraints, in order

    def __post_init__(self):
        self.index = {n: i for i, n in enumerate(self.names)}
        n = len(self.names)
        self.hinge = np.zeros(n, dtype=bool) if self.hinge is None else np.asarray(self.hinge, dtype=bool)
        self.local_location = np.ones(n, dtype=bool) if self.local_location is None else np.asarray(
            self.local_location, dtype=bool)
        self.scale_full = np.ones(n, dtype=bool) if self.scale_full is None else np.asarray(self.scale_full, dtype=bool)
        # parent-relative rest: rest[p]^-1 rest[b]
        self.rest_rel = np.array([np.linalg.inv(self.rest[p]) @ self.rest[b] if p >= 0 else self.rest[b]
                                  for b, p in enumerate(self.parents)])
        self.order = self._evaluation_order()

    def _evaluation_order(self) -> list[int]:
        """Every bone after its parent and its constraints' targets, as Blender evaluates them (parents first
        otherwise); a constraint whose targets would close a cycle is dropped (Blender reports such a rig)."""
        n = len(self.names)
        done = [False] * n
        order: list[int] = []
        pending = list(range(n))
        while pending:
            left = []
            for b in pending:
                p = int(self.parents[b])
                deps = [p] if p >= 0 else []
                deps += [t for c in self.constraints.get(b, ()) for t in c.sources]
                if all(done[d] for d in deps):
                    done[b] = True
                    order.append(b)
                else:
                    left.append(b)
            if len(left) == len(pending):  # a cycle through constraints: drop the first waiting bone's
                self.constraints.pop(left[0], None)
            pending = left
        return order

    def dependencies(self, start) -> list[int]:
        """The ``start`` bones and every bone their pose depends on: parents and constraints' targets, and theirs,
        in evaluation order (:attr:`order`)."""
        out: set[int] = set()
        todo = [int(b) for b in start]
        while todo:
            b = todo.pop()
            if b < 0 or b in out:
                continue
            out.add(b)
            todo.append(int(self.parents[b]))
            todo += [t for c in self.constraints.get(b, ()) for t in c.sources]
        return [b for b in self.order if b in out]

    @property
    def heads(self) -> np.ndarray:
        return self.rest[:, :3, 3]

    def parent_transform(self, b: int, parent_pose: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Blender's ``BoneParentTransform`` of bone b under its parent's pose (F, 4, 4; None for a root): the
        matrix its basis rotation and scale are taken through, and the one its basis location is (each (F or 1,
        4, 4)). Both are ``parent pose @ rest_rel`` for a bone that inherits; a bone with Inherit Rotation off
        turns from its own rest, scaled as its parent (its location still follows the parent's pose); one with
        Local Location off moves along its parent's axes (a root: the armature's). Inherit Scale modes other
        than Full are taken as Full: they differ only under a scaled parent (:meth:`scale_conflicts`)."""
        rel = self.rest_rel[b]
        if parent_pose is None:
            rot = rel[None]
            loc = rot
            if not self.local_location[b]:
                loc = np.eye(4)[None].copy()
                loc[:, :3, 3] = rel[:3, 3]
            return rot, loc
        full = rmul(parent_pose, rel)
        rot = full
        if self.hinge[b]:  # the parent's rest, times the parent pose's scale (its columns' lengths), then rel
            p = self.parents[b]
            scale = np.linalg.norm(parent_pose[:, :3, :3], axis=-2)  # (F, 3)
            base = np.broadcast_to(self.rest[p], parent_pose.shape).copy()
            base[:, :3, :3] *= scale[:, None, :]
            rot = rmul(base, rel)
        loc = rot if not self.hinge[b] else full
        if not self.local_location[b]:
            loc = np.broadcast_to(np.eye(4), parent_pose.shape).copy()
            loc[:, :3, :3] = parent_pose[:, :3, :3]
            loc[:, :3, 3] = full[:, :3, 3]
        return rot, loc

    def scale_conflicts(self, pose: np.ndarray, bones) -> list[int]:
        """The ``bones`` whose Inherit Scale is not Full under a parent that the pose (F, N, 4, 4) scales or
        shears at some frame: Blender takes such a parent's scale in ways :meth:`parent_transform` does not
        follow (under an unscaled parent every mode is Full)."""
        out = []
        for b in bones:
            p = self.parents[b]
            if p >= 0 and not self.scale_full[b]:
                m = pose[:, p, :3, :3]
                if np.abs(np.swapaxes(m, -1, -2) @ m - np.eye(3)).max() > 1e-4:
                    out.append(int(b))
        return out

    @staticmethod
    def apply(rot: np.ndarray, loc: np.ndarray, basis: np.ndarray) -> np.ndarray:
        """A bone's pose (F, 4, 4) from its parent transform (:meth:`parent_transform`) and basis (F, 4, 4), as
        ``BKE_bone_parent_transform_apply``: rotation and scale through ``rot``, the location point through
        ``loc``."""
        out = rot @ basis
        out[..., :3, 3] = np.einsum("fij,fj->fi", np.broadcast_to(loc[..., :3, :3], out[..., :3, :3].shape),
                                    basis[..., :3, 3]) + loc[..., :3, 3]
        return out

    def pose(self, basis: np.ndarray, bones=None) -> np.ndarray:
        """Armature-space pose matrices (F, N, 4, 4) from local basis matrices (F, N, 4, 4)
        (``pose_bone.matrix_basis``): Blender's own composition (:meth:`parent_transform`), then each bone's
        :attr:`constraints`. ``bones``: only these (with everything they depend on among them,
        :meth:`dependencies`); the others are left undefined."""
        out = np.empty_like(basis)
        wanted = None if bones is None else set(int(b) for b in bones)
        for b in self.order:
            if wanted is not None and b not in wanted:
                continue
            p = self.parents[b]
            if p < 0 and self.local_location[b]:
                out[:, b] = lmul(self.rest_rel[b], basis[:, b])
            elif p >= 0 and not self.hinge[b] and self.local_location[b]:
                out[:, b] = out[:, p] @ lmul(self.rest_rel[b], basis[:, b])
            else:
                out[:, b] = self.apply(*self.parent_transform(b, out[:, p] if p >= 0 else None), basis[:, b])
            if b in self.constraints:
                out[:, b] = self.constrain(b, out[:, b], out)
        return out

    def _to_local(self, b: int, m: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """A pose matrix (F, 4, 4) of bone b in its Local space (as its basis would be), under its parent's pose."""
        p = self.parents[b]
        rot, loc = self.parent_transform(b, pose[:, p] if p >= 0 else None)
        out = np.broadcast_to(np.linalg.inv(rot), m.shape) @ m
        inv = np.broadcast_to(np.linalg.inv(loc[..., :3, :3]), m[..., :3, :3].shape)
        out[..., :3, 3] = np.einsum("fij,fj->fi", inv, m[..., :3, 3] - loc[..., :3, 3])
        return out

    def _from_local(self, b: int, m: np.ndarray, pose: np.ndarray) -> np.ndarray:
        p = self.parents[b]
        rot, loc = self.parent_transform(b, pose[:, p] if p >= 0 else None)
        rot, loc = (np.broadcast_to(x, m.shape) for x in (rot, loc))
        return self.apply(rot, loc, m)

    def constrain(self, b: int, m: np.ndarray, pose: np.ndarray) -> np.ndarray:
        """Bone b's pose (F, 4, 4) after its constraints, from its pose ``m`` before them; ``pose`` holds its
        parent's and its targets' final poses. As Blender solves them: each in its spaces, then blended with the
        matrix before it by its influence (:func:`blend_matrices`)."""
        for c in self.constraints.get(b, ()):
            old = m
            if c.kind == "ARMATURE":
                total = sum(w for _, w in c.targets)
                if total <= 0:
                    continue
                deform = sum(w * (pose[:, t] @ np.linalg.inv(self.rest[t])) for t, w in c.targets) / total
                new = deform @ old
            else:
                target = pose[:, c.target]
                if c.target_local:
                    target = self._to_local(c.target, target, pose)
                own = self._to_local(b, old, pose) if c.owner_local else old.copy()
                if c.kind == "COPY_TRANSFORMS":
                    own = target.copy()
                elif c.kind == "COPY_ROTATION":
                    size = np.linalg.norm(own[:, :3, :3], axis=-2)
                    own[:, :3, :3] = _svd_rotation(target[:, :3, :3]) * size[:, None, :]
                elif c.kind == "COPY_LOCATION":
                    own[:, :3, 3] = target[:, :3, 3]
                else:  # COPY_SCALE
                    size = np.linalg.norm(target[:, :3, :3], axis=-2)
                    if c.uniform:
                        size = np.repeat(np.cbrt(size.prod(-1, keepdims=True)), 3, axis=-1)
                    now = np.linalg.norm(own[:, :3, :3], axis=-2)
                    own[:, :3, :3] *= np.where(now > 0, size / np.where(now > 0, now, 1.0), 1.0)[:, None, :]
                new = self._from_local(b, own, pose) if c.owner_local else own
            m = new if c.influence >= 1.0 else blend_matrices(old, new, c.influence)
        return m


def basis_matrices(location: np.ndarray, quaternion: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``matrix_basis`` (..., 4, 4) from location (..., 3), rotation quaternion (..., 4) wxyz, scale (..., 3)."""
    m = np.zeros(location.shape[:-1] + (4, 4))
    m[..., :3, :3] = quat_to_matrix(quaternion) * scale[..., None, :]
    m[..., :3, 3] = location
    m[..., 3, 3] = 1.0
    return m


# --- the model side -----------------------------------------------------------------------------------------

Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])  # Blender's BVH importer default


def axis_conversion(up_axis: str) -> np.ndarray:
    """Model axes -> armature axes, as Blender's BVH importer converts a file of that up axis."""
    if up_axis.lower() == "y":
        return Y_UP_TO_Z_UP.copy()
    if up_axis.lower() == "x":
        return np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    return np.eye(3)


MIRROR_X = np.diag([-1.0, 1.0, 1.0])


@dataclass
class ModelSkeleton:
    """What the backend's ``/v1/models`` says of a model's skeleton."""

    joints: list[str]
    parents: list[int]
    offsets: np.ndarray  # (J, 3) rest offsets, model units
    moving: list[bool]
    up_axis: str
    conventions: dict | None = None  # per joint: axis, references, mean_local (training/conventions.py)
    reference_names: tuple[str, str] = ("forward", "up")
    ground: dict | None = None  # the training data's floor (training/conventions.py: joints, height, low, high)
    root: int = 0  # the skeleton's root (the body's Hips): the joints above it place the whole figure

    @classmethod
    def from_info(cls, model: dict) -> ModelSkeleton:
        names = [j["name"] for j in model["joints"]]
        conv = model.get("conventions")
        refs = tuple(conv["references"]) if conv else (("forward", "up") if model.get("skeleton") != "hand"
                                                       else ("finger", "palm"))
        return cls(names, [names.index(j["parent"]) if j.get("parent") else -1 for j in model["joints"]],
                   np.array([j.get("rest_offset") or (0.0, 0.0, 0.0) for j in model["joints"]], dtype=np.float64),
                   [bool(j.get("moving")) for j in model["joints"]], model.get("up_axis", "y"),
                   {c["name"]: c for c in conv["joints"]} if conv else None, refs, (conv or {}).get("ground"),
                   names.index(model["root"]) if model.get("root") in names else 0)

    @property
    def above_root(self) -> list[int]:
        """The joints above the root, its parent first (the body's joint_Root; none for the hand)."""
        out, j = [], self.parents[self.root]
        while j >= 0:
            out.append(j)
            j = self.parents[j]
        return out

    def children(self, j: int) -> list[int]:
        return [k for k, p in enumerate(self.parents) if p == j]

    def rest_positions(self) -> np.ndarray:
        pos = np.zeros((len(self.joints), 3))
        for j, p in enumerate(self.parents):
            pos[j] = self.offsets[j] + (pos[p] if p >= 0 else 0.0)
        return pos

    def habit_positions(self) -> np.ndarray:
        """The joints' positions (J, 3) in the pose the training data holds on average: each joint below the
        root at its mean local rotation (needs the conventions)."""
        pos, rot = np.zeros((len(self.joints), 3)), np.tile(np.eye(3), (len(self.joints), 1, 1))
        for j, p in enumerate(self.parents):
            if p >= 0:
                pos[j] = pos[p] + rot[p] @ self.offsets[j]
                rot[j] = rot[p] @ quat_to_matrix(np.array(self.conventions[self.joints[j]]["mean_local"]))
        return pos


# --- characterisation ---------------------------------------------------------------------------------------


def rig_references(model: ModelSkeleton, heads: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    """The rig's two body-anchored directions at rest (model axes), as ``training/conventions.py`` defines them
    on the capture; None when the bones that define them are not mapped."""
    try:
        if model.reference_names[0] == "forward":
            up = np.zeros(3)
            up[{"x": 0, "y": 1, "z": 2}[model.up_axis.lower()]] = 1.0
            lateral = heads["UpperLeg_L"] - heads["UpperLeg_R"]
            forward = unit(np.cross(lateral, up))
            toes = heads["Toes_L"] + heads["Toes_R"] - heads["Foot_L"] - heads["Foot_R"]
            if np.dot(forward, toes) < 0:
                forward = -forward
            return {"forward": forward, "up": up}
        finger = unit(heads["MIDDLE_MCP"] - heads["WRIST"])
        return {"finger": finger, "palm": unit(np.cross(finger, heads["INDEX_MCP"] - heads["PINKY_MCP"]))}
    except KeyError:
        return None


def rotvecs(m: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) of rotation matrices (..., 3, 3)."""
    q = matrix_to_quat(m)
    s = np.linalg.norm(q[..., 1:], axis=-1)
    angle = 2 * np.arctan2(s, q[..., 0])
    return q[..., 1:] * (angle / np.maximum(s, 1e-12))[..., None]


def rest_turn(model: ModelSkeleton, rig: Rig, mapping: dict[str, str], to_model: np.ndarray) -> np.ndarray:
    """The rotation (3x3) that takes the model's rest onto a rig whose rest is the model's own, read through
    ``to_model`` (which holds the armature object's rotation): fitted to the bones between mapped joints (Kabsch;
    a moving joint's offset is where a take starts, not the skeleton's shape), identity when within 1e-6 rad of
    it. An object turned to face another way stands the rig's rest turned; read as unturned, the rig's local
    rotations came out turned about the object's up (a walk 3 times Bezier's error and 1.5 m off at 180
    degrees)."""
    index = {model.joints.index(n): rig.index[b] for n, b in mapping.items() if b in rig.index}
    bones = [(j, p) for j, p in enumerate(model.parents)
             if j in index and p in index and not model.moving[j] and np.linalg.norm(model.offsets[j]) > 1e-9]
    if len(bones) < 2:
        return np.eye(3)
    rest = np.array([model.offsets[j] for j, _ in bones], dtype=np.float64)  # each bone in the model's rest
    to_model = np.asarray(to_model, dtype=np.float64)
    heads = np.array([to_model @ (rig.heads[index[j]] - rig.heads[index[p]]) for j, p in bones])
    if np.linalg.matrix_rank(rest, tol=1e-6 * float(np.abs(rest).max())) < 2:
        return np.eye(3)
    turn = fit_rotation(list(rest), list(heads), [1.0] * len(bones))
    return np.eye(3) if float(rotation_angle(turn)) < 1e-6 else turn


def matching_pose(model: ModelSkeleton, rig: Rig, mapping: dict[str, str], to_model: np.ndarray,
                  mode: str = "AUTO") -> tuple[np.ndarray, str, set[int]]:
    """The model's global rotations (J, 3, 3) in the pose the rig's rest stands in, the mode used, and the
    joints whose twist is free (a single bone's, not fixed by several children).

    ``MODEL``: the rig's rest *is* the model's rest (a BVH import of the training skeleton), as its object stands
    it in the world: every joint turned alike (:func:`rest_turn`; identity for an import left as it came).
    ``REST``: estimated from the rig's rest: each mapped joint's bone points where the rig's bone points
    (towards its mapped child, else where the rig's bone leads); joints with several mapped children fit them
    all. The twist about a single bone follows the training data's habit for that joint, relative to the
    rig's forward/up (hand: finger/palm) directions (:func:`fit_twists` refines it from the rig's keys).
    Unmapped joints hold the data's mean local rotation.
    ``AUTO``: MODEL when every joint is mapped to a bone of its own name, else REST."""
    n = len(model.joints)
    mode = resolve_rest_mode(model, mapping, mode)
    if mode == "MODEL":
        return np.tile(rest_turn(model, rig, mapping, to_model), (n, 1, 1)), "MODEL", set()
    if model.conventions is None:
        return np.tile(np.eye(3), (n, 1, 1)), "MODEL", set()
    heads = {j: to_model @ rig.heads[rig.index[b]] for j, b in mapping.items() if b in rig.index}
    refs = rig_references(model, heads)
    out = np.empty((n, 3, 3))
    free: set[int] = set()
    above = set(model.above_root)
    for j, name in enumerate(model.joints):
        conv = model.conventions[name]
        p = model.parents[j]
        parent_m = out[p] if p >= 0 else np.eye(3)
        bone = mapping.get(name)
        # a joint above the root (the body's joint_Root) is the capture's world, at rest on the floor: its bone at
        # rest reads as the model's at rest, however it lies (Rigify's `root` lies flat; aimed at the hips, its
        # turn tilted and turned the whole walk read under it 59 degrees, the hips sinking 1.1 m over 3 m)
        if bone not in rig.index or j in above:
            out[j] = parent_m @ quat_to_matrix(np.array(conv["mean_local"]))
            continue
        b = rig.index[bone]
        pairs = []  # (direction in the joint's frame, direction in the rig, model axes)
        for k in model.children(j):
            kb = mapping.get(model.joints[k])
            if kb in rig.index and np.linalg.norm(model.offsets[k]) > 1e-9:
                d = heads[model.joints[k]] - heads[name]
                if np.linalg.norm(d) > 1e-9:
                    pairs.append((unit(model.offsets[k]), unit(d)))
        if len(pairs) >= 2 and np.linalg.matrix_rank(np.array([t for _, t in pairs]), tol=1e-6) >= 2:
            out[j] = fit_rotation([v for v, _ in pairs], [t for _, t in pairs], [1.0] * len(pairs))
            continue
        free.add(j)
        if pairs:
            local_dir, rig_dir = pairs[0]
        else:  # a leaf of the model: where the rig's bone leads (its children, else its tail), else the parent's line
            local_dir = np.array(conv["axis"], dtype=np.float64)
            rig_dir = _leaf_direction(rig, b, to_model)
        swing = rotation_between(local_dir, rig_dir)
        targets = []  # (direction in the joint's frame, direction it should take, weight)
        for ref_name, target in (refs or {}).items():
            ref = conv["references"].get(ref_name)
            if ref:
                t_perp = target - np.dot(target, rig_dir) * rig_dir
                targets.append((np.array(ref["direction"], dtype=np.float64), t_perp, ref["strength"]))
        out[j] = swing @ _twist(swing, rig_dir, targets)
    return out, "REST", free


def resolve_rest_mode(model: ModelSkeleton, mapping: dict[str, str], mode: str) -> str:
    """AUTO: MODEL when every joint is mapped to a bone of its own name (a BVH import of the training
    skeleton), else REST."""
    if mode == "AUTO":
        return "MODEL" if all(mapping.get(j) == j for j in model.joints) else "REST"
    return mode


def _leaf_direction(rig: Rig, b: int, to_model: np.ndarray) -> np.ndarray:
    """Where a bone that ends a model chain (a hand, a toe, the head) points at rest, in model axes: towards
    the mean of its children's heads (a hand's fingers), else along its tail when that is a real length
    (BVH end sites of zero length give importers' made-up tails), else on along its parent's line."""
    head = rig.heads[b]
    parent = int(rig.parents[b])
    parent_length = np.linalg.norm(head - rig.heads[parent]) if parent >= 0 else 0.0
    kids = [k for k in range(len(rig.names)) if rig.parents[k] == b]
    ahead = np.mean([rig.heads[k] for k in kids], axis=0) - head if kids else np.zeros(3)
    if np.linalg.norm(ahead) > 0.1 * parent_length and np.linalg.norm(ahead) > 1e-9:
        return unit(to_model @ ahead)
    tail = rig.tails[b] - head
    if not kids and np.linalg.norm(tail) > 0.1 * parent_length and np.linalg.norm(tail) > 1e-9:
        return unit(to_model @ tail)
    if parent >= 0 and parent_length > 1e-9:
        return unit(to_model @ (head - rig.heads[parent]))
    return unit(to_model @ tail)


def _twist(swing: np.ndarray, rig_dir: np.ndarray, targets: list[tuple[np.ndarray, np.ndarray, float]]) -> np.ndarray:
    """The turn about the joint's own bone axis (applied before ``swing``) that best brings directions of the
    joint's frame onto the directions they should take (perpendicular to the bone), weighted by how sure each
    is and how far it is from the bone."""
    axis_local = swing.T @ rig_dir
    num = den = 0.0
    for local, target, weight in targets:
        w = weight * np.linalg.norm(target)
        if w < 1e-6:
            continue
        a = swing @ unit(local)
        a = a - np.dot(a, rig_dir) * rig_dir
        b = unit(target)
        num += w * np.dot(np.cross(a, b), rig_dir)
        den += w * np.dot(a, b)
    if num == 0.0 and den == 0.0:
        return np.eye(3)
    return axis_rotation(axis_local, np.arctan2(num, den))


# --- the conversion -----------------------------------------------------------------------------------------


@dataclass
class Retarget:
    """Everything needed to take a rig's poses to the model and the model's answer back (see the module
    docstring). Build it with :func:`build`."""

    model: ModelSkeleton
    rig: Rig
    mapping: dict[str, str]  # model joint -> bone (only bones of the rig)
    to_model: np.ndarray  # T (3x3, det -1 when mirrored)
    scale: float  # rig units per model unit
    match: np.ndarray  # (J, 3, 3) M
    rest_mode: str
    mirrored: bool
    bone_of: dict[int, int] = field(default_factory=dict)  # model joint -> bone index
    # per-key twists (about each joint's own bone, moving no joint) that bring the rig's keyed poses into the
    # training data's habits; interpolated between keys on the way back (see fit_key_twists)
    twist_axes: dict[int, np.ndarray] = field(default_factory=dict)
    key_frames: np.ndarray | None = None  # (K,)
    key_twists: np.ndarray | None = None  # (K, J) radians
    anchor: dict[int, np.ndarray] = field(default_factory=dict)  # moving joint -> c_j (see anchor_offset)
    lift: np.ndarray = field(default_factory=lambda: np.zeros(3))  # l, model units (see ground_lift)

    def twists_at(self, frames) -> np.ndarray | None:
        """(F, J) twist angles at the frames: each key's own, linear between keys, held beyond them."""
        if self.key_frames is None or frames is None or not len(self.key_frames):
            return None
        frames = np.asarray(frames, dtype=np.float64)
        return np.stack([np.interp(frames, self.key_frames, self.key_twists[:, j])
                         for j in range(self.key_twists.shape[1])], axis=-1)

    def _twist_matrices(self, frames, sign: float) -> dict[int, np.ndarray]:
        tw = self.twists_at(frames)
        if tw is None:
            return {}
        return {j: axis_rotations(axis, sign * tw[:, j]) for j, axis in self.twist_axes.items()}

    def __post_init__(self):
        self.bone_of = {j: self.rig.index[self.mapping[name]] for j, name in enumerate(self.model.joints)
                        if self.mapping.get(name) in self.rig.index}
        self.from_model = np.linalg.inv(self.to_model)
        rest_rot = orthonormal(self.rig.rest[:, :3, :3])
        # read: G_j = T W_b (B_b^-1 T^-1 M_j); write: W_b = T^-1 G_j (M_j^-1 T B_b)
        self._read = {j: rest_rot[b].T @ self.from_model @ self.match[j] for j, b in self.bone_of.items()}
        self._write = {j: self.match[j].T @ self.to_model @ rest_rot[b] for j, b in self.bone_of.items()}
        self.anchor = anchor_offset(self.model, self.rig, self.bone_of, self.to_model, self.scale, self.match)

    def _placement(self, j: int, g_j: np.ndarray) -> np.ndarray:
        """``G_j c_j + l`` (F, 3): what a moving joint's position adds to its bone's head on the way in and
        takes off on the way out (the hips anchor and the floor lift)."""
        return (g_j @ self.anchor[j] if j in self.anchor else 0.0) + self.lift

    @property
    def mapped_bones(self) -> set[int]:
        return set(self.bone_of.values())

    def world_rotations(self, pose: np.ndarray) -> dict[int, np.ndarray]:
        """Each mapped bone's armature-space rotation (F, 3, 3) in the pose matrices (F, N, 4, 4)."""
        bones = sorted(set(self.bone_of.values()))
        return dict(zip(bones, np.swapaxes(orthonormal(pose[:, bones, :3, :3]), 0, 1), strict=True))

    def model_globals(self, pose: np.ndarray, frames=None, world: dict[int, np.ndarray] | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Model global rotations (F, J, 3, 3) and positions of the moving joints (F, J, 3; zero elsewhere)
        from the rig's armature-space pose matrices (F, N, 4, 4) at ``frames`` (for the per-key twists).
        Unmapped joints follow their parent as in the matching pose; an unmapped root stays at the origin.
        ``world``: :meth:`world_rotations` of the pose, when already known."""
        turn = self._twist_matrices(frames, 1.0)
        f = pose.shape[0]
        g = np.empty((f, len(self.model.joints), 3, 3))
        pos = np.zeros((f, len(self.model.joints), 3))
        world = self.world_rotations(pose) if world is None else world
        for j, p in enumerate(self.model.parents):
            b = self.bone_of.get(j)
            if b is not None:
                g[:, j] = lmul(self.to_model, rmul(world[b], self._read[j]))
                if j in turn:
                    g[:, j] = g[:, j] @ turn[j]
                if self.model.moving[j]:
                    pos[:, j] = pose[:, b, :3, 3] @ self.to_model.T / self.scale + self._placement(j, g[:, j])
            else:
                rel = self.match[p].T @ self.match[j] if p >= 0 else self.match[j]
                g[:, j] = (g[:, p] if p >= 0 else np.eye(3)) @ rel
                if self.model.moving[j] and p >= 0:
                    pos[:, j] = pos[:, p] + g[:, p] @ self.model.offsets[j]
        return g, pos

    def model_locals(self, pose: np.ndarray, frames=None) -> tuple[np.ndarray, np.ndarray]:
        """Local rotations (F, J, 4) wxyz and local translations of the moving joints (F, J, 3) as the model
        takes them, from armature-space pose matrices (F, N, 4, 4) at ``frames``."""
        g, pos = self.model_globals(pose, frames)
        local = g.copy()
        trans = np.zeros_like(pos)
        for j, p in enumerate(self.model.parents):
            if p >= 0:
                local[:, j] = np.swapaxes(g[:, p], -1, -2) @ g[:, j]
            if self.model.moving[j]:
                d = pos[:, j] - (pos[:, p] if p >= 0 else 0.0)
                trans[:, j] = np.einsum("fji,fj->fi", g[:, p], d) if p >= 0 else d
        return matrix_to_quat(local), trans

    def model_positions(self, pose: np.ndarray) -> np.ndarray:
        """Every model joint's position (F, J, 3) in the model's forward kinematics of the rig's armature-space
        pose matrices (F, N, 4, 4): the model's bones hung from the moving joints the rig places."""
        g, pos = self.model_globals(pose)
        for j, p in enumerate(self.model.parents):
            if p >= 0 and not self.model.moving[j]:
                pos[:, j] = pos[:, p] + g[:, p] @ self.model.offsets[j]
        return pos

    def solve_basis(self, local: np.ndarray, trans: np.ndarray, basis: np.ndarray, write: np.ndarray,
                    frames=None) -> np.ndarray:
        """New ``matrix_basis`` (F, N, 4, 4) for frames whose model local rotations (F, J, 4 wxyz) and moving
        joints' local translations (F, J, 3) are given. ``basis`` is every bone's current basis at those
        frames (unmapped bones keep theirs); ``write`` (F, J) says which joints are set at which frame.
        Bones are solved parents first, each under its parent's new pose; a bone connected to its parent
        never gets a location. ``frames``: the frame numbers (for the per-key twists)."""
        model = self.model
        unturn = self._twist_matrices(frames, -1.0)
        g = quat_to_matrix(local)
        pos = np.zeros(trans.shape)
        # positions are read at moving joints only: those and their ancestors are placed
        placed = set(ancestors(model.parents, [k for k, m in enumerate(model.moving) if m]))
        for j, p in enumerate(model.parents):  # model forward kinematics
            if p >= 0:
                g[:, j] = g[:, p] @ g[:, j]
                if j in placed:
                    t = trans[:, j] if model.moving[j] else model.offsets[j]
                    pos[:, j] = pos[:, p] + np.einsum("fij,fj->fi", g[:, p], np.broadcast_to(t, pos[:, j].shape))
            else:
                pos[:, j] = trans[:, j] if model.moving[j] else model.offsets[j]
        joint_of = {b: j for j, b in self.bone_of.items()}
        rig = self.rig
        out = basis.copy()
        pose = np.empty_like(basis)
        # the written bones and their ancestors: the other bones keep their basis
        order = rig.dependencies([b for j, b in self.bone_of.items() if write[:, j].any()])
        # a pose is read only by the bone's children and the bones whose constraints target it
        parents = {int(rig.parents[b]) for b in order} | {t for b in order for c in rig.constraints.get(b, ())
                                                          for t in c.sources}
        # each bone's own scale (its basis columns' lengths) is kept
        scales = dict(zip(order, np.swapaxes(np.sqrt((basis[:, order, :3, :3] ** 2).sum(axis=-2)), 0, 1), strict=True))
        for b in order:
            p = rig.parents[b]
            # what the bone's basis rotation and its location are taken through (one matrix for most bones)
            rot, loc = rig.parent_transform(b, pose[:, p] if p >= 0 else None)  # (F or 1, 4, 4)
            rot, loc = (np.broadcast_to(m, basis[:, b].shape) for m in (rot, loc))
            j = joint_of.get(b)
            if j is not None and write[:, j].any():
                sel = write[:, j]  # solved on every frame (whole arrays are cheaper than picked rows), kept on these
                g_j = g[:, j] @ unturn[j] if j in unturn else g[:, j]
                w_target = lmul(self.from_model, rmul(g_j, self._write[j]))
                solved = (np.swapaxes(orthonormal(rot[:, :3, :3]), -1, -2) @ w_target) * scales[b][:, None, :]
                out[sel, b, :3, :3] = solved[sel]
                if model.moving[j] and not rig.connected[b]:
                    head = (pos[sel, j] - self._placement(j, g[sel, j])) @ self.from_model.T * self.scale
                    out[sel, b, :3, 3] = np.einsum("fij,fj->fi", np.linalg.inv(loc[sel, :3, :3]),
                                                   head - loc[sel, :3, 3])
            if b in parents:
                pose[:, b] = rig.apply(rot, loc, out[:, b])
                if b in rig.constraints:
                    pose[:, b] = rig.constrain(b, pose[:, b], pose)
        return out


ANCHORS = ("UpperLeg_L", "UpperLeg_R")  # the body's hip joints: where a rig's hips are read from


def anchor_offset(model: ModelSkeleton, rig: Rig, bone_of: dict[int, int], to_model: np.ndarray, scale: float,
                  match: np.ndarray) -> dict[int, np.ndarray]:
    """``{j: c_j}`` for the moving joint whose children are all the :data:`ANCHORS` (mapped): the offset, in
    the joint's own frame (model units), from the rig's bone head to where the model's joint must be for the
    model's hip joints to lie where the rig's are (their mean). Both sides are rigid with the hips, so one
    constant serves every frame; it is zero on the model's own skeleton. Empty for other skeletons."""
    kids = [model.joints.index(n) for n in ANCHORS if n in model.joints]
    if len(kids) != len(ANCHORS) or any(k not in bone_of for k in kids):
        return {}
    j = model.parents[kids[0]]
    if j < 0 or not model.moving[j] or j not in bone_of or any(model.parents[k] != j for k in kids):
        return {}
    heads = rig.heads @ to_model.T / scale  # rest heads in model axes and units
    rig_rel = np.mean([heads[bone_of[k]] - heads[bone_of[j]] for k in kids], axis=0)
    return {j: match[j].T @ rig_rel - np.mean([model.offsets[k] for k in kids], axis=0)}


def _placed_by_rig(ret: Retarget, j: int) -> bool:
    """Whether the rig places joint ``j``: it and every joint above it up to a mapped moving joint (the hips) are
    mapped. An unmapped shin holds the data's mean turn, not the rig's: the ankle below it lands anywhere (a floor
    read 23 m off)."""
    k = j
    while k >= 0:
        if k not in ret.bone_of:
            return False
        if ret.model.moving[k]:
            return True
        k = ret.model.parents[k]
    return True


def ground_lift(ret: Retarget, poses: np.ndarray) -> np.ndarray:
    """``l`` (model units, the model's up axis): how far the rig's keyed poses (K, N, 4, 4) must rise for
    their lowest ankle to sit where the training data's lowest ankles do (within the range of its clips'
    floors); zero when they already do, or when the model or the rig has no ground joints, or none the rig places
    (a joint between one and the root unmapped)."""
    ground = ret.model.ground
    if not ground or not len(poses):
        return np.zeros(3)
    joints = [j for j in (ret.model.joints.index(n) for n in ground["joints"] if n in ret.model.joints)
              if _placed_by_rig(ret, j)]
    if not joints:
        return np.zeros(3)
    up = "xyz".index(ret.model.up_axis.lower())
    lowest = float(ret.model_positions(poses)[:, joints, up].min())
    lift = np.zeros(3)
    lift[up] = float(np.clip(lowest, ground["low"], ground["high"])) - lowest
    return lift


def leg_length(heads: dict[str, np.ndarray], names: tuple[str, ...]) -> float:
    pts = [heads[n] for n in names if n in heads]
    return float(sum(np.linalg.norm(b - a) for a, b in zip(pts, pts[1:], strict=False))) if len(pts) == len(names) \
        else 0.0


SCALE_CHAINS = {
    "body": (("UpperLeg_L", "LowerLeg_L", "Foot_L"), ("UpperLeg_R", "LowerLeg_R", "Foot_R"),
             ("Hips", "Spine", "Chest", "Neck", "Head")),
    "hand": (("MIDDLE_MCP", "MIDDLE_PIP_FE", "MIDDLE_DIP_FE"), ("INDEX_MCP", "INDEX_PIP_FE", "INDEX_DIP_FE"),
             ("WRIST", "MIDDLE_MCP")),
}


def rig_scale(model: ModelSkeleton, rig: Rig, mapping: dict[str, str], skeleton: str) -> float:
    """Rig units per model unit: the first chain (legs, then spine; hand: fingers, then palm) that the rig
    maps whole, compared with the model's; else the median of the mapped bones' length ratios; else 1."""
    model_heads = dict(zip(model.joints, model.rest_positions(), strict=True))
    rig_heads = {j: rig.heads[rig.index[b]] for j, b in mapping.items() if b in rig.index}
    for chain in SCALE_CHAINS.get(skeleton, ()):
        lm, lr = leg_length(model_heads, chain), leg_length(rig_heads, chain)
        if lm > 1e-9 and lr > 1e-9:
            return lr / lm
    ratios = []
    for j, name in enumerate(model.joints):
        p = model.parents[j]
        if p >= 0 and name in rig_heads and model.joints[p] in rig_heads and np.linalg.norm(model.offsets[j]) > 1e-9:
            rig_length = np.linalg.norm(rig_heads[name] - rig_heads[model.joints[p]])
            ratios.append(rig_length / np.linalg.norm(model.offsets[j]))
    return float(np.median(ratios)) if ratios else 1.0


TWIST_PRIOR = 0.5  # cost of turning a bone's twist away from the rest estimate (units of the data's spread)


def _hamilton() -> np.ndarray:
    """(16, 4): the Hamilton product as a linear map of the 16 products a_j b_k (wxyz), so a batch of products is
    one outer product and one matrix product (a few array operations instead of thirty)."""
    table = np.zeros((4, 4, 4))  # [j, k, i]: the sign of a_j b_k in component i
    for j, k, i, sign in ((0, 0, 0, 1), (1, 1, 0, -1), (2, 2, 0, -1), (3, 3, 0, -1), (0, 1, 1, 1), (1, 0, 1, 1),
                          (2, 3, 1, 1), (3, 2, 1, -1), (0, 2, 2, 1), (1, 3, 2, -1), (2, 0, 2, 1), (3, 1, 2, 1),
                          (0, 3, 3, 1), (1, 2, 3, 1), (2, 1, 3, -1), (3, 0, 3, 1)):
        table[j, k, i] = sign
    return table.reshape(16, 4)


HAMILTON = _hamilton()


def quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton products (..., 4) wxyz (broadcasting)."""
    outer = np.asarray(a)[..., :, None] * np.asarray(b)[..., None, :]
    return outer.reshape(outer.shape[:-2] + (16,)) @ HAMILTON


def quat_conj(q: np.ndarray) -> np.ndarray:
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def axis_quats(axis: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Quaternions (..., 4) of turns about one unit axis by each angle (...)."""
    angles = np.asarray(angles, dtype=np.float64)
    return np.concatenate([np.cos(angles / 2)[..., None], np.sin(angles / 2)[..., None] * axis], -1)


def _twist_search(ret: Retarget, poses: np.ndarray, free: set[int], steps: int, passes: int,
                  per_key: bool, world: dict[int, np.ndarray] | None = None, span: float = np.pi
                  ) -> np.ndarray | None:
    """The twists (K, J) radians about each free joint's own bone that make the keyed poses (K, N, 4, 4) most
    typical of the training data (see :func:`fit_twists`): one per joint for all keys (every row the same), or
    one per key (``per_key``). Coordinate descent over a grid of angles (the whole turn, or ``steps`` angles
    from -``span`` to ``span``), parents first, the costs in closed form over the grid (see ``cost``). None when
    the model has no habits to fit to."""
    model = ret.model
    conv = model.conventions or {}
    names = model.joints
    if not free or not len(poses) or not all("spread" in conv.get(n, {}) for n in names):
        return None
    g, _ = ret.model_globals(poses, world=world)
    gq = matrix_to_quat(g)  # (K, J, 4)
    mean = {j: unit(np.array(conv[n]["mean_local"], dtype=np.float64)) for j, n in enumerate(names)}
    precision = {j: np.linalg.inv(np.array(conv[n]["spread"]) + np.radians(3.0) ** 2 * np.eye(3))
                 for j, n in enumerate(names)}
    angles = np.linspace(-np.pi, np.pi, steps, endpoint=False) if span >= np.pi else np.linspace(-span, span, steps)
    axes = {j: unit(np.array(conv[names[j]]["axis"], dtype=np.float64)) for j in free}
    twist = np.zeros((len(poses), len(names)))

    def current(j: int, keys=slice(None)) -> np.ndarray:  # (K, 4), or the listed keys'
        return quat_mul(gq[keys, j], axis_quats(axes[j], twist[keys, j])) if j in free else gq[keys, j]

    cos_half, sin_half = np.cos(angles / 2)[:, None], np.sin(angles / 2)[:, None]  # (S, 1): a turn is cos + sin axis
    cos_full, sin_full = np.cos(angles)[:, None], np.sin(angles)[:, None]

    def cost(k: int, m0: np.ndarray, m1: np.ndarray) -> np.ndarray:
        """The data distance (S, K) of the local rotations q = cos m0 + sin m1 (half angles; m0, m1: (K, 4),
        already measured from joint k's mean): |v|^2 under the precision, v the rotation vector of q. The
        quadratic forms in (cos, sin) are sinusoids of the whole angle, so the grid is a few products of (K,)
        sums; v and -v cost the same, so q's sign does not matter."""
        a, b = m0[:, 1:], m1[:, 1:]
        pa, pb = a @ precision[k], b @ precision[k]
        aa, ab, bb = (pa * a).sum(1), (pa * b).sum(1), (pb * b).sum(1)
        quad = 2 * (aa + bb) + cos_full * (2 * (aa - bb)) + sin_full * (4 * ab)  # 4 (vector part)^T P (vector part)
        na, nab, nb = (a * a).sum(1), (a * b).sum(1), (b * b).sum(1)
        norm = np.sqrt(np.maximum((na + nb) / 2 + cos_full * ((na - nb) / 2) + sin_full * nab, 0.0))
        with np.errstate(divide="ignore"):  # a half turn (w = 0): arctan(inf) = pi / 2, as arctan2 gives
            half = np.arctan(norm / np.abs(cos_half * m0[:, 0] + sin_half * m1[:, 0]))
        return quad * (half / np.maximum(norm, 1e-12)) ** 2

    prior = TWIST_PRIOR * 2 * (1 - np.cos(angles))[:, None]  # (S, 1)
    seen: dict[tuple, tuple[np.ndarray | None, np.ndarray]] = {}  # a term's neighbour twists and grid

    def term(key: tuple, neighbour: int, make) -> np.ndarray:
        """A cost grid (S, K) that depends on one neighbouring joint's twists: computed again (a later pass)
        only for the keys whose neighbour twist changed since."""
        now = twist[:, neighbour].copy() if neighbour in free else None
        if key not in seen:
            seen[key] = (now, make(slice(None)))
        before, grid = seen[key]
        if now is not None and not np.array_equal(now, before):
            changed = np.flatnonzero(now != before)
            grid = grid.copy()
            grid[:, changed] = make(changed)
            seen[key] = (now, grid)
        return grid

    for _ in range(passes):
        for j in sorted(free):
            p = model.parents[j]
            total = prior + 0.0
            pure = np.concatenate([[0.0], axes[j]])  # the turn's axis as a quaternion
            if p >= 0:  # the joint's local rotation: mean_j^-1 parent^-1 g_j turn

                def parent_term(keys, j=j, p=p, pure=pure) -> np.ndarray:
                    m0 = quat_mul(quat_conj(mean[j]), quat_mul(quat_conj(current(p, keys)), gq[keys, j]))
                    return cost(j, m0, quat_mul(m0, pure))

                total = total + term(("parent", j), p, parent_term)
            for k in model.children(j):  # each child's: mean_k^-1 turn^-1 g_j^-1 child

                def child_term(keys, j=j, k=k, pure=pure) -> np.ndarray:
                    inner = quat_mul(quat_conj(gq[keys, j]), current(k, keys))
                    return cost(k, quat_mul(quat_conj(mean[k]), inner),
                                -quat_mul(quat_conj(mean[k]), quat_mul(pure, inner)))

                total = total + term(("child", j, k), k, child_term)
            if per_key:
                twist[:, j] = angles[np.argmin(total, axis=0)]
            else:
                twist[:, j] = angles[int(np.argmin(total.mean(axis=1)))]
    return twist


def fit_twists(ret: Retarget, poses: np.ndarray, free: set[int], steps: int = 72, passes: int = 2,
               world: dict[int, np.ndarray] | None = None, span: float = np.pi) -> np.ndarray:
    """The matching pose with each free joint's twist about its own bone (which moves no joint) chosen so that
    the rig's keyed poses (K, N, 4, 4), read through it, are as typical of the training data as they can be:
    the Mahalanobis distance of every local rotation from the data's mean, under the data's spread, summed
    over the keys (a knee off its hinge, a forearm twisted against the capture's habit cost much), plus a
    small cost for leaving the rest estimate. Coordinate descent over a grid of angles (the whole turn, or
    -``span`` to ``span``), parents first."""
    twist = _twist_search(ret, poses, free, steps, passes, per_key=False, world=world, span=span)
    if twist is None:
        return ret.match
    out = ret.match.copy()
    conv = ret.model.conventions
    for j in free:
        out[j] = ret.match[j] @ axis_rotation(unit(np.array(conv[ret.model.joints[j]]["axis"], dtype=np.float64)),
                                              twist[0, j])
    return out


def short_joints(model: ModelSkeleton, free: set[int], ratio: float = 0.4) -> set[int]:
    """Free joints whose bone fixes little of the model's shape: leaves of zero length (a hand, a toe, the head)
    and bones shorter than ``ratio`` of their parent's (a clavicle). Rigs differ most there."""
    out = set()
    for j in free:
        kids = [k for k in model.children(j) if np.linalg.norm(model.offsets[k]) > 1e-9]
        own = np.linalg.norm(model.offsets[kids[0]]) if kids else 0.0
        parent = np.linalg.norm(model.offsets[j])
        if own < ratio * parent or not kids:
            out.add(j)
    return out


def fit_offsets(ret: Retarget, poses: np.ndarray, joints: set[int],
                world: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """The matching pose with each of ``joints`` turned so that the rig's keyed local rotations (K poses) are,
    on average, the training data's mean local rotation (a rig's neutral toe or clavicle is the data's): the
    rotation nearest to the mean of R_k^T mean over the keys, parents first (each of ``joints`` is mapped)."""
    conv = ret.model.conventions or {}
    out = ret.match.copy()
    if not joints or not len(poses):
        return out
    g, _ = ret.model_globals(poses, world=world)
    for j in sorted(joints):
        p = ret.model.parents[j]
        if p < 0:
            continue
        local = np.swapaxes(g[:, p], -1, -2) @ g[:, j]
        mean = quat_to_matrix(np.array(conv[ret.model.joints[j]]["mean_local"]))
        delta = orthonormal((np.swapaxes(local, -1, -2) @ mean).mean(axis=0))
        out[j] = out[j] @ delta
        # a mapped joint's global turns with its match (G_j = T W_b B_b^-1 T^-1 M_j); the joints the rig lacks
        # below it follow M_j^T M_child, which the same turn leaves as it was
        g[:, j] = g[:, j] @ delta
    return out


CONVENTION_ROUNDS = 8  # at most this many rounds of fitting a rig's short bones and twists together
SETTLED = np.radians(0.5)  # a round that turns no joint's match further than this ends the fitting
NARROW = (np.radians(20.0), 17)  # after the first round, twists are searched this far either side (span, steps)


def fit_conventions(ret: Retarget, poses: np.ndarray, free: set[int],
                    world: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """The matching pose with the short bones turned to the data's mean (:func:`fit_offsets`) and the free
    joints' twists fitted (:func:`fit_twists`) together. Each moves what the other sees (a thigh's twist turns
    the foot's local rotation, a foot's offset the ankle's twist cost), so fitted once each the pair lands far
    from the rig's conventions (on a sidestepping walk put on a Mixamo rig: 20-70 degrees on legs, feet and
    forearms); the two alternate until a round turns no joint by more than :data:`SETTLED` (at most
    :data:`CONVENTION_ROUNDS`), the first round searching every twist, later ones near the last."""
    short = short_joints(ret.model, free)
    for r in range(CONVENTION_ROUNDS):
        before = ret.match
        ret = dataclasses.replace(ret, match=fit_offsets(ret, poses, short, world))
        span, steps = (np.pi, 72) if r == 0 else NARROW
        ret = dataclasses.replace(ret, match=fit_twists(ret, poses, free, steps=steps, world=world, span=span))
        if rotation_angle(np.swapaxes(before, -1, -2) @ ret.match).max() < SETTLED:
            break
    return ret.match


KEY_TWIST_SPAN = (np.radians(90.0), 37)  # a key's own twist is searched this far either side of the match (5 deg)


def key_twist_joints(model: ModelSkeleton, free: set[int]) -> set[int]:
    """The free joints that may take a twist per key: those no moving joint hangs from. A moving joint's
    translation lies in its parent's frame, away from the parent's bone (the hips walk metres from a static
    root bone), so a twist there that changes from key to key, interpolated between keys, would swing the hips
    about the parent's bone (tens of centimetres off between keys on a rig whose root bone maps to joint_Root)."""
    return {j for j in free if not any(model.moving[k] for k in model.children(j))}


def fit_key_twists(ret: Retarget, poses: np.ndarray, free: set[int], passes: int = 2,
                   world: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """(K, J) twists, one per keyed pose and free joint, about the joint's own bone: :func:`fit_twists`'s
    cost per key instead of over all keys (a Mixamo knee that is no hinge in its own frame gets its thigh
    turned at each key so that the knee bends about the data's hinge), each held near the shared match: within
    :data:`KEY_TWIST_SPAN` of it (on the rigs of ``bench rig`` every key's twist lies within 20 deg)."""
    span, steps = KEY_TWIST_SPAN
    twist = _twist_search(ret, poses, free, steps, passes, per_key=True, world=world, span=span)
    return np.zeros((len(poses), len(ret.model.joints))) if twist is None else twist


def build(model_info: dict, rig: Rig, mapping: dict[str, str], mirror: str = "AUTO", rest_mode: str = "AUTO",
          poses: np.ndarray | None = None, key_frames=None, object_rotation: np.ndarray | None = None,
          floor: bool = True, side: str = "") -> Retarget:
    """The conversion for a rig and a model of ``/v1/models``. ``mirror``: 'AUTO' (a hand of the other side
    than the hand model's, :func:`_left_hand`), 'ON', 'OFF'. ``rest_mode``: see
    :func:`matching_pose`; ``poses``: the rig's keyed poses (K, N, 4, 4, armature space), from which the
    short bones and twists of a REST match are refined (:func:`fit_conventions`), and, given their
    ``key_frames``, the twists per key (:func:`fit_key_twists`, interpolated between keys on the way back).
    ``object_rotation``: the armature object's world matrix (3x3): the world's up is Blender's Z, the
    armature's own axes may be anything (an FBX import leaves them Y-up under an object turned 90 degrees), so
    the armature is read turned as its object turns it. The object's scale changes nothing; a mirroring one is
    taken as a mirror through the rig's own left-right axis (X, the axis Blender's symmetric rigs mirror
    through), which is no turn. ``floor``: bring the keyed feet onto the model's floor (:func:`ground_lift`);
    False reads the rig at its own height. ``side``: the side the hand's bone names say ('L', 'R'), for a hand whose
    geometry does not tell (:func:`_left_hand`)."""
    model = ModelSkeleton.from_info(model_info)
    mapping = {j: b for j, b in mapping.items() if b in rig.index and j in model.joints}
    c_inv = np.linalg.inv(axis_conversion(model.up_axis))
    if object_rotation is not None:
        turn = np.asarray(object_rotation, dtype=np.float64)[:3, :3]
        c_inv = c_inv @ orthonormal(turn @ MIRROR_X if np.linalg.det(turn) < 0 else turn)
    own_rest = resolve_rest_mode(model, mapping, rest_mode) == "MODEL"
    mirrored = mirror == "ON" or (mirror == "AUTO" and _left_hand(model_info, rig, mapping, c_inv, own_rest, poses,
                                                                  side))
    to_model = (MIRROR_X @ c_inv) if mirrored else c_inv
    match, used, free = matching_pose(model, rig, mapping, to_model, rest_mode)
    scale = rig_scale(model, rig, mapping, model_info.get("skeleton", "body"))
    ret = Retarget(model, rig, mapping, to_model, scale, match, used, mirrored)
    if used == "REST" and poses is not None and len(poses):
        world = ret.world_rotations(poses)  # the same bones' rotations for every fit below
        ret = Retarget(model, rig, mapping, to_model, scale, fit_conventions(ret, poses, free, world), used, mirrored)
        if key_frames is not None:
            keyed = key_twist_joints(model, free)
            twists = fit_key_twists(ret, poses, keyed, world=world)
            axes = {j: unit(np.array(model.conventions[model.joints[j]]["axis"], dtype=np.float64)) for j in keyed}
            ret = Retarget(model, rig, mapping, to_model, scale, ret.match, used, mirrored, twist_axes=axes,
                           key_frames=np.asarray(key_frames, dtype=np.float64), key_twists=twists)
    if poses is not None and floor:
        ret.lift = ground_lift(ret, poses)
    return ret


THUMB_OFF_PALM = 0.2  # the least handedness (sine of the thumb's angle off the palm's plane) that tells a hand's side


def _handedness(p: dict[str, np.ndarray]) -> float:
    """The handedness of (finger direction, index to pinky, thumb) as unit directions: about the sine of the thumb's
    angle off the palm's plane, its sign the hand's side (the data's habit 0.42, ManipNet's rest -0.085, Mixamo's
    left hand at rest 0.34, Rigify's 0.50)."""
    return float(np.linalg.det(np.stack([unit(p["MIDDLE_MCP"] - p["WRIST"]), unit(p["INDEX_MCP"] - p["PINKY_MCP"]),
                                         unit(p["THUMB_MCP_FE"] - p["WRIST"])])))


def _left_hand(model_info: dict, rig: Rig, mapping: dict[str, str], c_inv: np.ndarray, own_rest: bool,
               poses: np.ndarray | None = None, side: str = "") -> bool:
    """Whether a hand model's mapped hand is the other hand than the model's: the handedness of (finger
    direction, index-to-pinky, thumb), the rig's against the model's in the pose its training data holds on average
    (:meth:`ModelSkeleton.habit_positions`), or at its rest when the rig's rest is the model's own (``own_rest``: a
    BVH import of the training skeleton, compared rest to rest).

    The side needs the thumb off the palm's plane: a rig's rest and the data's habit hold it well on the palm's side,
    ManipNet's rest about in the plane (its MCP joint 2 % of the hand's length off it, on the back's side: the sign
    of the other hand). A rig whose rest holds the thumb within :data:`THUMB_OFF_PALM` of the plane (ManipNet's hand
    imported and renamed, so not matched rest to rest: its side came out backwards) is judged on its keyed
    ``poses`` (K, N, 4, 4), where the thumb stands off the palm as in the data; with none that tell, on its name's
    ``side`` ('L': the model's, 'R': mirrored), and last on its rest as it is."""
    if model_info.get("skeleton") != "hand":
        return False
    names = ("WRIST", "INDEX_MCP", "PINKY_MCP", "MIDDLE_MCP", "THUMB_MCP_FE")
    if not all(mapping.get(n) in rig.index for n in names):
        return False
    model = ModelSkeleton.from_info(model_info)
    at = model.rest_positions() if own_rest or model.conventions is None else model.habit_positions()
    theirs = _handedness(dict(zip(model.joints, at, strict=True)))
    bones = [rig.index[mapping[n]] for n in names]
    rest = _handedness({n: c_inv @ rig.heads[b] for n, b in zip(names, bones, strict=True)})
    if own_rest or abs(rest) >= THUMB_OFF_PALM:
        return rest * theirs < 0
    if poses is not None and len(poses):
        posed = float(np.mean([_handedness(dict(zip(names, pose[bones, :3, 3] @ c_inv.T, strict=True)))
                               for pose in poses]))
        if abs(posed) >= THUMB_OFF_PALM:
            return posed * theirs < 0
    if side in ("L", "R"):
        return side == "R"
    return rest * theirs < 0


# --- rotation modes (Blender's ``rotation_mode``) -----------------------------------------------------------


def euler_to_matrix(angles: np.ndarray, order: str) -> np.ndarray:
    """Blender Euler angles (..., 3) [x, y, z] in ``rotation_mode`` order (``'XYZ'``: X applied first,
    R = Rz Ry Rx) -> matrices (..., 3, 3). Each turn mixes two rows of the matrix so far, entry by entry (arrays
    of all the angles at once: no stack of small matrix products)."""
    angles = np.asarray(angles, dtype=np.float64)
    rows = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]  # rows[r][c]: scalars until a turn fills them
    for a in order:
        k = "XYZ".index(a)
        c, s = np.cos(angles[..., k]), np.sin(angles[..., k])
        i, j = [(1, 2), (2, 0), (0, 1)][k]  # the turn about k: row i <- c row i - s row j, row j <- s row i + c row j
        rows[i], rows[j] = ([c * x - s * y for x, y in zip(rows[i], rows[j], strict=True)],
                            [s * x + c * y for x, y in zip(rows[i], rows[j], strict=True)])
    shape = angles.shape[:-1]
    return np.stack([np.broadcast_to(x, shape) for row in rows for x in row], axis=-1).reshape(shape + (3, 3))


def mode_to_matrix(values: np.ndarray, mode: str) -> np.ndarray:
    """A rotation property's values (..., width) in a ``rotation_mode`` -> matrices (..., 3, 3)."""
    if mode in ("QUATERNION", "AXIS_ANGLE"):
        return quat_to_matrix(mode_to_quat(values, mode))
    return euler_to_matrix(np.asarray(values, dtype=np.float64), mode)


def mode_to_quat(values: np.ndarray, mode: str) -> np.ndarray:
    """A rotation property's values (..., width) -> unit quaternions (..., 4) wxyz, as Blender reads them
    (a zero quaternion or axis is no rotation)."""
    values = np.asarray(values, dtype=np.float64)
    if mode == "QUATERNION":
        norm = np.linalg.norm(values, axis=-1, keepdims=True)
        return np.where(norm < 1e-12, [1.0, 0.0, 0.0, 0.0], values / np.maximum(norm, 1e-12))
    if mode == "AXIS_ANGLE":
        axis = values[..., 1:4]
        norm = np.linalg.norm(axis, axis=-1, keepdims=True)
        half = np.where(norm[..., 0] < 1e-12, 0.0, values[..., 0] / 2)
        return np.concatenate([np.cos(half)[..., None], axis / np.maximum(norm, 1e-12) * np.sin(half)[..., None]], -1)
    q = np.zeros(values.shape[:-1] + (4,))
    q[..., 0] = 1.0
    for a in mode:  # the first axis of the order turns first: q = q3 q2 q1
        k = "XYZ".index(a)
        step = np.zeros_like(q)
        step[..., 0] = np.cos(values[..., k] / 2)
        step[..., 1 + k] = np.sin(values[..., k] / 2)
        q = quat_mul(step, q)
    return q
