"""BVH motion files: read and write any channel layout, vectorised, with errors that name file and line.

A BVH file is a joint hierarchy (offsets, per-joint channel lists in any order, End Sites) followed by a
frame table. This module keeps the file's own layout (``channels`` per joint, the raw ``motion`` table)
so that writing a file read from disk reproduces it, and offers the joint-wise views the rest of
anyfill works with: local rotations as quaternions and local translations.
"""

from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.motion.rotations import euler_to_quat, quat_identity, quat_to_euler

ROTATION_CHANNELS = ("Xrotation", "Yrotation", "Zrotation")
POSITION_CHANNELS = ("Xposition", "Yposition", "Zposition")
VALID_CHANNELS = frozenset(ROTATION_CHANNELS + POSITION_CHANNELS)


class BVHError(ValueError):
    """A malformed BVH file; the message starts with ``file:line:``."""

    def __init__(self, path: str | Path | None, line: int | None, message: str):
        where = str(path) if path is not None else "<bvh>"
        if line is not None:
            where += f":{line}"
        super().__init__(f"{where}: {message}")
        self.path, self.line = path, line


@dataclass
class BVH:
    """A parsed BVH file. ``motion`` is the raw frame table (frames x channels) in file order."""

    names: list[str]
    parents: np.ndarray  # (J,) int, -1 for the root
    offsets: np.ndarray  # (J, 3)
    channels: list[tuple[str, ...]]  # per joint, in file order
    end_sites: dict[int, np.ndarray] = field(default_factory=dict)  # joint index -> End Site offset
    frame_time: float = 1.0 / 30.0
    motion: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))

    # --- layout -------------------------------------------------------------------------------------
    @property
    def n_joints(self) -> int:
        return len(self.names)

    @property
    def n_frames(self) -> int:
        return int(self.motion.shape[0])

    @property
    def fps(self) -> float:
        return 1.0 / self.frame_time

    def channel_index(self) -> list[dict[str, int]]:
        """For each joint, channel name -> column of ``motion``."""
        out, col = [], 0
        for chans in self.channels:
            out.append({c: col + i for i, c in enumerate(chans)})
            col += len(chans)
        return out

    def rotation_order(self, joint: int) -> str | None:
        """Intrinsic Euler order of a joint's rotation channels (``"ZXY"`` for Z, X, Y), or None."""
        rot = [c[0] for c in self.channels[joint] if c in ROTATION_CHANNELS]
        if not rot:
            return None
        if len(rot) != 3:
            raise ValueError(f"joint {self.names[joint]!r} has {len(rot)} rotation channels; need 0 or 3")
        return "".join(rot)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no joint named {name!r}; joints are {', '.join(self.names)}") from None

    # --- joint-wise views ---------------------------------------------------------------------------
    def local_rotations(self) -> np.ndarray:
        """Local joint rotations (frames, joints, 4) as quaternions (x, y, z, w)."""
        q = quat_identity((self.n_frames, self.n_joints))
        for j, idx in enumerate(self.channel_index()):
            order = self.rotation_order(j)
            if order is not None:
                cols = [idx[f"{a}rotation"] for a in order]
                q[:, j] = euler_to_quat(self.motion[:, cols], order)
        return q

    def local_translations(self) -> np.ndarray:
        """Local joint translations (frames, joints, 3): position channels where a joint has them
        (they replace the offset, as in Blender's importer), otherwise the constant offset."""
        t = np.broadcast_to(self.offsets, (self.n_frames, self.n_joints, 3)).copy()
        for j, idx in enumerate(self.channel_index()):
            for a, name in enumerate(POSITION_CHANNELS):
                if name in idx:
                    t[:, j, a] = self.motion[:, idx[name]]
        return t

    def set_local(self, rotations: np.ndarray, translations: np.ndarray | None = None) -> BVH:
        """A copy whose frame table holds these local rotations (frames, joints, 4) and, for joints
        with position channels, translations (frames, joints, 3). Euler curves are kept continuous."""
        rotations = np.asarray(rotations, dtype=np.float64)
        n = rotations.shape[0]
        if rotations.shape != (n, self.n_joints, 4):
            raise ValueError(f"rotations must be (frames, {self.n_joints}, 4), got {rotations.shape}")
        motion = np.zeros((n, sum(len(c) for c in self.channels)))
        for j, idx in enumerate(self.channel_index()):
            order = self.rotation_order(j)
            if order is not None:
                e = quat_to_euler(rotations[:, j], order, continuous_axis=0)
                for k, a in enumerate(order):
                    motion[:, idx[f"{a}rotation"]] = e[:, k]
            for a, name in enumerate(POSITION_CHANNELS):
                if name in idx:
                    src = translations[:, j, a] if translations is not None else self.offsets[j, a]
                    motion[:, idx[name]] = src
        return BVH(self.names, self.parents, self.offsets, self.channels, self.end_sites, self.frame_time, motion)


# --- reading ----------------------------------------------------------------------------------------

_TOKEN = re.compile(r"\S+")


