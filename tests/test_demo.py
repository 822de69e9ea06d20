"""The main job end to end: the shipped models behind a real server, real test clips filled over HTTP, and
``anyfill demo``'s files and printout checked against the files themselves."""

import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from training.inbetween.checkpoint import load_model, read_card, shipped_models_dir
from training.motion import bvh
from training.motion import clip as clip_io
from training.motion.skeleton import forward_kinematics, get_schema
from training.motion.splits import split_files

pytestmark = [pytest.mark.data, pytest.mark.slow]

FRAMES, EVERY = 61, 8  # shorter than the default (121, 10) to keep the test quick; the same code path
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
NUMBER = r"([0-9][0-9.e+-]*)"


@pytest.mark.parametrize("name", ["hand", "body"])
def test_shipped_models_load_and_their_cards_say_how_they_were_made(name):
    model, card = load_model(name)
    assert card["schema"]["name"] == name and model.cfg.skeleton == name
    assert (shipped_models_dir() / f"{name}.safetensors").stat().st_size <= 20 * 1024 * 1024
    card = read_card(shipped_models_dir() / f"{name}.safetensors")
    assert card["training"]["command"].startswith("anyfill train anyorder")
    gaps = card["metrics"]["inbetween"]["gaps"]
    assert set(gaps) == {"5", "15", "30", "45"} and all(v["L2Q"] > 0 for v in gaps.values())


