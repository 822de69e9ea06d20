"""BVH reading and writing: exact round trips on real files, any channel layout, errors with file:line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from training.motion import bvh
from training.motion.rotations import EULER_ORDERS, quat_angle

HAND_FILE = "manipnet/teapot3/leftHand.bvh"
BODY_FILES = (
    "bandai/dataset-1/dataset-1_walk-back_normal_001.bvh",  # joint_Root moves
    "bandai/dataset-2/dataset-2_raise-up-both-hands_feminine_008.bvh",
)
SHORT_REAL_FILE = "bandai/dataset-2/dataset-2_raise-up-both-hands_active_025.bvh"  # 161 lines


def assert_same_bvh(a: bvh.BVH, b: bvh.BVH) -> None:
    assert a.names == b.names
    assert np.array_equal(a.parents, b.parents)
    assert np.array_equal(a.offsets, b.offsets)
    assert a.channels == b.channels
    assert sorted(a.end_sites) == sorted(b.end_sites)
    for j in a.end_sites:
        assert np.array_equal(a.end_sites[j], b.end_sites[j])
    assert a.frame_time == b.frame_time
    assert a.motion.shape == b.motion.shape
    assert np.array_equal(a.motion, b.motion)


def rotation_columns(b: bvh.BVH) -> list[int]:
    return [col for idx in b.channel_index() for name, col in idx.items() if name in bvh.ROTATION_CHANNELS]


# --- round trips on real files ---------------------------------------------------------------------


@pytest.mark.data
@pytest.mark.parametrize("rel", (HAND_FILE, *BODY_FILES))
def test_real_file_round_trip_is_exact(data_root: Path, rel: str) -> None:
    original = bvh.read(data_root / rel)
    assert original.n_frames > 0 and original.motion.shape[1] == sum(len(c) for c in original.channels)
    again = bvh.parse(bvh.dumps(original))
    assert_same_bvh(original, again)
    # writing what was read gives the same text again (a fixed point)
    assert bvh.dumps(again) == bvh.dumps(original)


@pytest.mark.data
def test_real_file_layout(data_root: Path) -> None:
    hand = bvh.read(data_root / HAND_FILE)
    assert hand.n_joints == 17 and hand.names[0] == "WRIST"
    assert hand.channels[0] == ("Xposition", "Yposition", "Zposition", "Yrotation", "Xrotation", "Zrotation")
    assert all(c == ("Yrotation", "Xrotation", "Zrotation") for c in hand.channels[1:])
    assert hand.rotation_order(0) == "YXZ"
    assert hand.fps == pytest.approx(120.0, rel=1e-6)
    assert len(hand.end_sites) == 5  # one per finger, zero offset
    assert all(np.array_equal(o, np.zeros(3)) for o in hand.end_sites.values())

    body = bvh.read(data_root / BODY_FILES[0])
    assert body.n_joints == 22 and body.names[:2] == ["joint_Root", "Hips"]
    assert all(
        c == ("Xposition", "Yposition", "Zposition", "Zrotation", "Xrotation", "Yrotation") for c in body.channels
    )
    assert body.rotation_order(5) == "ZXY"
    assert body.fps == pytest.approx(30.0, rel=1e-4)


@pytest.mark.data
def test_write_and_read_back(data_root: Path, tmp_path: Path) -> None:
    original = bvh.read(data_root / BODY_FILES[1])
    out = tmp_path / "copy.bvh"
    bvh.write(original, out)
    assert_same_bvh(original, bvh.read(out))
    assert [p.name for p in tmp_path.iterdir()] == ["copy.bvh"]  # no temporary file left behind


def test_write_refuses_nan(tmp_path: Path) -> None:
    b = bvh.parse(TINY)
    b.motion[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        bvh.write(b, tmp_path / "bad.bvh")
    assert not (tmp_path / "bad.bvh").exists()


# --- channel layouts and Euler orders --------------------------------------------------------------

LAYOUT = """HIERARCHY
ROOT Base
{{
\tOFFSET 1 2 3
\tCHANNELS 6 Zposition Xposition Yposition Xrotation Yrotation Zrotation
\tJOINT Mid
\t{{
\t\tOFFSET 0 5 0
\t\tCHANNELS 6 Zrotation Yrotation Xrotation Xposition Yposition Zposition
\t\tJOINT Tip
\t\t{{
\t\t\tOFFSET 0 0 2
\t\t\tCHANNELS 3 {tip}
\t\t\tEnd Site
\t\t\t{{
\t\t\t\tOFFSET 0 1 0
\t\t\t}}
\t\t}}
\t}}
}}
MOTION
Frames: {n}
Frame Time: 0.04
{rows}
"""


def layout_file(tip_order: str, n: int = 6, seed: int = 0) -> tuple[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    motion = np.round(rng.uniform(-179.0, 179.0, size=(n, 15)), 4)
    motion[:, [6, 7, 8]] = np.round(rng.uniform(-80.0, 80.0, size=(n, 3)), 4)  # Mid's Y (middle) stays tame
    rows = "\n".join(" ".join(f"{v:.4f}" for v in row) for row in motion)
    tip = " ".join(f"{a}rotation" for a in tip_order)
    return LAYOUT.format(tip=tip, n=n, rows=rows), motion


def elementary(axis: str, deg: np.ndarray) -> np.ndarray:
    c, s = np.cos(np.deg2rad(deg)), np.sin(np.deg2rad(deg))
    one, zero = np.ones_like(c), np.zeros_like(c)
    rows = {
        "X": [[one, zero, zero], [zero, c, -s], [zero, s, c]],
        "Y": [[c, zero, s], [zero, one, zero], [-s, zero, c]],
        "Z": [[c, -s, zero], [s, c, zero], [zero, zero, one]],
    }[axis]
    return np.moveaxis(np.array(rows), (0, 1), (-2, -1))


@pytest.mark.parametrize("tip_order", EULER_ORDERS)
def test_any_channel_layout_and_euler_order(tip_order: str) -> None:
    text, motion = layout_file(tip_order)
    b = bvh.parse(text)
    assert b.names == ["Base", "Mid", "Tip"] and list(b.parents) == [-1, 0, 1]
    assert [b.rotation_order(j) for j in range(3)] == ["XYZ", "ZYX", tip_order]
    assert np.array_equal(b.end_sites[2], [0.0, 1.0, 0.0])

    q = b.local_rotations()
    cols = {"Base": (motion[:, 3:6], "XYZ"), "Mid": (motion[:, 6:9], "ZYX"), "Tip": (motion[:, 12:15], tip_order)}
    for j, name in enumerate(b.names):
        angles, order = cols[name]
        # scipy, upper case = intrinsic: the channel order of the file
        expected = Rotation.from_euler(order, angles, degrees=True).as_quat()
        assert quat_angle(q[:, j], expected).max() < 1e-7
        # and by hand: intrinsic "ZYX" means R = Rz @ Ry @ Rx, the channels applied left to right
        m = elementary(order[0], angles[:, 0]) @ elementary(order[1], angles[:, 1]) @ elementary(order[2], angles[:, 2])
        assert np.allclose(Rotation.from_quat(q[:, j]).as_matrix(), m, atol=1e-12)

    t = b.local_translations()
    assert np.array_equal(t[:, 0], motion[:, [1, 2, 0]])  # Zposition Xposition Yposition -> x, y, z
    assert np.array_equal(t[:, 1], motion[:, 9:12])  # position channels after the rotation channels
    assert np.array_equal(t[:, 2], np.broadcast_to([0.0, 0.0, 2.0], (b.n_frames, 3)))  # no channels: offset

    # and it survives writing and a re-read with its layout intact
    assert_same_bvh(b, bvh.parse(bvh.dumps(b)))


@pytest.mark.parametrize("tip_order", EULER_ORDERS)
def test_set_local_writes_the_files_own_layout(tip_order: str) -> None:
    text, _ = layout_file(tip_order, n=8, seed=1)
    b = bvh.parse(text)
    again = b.set_local(b.local_rotations(), b.local_translations())
    assert again.channels == b.channels
    assert quat_angle(again.local_rotations(), b.local_rotations()).max() < 1e-6
    assert np.allclose(again.local_translations(), b.local_translations(), atol=0)


@pytest.mark.data
@pytest.mark.parametrize("rel", (HAND_FILE, BODY_FILES[0]))
def test_set_local_round_trip_on_real_file(data_root: Path, rel: str) -> None:
    b = bvh.read(data_root / rel)
    b.motion = b.motion[:1000]  # the unwrapping loop is per frame: keep the test fast
    rot, trans = b.local_rotations(), b.local_translations()
    out = b.set_local(rot, trans)
    assert out.motion.shape == b.motion.shape
    # the same rotations, whatever the quaternion sign
    assert quat_angle(out.local_rotations(), rot).max() < 1e-6
    assert np.array_equal(out.local_translations(), trans)
    cols = rotation_columns(b)
    # the real files wrap at +-180 degrees; written curves must not
    assert np.abs(np.diff(b.motion[:, cols], axis=0)).max() > 300.0
    assert np.abs(np.diff(out.motion[:, cols], axis=0)).max() < 180.0
    # and survives a text round trip
    assert quat_angle(bvh.parse(bvh.dumps(out)).local_rotations(), rot).max() < 1e-6


def test_set_local_checks_shape() -> None:
    b = bvh.parse(TINY)
    with pytest.raises(ValueError, match="rotations must be"):
        b.set_local(np.zeros((3, 5, 4)))


# --- malformed files -------------------------------------------------------------------------------

TINY = """HIERARCHY
ROOT Hips
{
\tOFFSET 0 0 0
\tCHANNELS 6 Xposition Yposition Zposition Zrotation Xrotation Yrotation
\tJOINT Knee
\t{
\t\tOFFSET 0 -1 0
\t\tCHANNELS 3 Zrotation Xrotation Yrotation
\t\tEnd Site
\t\t{
\t\t\tOFFSET 0 -1 0
\t\t}
\t}
}
MOTION
Frames: 3
Frame Time: 0.0333333
0 1 0 0 0 0 10 0 0
0 1 0 0 0 0 20 0 0
0 1 0 0 0 0 30 0 0
"""
TINY_LINES = TINY.splitlines()
assert TINY_LINES[18] == "0 1 0 0 0 0 10 0 0"  # line 19 holds frame 0


def edit(line_no: int, new: str | None) -> str:
    """TINY with its (1-based) line replaced, or deleted when ``new`` is None."""
    lines = list(TINY_LINES)
    if new is None:
        del lines[line_no - 1]
    else:
        lines[line_no - 1] = new
    return "\n".join(lines) + "\n"


# (name, text, expected line, a word of the message)
MALFORMED = [
    ("truncated motion", edit(21, None), 20, "truncated"),
    ("truncated mid-frame", "\n".join(TINY_LINES[:19]) + "\n0 1 0 0", 20, "4 values"),
    ("extra frame", TINY + "0 1 0 0 0 0 40 0 0\n\n", 22, "more frames"),
    ("short frame line", edit(20, "0 1 0 0 0 0 20 0"), 20, "8 values"),
    ("long frame line", edit(21, "0 1 0 0 0 0 30 0 0 0"), 21, "10 values"),
    ("short then long line", edit(20, "0 1 0 0 0 0 20 0").replace("30 0 0\n", "30 0 0 0\n"), 20, "8 values"),
    ("non-numeric value", edit(20, "0 1 0 0 0 0 2O 0 0"), 20, "non-numeric"),
    ("NaN value", edit(21, "0 1 0 0 nan 0 30 0 0"), 21, "non-finite"),
    ("infinite value", edit(19, "0 1 0 0 0 0 10 -inf 0"), 19, "non-finite"),
    ("missing opening brace", edit(7, "\t"), 8, "expected '{'"),
    ("missing closing brace", edit(15, ""), 14, "ends inside the hierarchy"),
    ("unknown token", edit(6, "\tJIONT Knee"), 6, "unexpected 'JIONT'"),
    ("End without Site", edit(10, "\t\tEnd Sight"), 10, "Site"),
    ("duplicate joint", edit(6, "\tJOINT Hips"), 6, "duplicate joint"),
    ("bad channel name", edit(9, "\t\tCHANNELS 3 Zrotation Xrotatoin Yrotation"), 9, "Xrotatoin"),
    ("channel count too high", edit(9, "\t\tCHANNELS 4 Zrotation Xrotation Yrotation"), 9, "count"),
    ("channel count too low", edit(9, "\t\tCHANNELS 2 Zrotation Xrotation Yrotation"), 9, "rotation channels"),
    ("channel count not a number", edit(5, "\tCHANNELS six Xposition"), 5, "integer"),
    ("repeated channel", edit(9, "\t\tCHANNELS 3 Zrotation Zrotation Yrotation"), 9, "distinct"),
    ("bad offset", edit(8, "\t\tOFFSET 0 -1 zero"), 8, "number"),
    ("second root", edit(15, "}\nROOT Other\n{\n}"), 16, "only one ROOT"),
    ("missing MOTION", "\n".join(TINY_LINES[:15]) + "\n\n", 15, "MOTION"),
    ("missing Frames line", edit(17, None), 17, "Frames:"),
    ("bad frame count", edit(17, "Frames: three"), 17, "frame count"),
    ("bad frame time", edit(18, "Frame Time: 0"), 18, "frame time"),
]


@pytest.mark.parametrize(("name", "text", "line", "word"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_file_names_file_and_line(tmp_path: Path, name: str, text: str, line: int, word: str) -> None:
    path = tmp_path / "broken_take.bvh"
    path.write_text(text)
    with pytest.raises(bvh.BVHError) as info:
        bvh.read(path)
    err = info.value
    assert str(err).startswith(f"{path}:{line}: "), f"{name}: {err}"
    assert err.line == line and Path(err.path) == path
    assert "broken_take.bvh" in str(err)
    assert word in str(err), f"{name}: {err}"


def test_tiny_file_is_valid() -> None:
    # the malformed cases above are one edit away from a valid file
    b = bvh.parse(TINY, "tiny.bvh")
    assert b.n_frames == 3 and b.names == ["Hips", "Knee"]
    assert np.array_equal(b.motion[:, 6], [10.0, 20.0, 30.0])
    assert bvh.parse(TINY.replace("\n", "\r\n")).n_frames == 3  # Windows line ends


def test_frame_time_lines_as_blenders_importer_reads_them() -> None:
    """Any case and spacing (a tab, two spaces): Blender's importer reads these files; so does this reader."""
    for line in ("Frame\tTime: 0.0333333", "Frame  Time: 0.0333333", "frame time: 0.0333333", "FRAMES: 3"):
        text = edit(18, line) if "ime" in line else edit(17, line)
        assert bvh.parse(text).n_frames == 3, line