def _tokens(text: str, first_line: int = 1) -> list[tuple[str, int]]:
    out = []
    for i, line in enumerate(text.splitlines(), start=first_line):
        out.extend((m.group(0), i) for m in _TOKEN.finditer(line))
    return out


def _float(tok: tuple[str, int], path) -> float:
    try:
        v = float(tok[0])
    except ValueError:
        raise BVHError(path, tok[1], f"expected a number, found {tok[0]!r}") from None
    if not np.isfinite(v):
        raise BVHError(path, tok[1], f"non-finite value {tok[0]!r}")
    return v


def _parse_hierarchy(tokens: list[tuple[str, int]], path) -> dict:
    names: list[str] = []
    parents: list[int] = []
    offsets: list[list[float]] = []
    channels: list[tuple[str, ...]] = []
    end_sites: dict[int, np.ndarray] = {}
    pos = 0

    def take(expect: str | None = None) -> tuple[str, int]:
        nonlocal pos
        if pos >= len(tokens):
            last = tokens[-1][1] if tokens else 1
            raise BVHError(path, last, f"file ends inside the hierarchy{f' (expected {expect!r})' if expect else ''}")
        tok = tokens[pos]
        pos += 1
        if expect is not None and tok[0] != expect:
            raise BVHError(path, tok[1], f"expected {expect!r}, found {tok[0]!r}")
        return tok

    def offset() -> list[float]:
        take("OFFSET")
        return [_float(take(), path) for _ in range(3)]

    def joint(parent: int) -> None:
        name_tok = take()
        if name_tok[0] in ("{", "}"):
            raise BVHError(path, name_tok[1], "joint has no name")
        if name_tok[0] in names:
            raise BVHError(path, name_tok[1], f"duplicate joint name {name_tok[0]!r}")
        take("{")
        j = len(names)
        names.append(name_tok[0])
        parents.append(parent)
        offsets.append(offset())
        chans: tuple[str, ...] = ()
        if pos < len(tokens) and tokens[pos][0] == "CHANNELS":
            take()
            count_tok = take()
            if not count_tok[0].isdigit():
                raise BVHError(path, count_tok[1], f"channel count must be an integer, found {count_tok[0]!r}")
            chans = tuple(take()[0] for _ in range(int(count_tok[0])))
            bad = [c for c in chans if c not in VALID_CHANNELS]
            if bad or len(set(chans)) != len(chans):
                raise BVHError(
                    path, count_tok[1],
                    f"joint {name_tok[0]!r}: channels {' '.join(chans)} do not match the count "
                    f"{count_tok[0]} of distinct X/Y/Z position/rotation channels",
                )
            if sum(c in ROTATION_CHANNELS for c in chans) not in (0, 3):
                raise BVHError(path, count_tok[1], f"joint {name_tok[0]!r} must have 0 or 3 rotation channels")
        channels.append(chans)
        while True:
            tok = take()
            if tok[0] == "}":
                return
            if tok[0] == "JOINT":
                joint(j)
            elif tok[0] == "End":
                site = take()
                if site[0] != "Site":
                    raise BVHError(path, site[1], f"expected 'Site' after 'End', found {site[0]!r}")
                take("{")
                end_sites[j] = np.array(offset())
                take("}")
            else:
                raise BVHError(path, tok[1], f"unexpected {tok[0]!r} inside joint {name_tok[0]!r}")

    take("HIERARCHY")
    take("ROOT")
    try:
        joint(-1)
    except RecursionError:  # the parser descends once per level: no skeleton nests this deep
        raise BVHError(path, None, f"joints nested deeper than {sys.getrecursionlimit() // 2} levels") from None
    if pos != len(tokens):
        tok = tokens[pos]
        raise BVHError(path, tok[1], f"unexpected {tok[0]!r} after the root joint (only one ROOT is supported)")
    return dict(
        names=names, parents=np.array(parents, dtype=np.int64), offsets=np.array(offsets, dtype=np.float64),
        channels=channels, end_sites=end_sites,
    )


def _locate_motion_error(lines: list[str], first_line: int, n_channels: int, n_frames: int, path) -> BVHError:
    """Slow path, only after the vectorised parse failed: find the first offending line."""
    rows = 0
    last = first_line - 1  # the last line that holds a frame (the 'Frame Time:' line before any)
    for i, line in enumerate(lines):
        toks = line.split()
        if not toks:
            continue
        if rows == n_frames:
            return BVHError(path, first_line + i, f"more frames than 'Frames: {n_frames}' (this is frame {rows})")
        if len(toks) != n_channels:
            return BVHError(path, first_line + i, f"frame {rows} has {len(toks)} values, expected {n_channels}")
        for t in toks:
            try:
                v = float(t)
            except ValueError:
                return BVHError(path, first_line + i, f"non-numeric value {t!r} in frame {rows}")
            if not np.isfinite(v):
                return BVHError(path, first_line + i, f"non-finite value {t!r} in frame {rows}")
        rows += 1
        last = first_line + i
    if rows < n_frames:
        return BVHError(path, last, f"file is truncated: 'Frames: {n_frames}' but only {rows} frames follow")
    return BVHError(path, last, f"'Frames: {n_frames}' but {rows} frames follow")