@pytest.fixture(scope="module")
def demo(data_root, tmp_path_factory):
    """``anyfill demo`` run as a user runs it (its own process, a real server), and what it printed per clip."""
    out = tmp_path_factory.mktemp("demo-output")
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    proc = subprocess.run([sys.executable, "-m", "anyfill.cli", "demo", "--out", str(out), "--frames", str(FRAMES),
                           "--every", str(EVERY)], capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    blocks = {}
    for block in re.split(r"\n(?=(?:body|hand): )", proc.stdout):
        m = re.match(r"(body|hand): ", block)
        if m:
            blocks[m.group(1)] = block
    assert set(blocks) == {"body", "hand"}, proc.stdout
    return out, blocks, proc.stdout


def _printed(block: str) -> dict:
    head = re.match(r"(body|hand): (\S+?)(?: \(take (\S+), (left|right) hand\))?, "
                    r"file frames (\d+)-(\d+) \(0-based\) of (\d+)(?:, every (\d+)th frame)?", block)
    assert head, block
    errors = {key: float(re.search(rf"^\s+{label}\s+{NUMBER}", block, re.M).group(1))
              for key, label in (("filled", r"fill \(model \w+\)"), ("interpolation", "interpolation"),
                                 ("bezier", "Blender Bezier"))}
    ratios = re.search(rf"error {NUMBER}x interpolation's, {NUMBER}x Bezier's", block)
    return {"source": head.group(2), "take": head.group(3), "side": head.group(4), "first": int(head.group(5)),
            "last": int(head.group(6)), "file_frames": int(head.group(7)), "step": int(head.group(8) or 1),
            "errors": errors, "ratios": (float(ratios.group(1)), float(ratios.group(2)))}


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.mark.parametrize("skeleton", ["body", "hand"])
def test_demo_writes_truth_fill_interpolation_bezier_and_an_error_plot(demo, skeleton):
    out, blocks, _ = demo
    for key in ("truth", "filled", "interpolation", "bezier"):
        path = out / f"{skeleton}-{key}.bvh"
        assert f"wrote {out / f'{skeleton}-truth.bvh'}" in blocks[skeleton] and str(path) in blocks[skeleton]
        c = clip_io.load(path, get_schema(skeleton))  # a whole skeleton of the schema, one frame per demo frame
        assert c.n_frames == FRAMES and abs(c.fps - 30) < 1e-3
    png = out / f"{skeleton}-error.png"
    assert str(png) in blocks[skeleton]
    width, height = _png_size(png)
    assert width >= 600 and height >= 300 and png.stat().st_size > 10_000  # a drawn plot, not an empty canvas
    assert "keys unchanged: yes" in blocks[skeleton]


@pytest.mark.parametrize("skeleton", ["body", "hand"])
def test_demo_clips_are_the_printed_test_split_files(demo, data_root, skeleton):
    out, blocks, _ = demo
    p = _printed(blocks[skeleton])
    source = data_root / p["source"]
    assert source in split_files(skeleton, "test"), f"{p['source']} is not a test-split {skeleton} file"
    if skeleton == "hand":
        assert (p["take"], p["side"]) == (source.parent.name, source.stem.removesuffix("Hand"))
        assert p["step"] == 4  # ManipNet's 120 fps taken at 30 fps
    # the written ground truth is exactly those frames of that file
    schema = get_schema(skeleton)
    full = clip_io.load(source, schema)
    assert full.n_frames == p["file_frames"] and p["last"] - p["first"] == (FRAMES - 1) * p["step"]
    _, want = forward_kinematics(full.rotations, full.translations, schema.parents)
    truth = clip_io.load(out / f"{skeleton}-truth.bvh", schema)
    _, got = forward_kinematics(truth.rotations, truth.translations, schema.parents)
    np.testing.assert_allclose(got, want[p["first"]:p["last"] + 1:p["step"]], atol=1e-6)


@pytest.mark.parametrize("skeleton", ["body", "hand"])
def test_demo_clips_move_like_animated_shots(demo, skeleton):
    """Not a near-still clip: the window moves several times as much per second as the split's median window
    (issue 24: the earlier demo's body clip moved 1.7 cm per 10 frames)."""
    _, blocks, _ = demo
    m = re.search(rf"why this clip: .*: {NUMBER} \w+/s, against a median of {NUMBER} \w+/s", blocks[skeleton])
    assert m, blocks[skeleton]
    speed, median = float(m.group(1)), float(m.group(2))
    assert speed > 1.5 * median
    if skeleton == "body":
        assert speed > 50  # cm/s: a walk or a run, not a wave of one hand


@pytest.mark.parametrize("skeleton", ["body", "hand"])
def test_demo_errors_printed_are_those_of_the_written_files(demo, skeleton):
    """Each printed error, recomputed here from the written BVHs (positions by forward kinematics of each
    file, the key frames every --every and the last left out); printed to 4 significant digits."""
    out, blocks, _ = demo
    p = _printed(blocks[skeleton])
    schema = get_schema(skeleton)

    def positions(key):  # straight from the file's channels, the schema's joints picked by name
        data = bvh.read(out / f"{skeleton}-{key}.bvh")
        _, pos = forward_kinematics(data.local_rotations(), data.local_translations(), data.parents)
        return pos[:, [data.names.index(n) for n in schema.joints]]

    truth = positions("truth")
    known = np.zeros(FRAMES, dtype=bool)
    known[::EVERY] = True
    known[-1] = True
    recomputed = {}
    for key in ("filled", "interpolation", "bezier"):
        err = np.linalg.norm(positions(key) - truth, axis=-1)
        assert err[known].max() < 1e-6, f"{key} moved a key"
        recomputed[key] = float(err[~known].mean())
        assert p["errors"][key] == pytest.approx(recomputed[key], rel=6e-4), key
    fill = recomputed["filled"]
    assert p["ratios"][0] == pytest.approx(fill / recomputed["interpolation"], abs=0.006)
    assert p["ratios"][1] == pytest.approx(fill / recomputed["bezier"], abs=0.006)
    loses = fill > min(recomputed["interpolation"], recomputed["bezier"])
    assert ("the model LOSES on this clip" in blocks[skeleton]) == loses


def test_demo_run_returns_what_it_printed(data_root, tmp_path):
    from backend import demo

    results = demo.run(every=EVERY, frames=41, out_dir=tmp_path, quiet=True)
    assert [r["skeleton"] for r in results] == ["body", "hand"]
    for r in results:
        assert r["keys_unchanged"] and r["filled_frames"] == 41 - r["keys"]
        assert set(r["outputs"]) == {"truth", "filled", "interpolation", "bezier", "plot"}
        assert all(Path(f).is_file() for f in r["outputs"].values())
        assert 0 < r["position_error"] < 50 and r["interp_position_error"] > 0 and r["bezier_position_error"] > 0
        assert demo.report(r).startswith(f"{r['skeleton']}: {r['source']}")