def test_a_hierarchy_nested_too_deep_is_a_clear_error() -> None:
    """1,200 joints each inside the last (was a RecursionError traceback)."""
    depth = 1200
    head = "".join(f"JOINT J{i}\n{{\nOFFSET 0 1 0\nCHANNELS 3 Zrotation Xrotation Yrotation\n" for i in range(depth))
    text = ("HIERARCHY\nROOT Hips\n{\nOFFSET 0 0 0\nCHANNELS 3 Zrotation Xrotation Yrotation\n" + head
            + "}\n" * (depth + 1) + "MOTION\nFrames: 1\nFrame Time: 0.04\n" + " 0" * 3 * (depth + 1) + "\n")
    with pytest.raises(bvh.BVHError, match="nested deeper than"):
        bvh.parse(text, "deep.bvh")


def test_parse_error_without_path() -> None:
    with pytest.raises(bvh.BVHError, match=r"^<bvh>:20: "):
        bvh.parse(edit(20, "0 1 0 0 0 0 nan 0 0"))


def test_binary_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "binary.bvh"
    path.write_bytes(b"HIERARCHY\n\xff\xfe\x00")
    with pytest.raises(bvh.BVHError, match="not a text file") as info:
        bvh.read(path)
    assert str(path) in str(info.value)


@pytest.mark.data
@pytest.mark.parametrize(
    ("what", "line_index", "new", "word"),
    [
        ("NaN in a real frame", 140, "nan", "non-finite"),
        ("truncated real file", None, None, "truncated"),
        ("short real frame", 150, "", "values"),
    ],
)
def test_malformed_real_file(data_root: Path, tmp_path: Path, what: str, line_index, new, word) -> None:
    lines = (data_root / SHORT_REAL_FILE).read_text().splitlines()
    motion_at = lines.index("MOTION")
    if line_index is None:  # cut the last 7 frames off
        lines = lines[:-7]
        expected = len(lines)
    else:
        assert line_index > motion_at + 2
        values = lines[line_index].split()
        values[-1] = new
        lines[line_index] = " ".join(values).strip()
        expected = line_index + 1
    path = tmp_path / Path(SHORT_REAL_FILE).name
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(bvh.BVHError) as info:
        bvh.read(path)
    assert str(info.value).startswith(f"{path}:{expected}: "), what
    assert word in str(info.value)