def parse(text: str, path: str | Path | None = None) -> BVH:
    """Parse BVH text (a leading UTF-8 byte-order mark is skipped). Raises :class:`BVHError` naming the
    file and line of the first problem."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    m = re.search(r"^[ \t]*MOTION[ \t]*$", text, flags=re.MULTILINE)
    if m is None:
        raise BVHError(path, len(text.rstrip().split("\n")), "no MOTION section (file truncated?)")
    head_text = text[: m.start()]
    h = _parse_hierarchy(_tokens(head_text), path)
    n_channels = sum(len(c) for c in h["channels"])

    motion_line = head_text.count("\n") + 1
    lines = text[m.end() :].split("\n")[1:]
    meta: dict[str, str] = {}
    i = 0
    for key in ("Frames:", "Frame Time:"):  # as Blender's importer: any case, any spacing ("Frame\tTime:")
        while i < len(lines) and not lines[i].strip():
            i += 1
        found = re.match(r"\s*" + r"\s+".join(key.split()) + r"\s*", lines[i], flags=re.IGNORECASE) \
            if i < len(lines) else None
        if found is None:
            raise BVHError(path, motion_line + 1 + i, f"expected '{key}' line")
        meta[key] = lines[i][found.end() :].strip()
        i += 1
    try:
        n_frames = int(meta["Frames:"])
        if n_frames < 0:
            raise ValueError
    except ValueError:
        raise BVHError(path, motion_line + 1, f"bad frame count {meta['Frames:']!r}") from None
    try:
        frame_time = float(meta["Frame Time:"])
        if not (frame_time > 0 and np.isfinite(frame_time)):
            raise ValueError
    except ValueError:
        raise BVHError(path, motion_line + 2, f"bad frame time {meta['Frame Time:']!r}") from None

    first_data_line = motion_line + 1 + i
    # one row per non-blank line, each with exactly n_channels values (a valid total can hide one short
    # and one long line, so the rows are checked one by one)
    rows = [r for r in (ln.split() for ln in lines[i:]) if r]
    motion = None
    if len(rows) == n_frames and all(len(r) == n_channels for r in rows):
        try:
            motion = np.array(rows, dtype=np.float64).reshape(n_frames, n_channels)
        except ValueError:
            motion = None
        if motion is not None and not np.isfinite(motion).all():
            motion = None
    if motion is None:
        raise _locate_motion_error(lines[i:], first_data_line, n_channels, n_frames, path)
    return BVH(frame_time=frame_time, motion=motion, **h)


def read(path: str | Path) -> BVH:
    """Read a BVH file; nothing half-loaded is ever returned."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError as e:
        raise BVHError(path, None, f"not a text file ({e.reason})") from None
    return parse(text, path)


# --- writing ----------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:.10g}"


def dumps(bvh: BVH) -> str:
    """BVH text for ``bvh``. Numbers are written with 10 significant digits, so values read from a
    file (6-7 significant digits in practice) come back exactly."""
    out = io.StringIO()
    out.write("HIERARCHY\n")
    children: dict[int, list[int]] = {j: [] for j in range(bvh.n_joints)}
    for j, p in enumerate(bvh.parents):
        if p >= 0:
            children[int(p)].append(j)

    def write_joint(j: int, depth: int) -> None:
        ind = "\t" * depth
        out.write(f"{ind}{'ROOT' if bvh.parents[j] < 0 else 'JOINT'} {bvh.names[j]}\n{ind}{{\n")
        out.write(f"{ind}\tOFFSET {' '.join(_fmt(v) for v in bvh.offsets[j])}\n")
        if bvh.channels[j]:
            out.write(f"{ind}\tCHANNELS {len(bvh.channels[j])} {' '.join(bvh.channels[j])}\n")
        for c in children[j]:
            write_joint(c, depth + 1)
        if j in bvh.end_sites:
            out.write(f"{ind}\tEnd Site\n{ind}\t{{\n")
            out.write(f"{ind}\t\tOFFSET {' '.join(_fmt(v) for v in bvh.end_sites[j])}\n{ind}\t}}\n")
        out.write(f"{ind}}}\n")

    roots = [j for j in range(bvh.n_joints) if bvh.parents[j] < 0]
    if len(roots) != 1:
        raise ValueError(f"a BVH needs exactly one root joint, found {len(roots)}")
    write_joint(roots[0], 0)
    out.write(f"MOTION\nFrames: {bvh.n_frames}\nFrame Time: {_fmt(bvh.frame_time)}\n")
    if bvh.n_frames:
        if not np.isfinite(bvh.motion).all():
            raise ValueError("refusing to write a BVH with NaN or infinite values")
        np.savetxt(out, bvh.motion, fmt="%.10g", delimiter=" ")
    return out.getvalue()


def write(bvh: BVH, path: str | Path) -> None:
    """Write atomically (temporary file, then rename), so a failure never leaves half a file."""
    path = Path(path)
    text = dumps(bvh)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
