"""``anyfill serve`` (a real process: token file, SIGTERM, refusals) and ``anyfill fill`` on real BVH."""

from __future__ import annotations

import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from backend_support import fill_request, models_dir

from anyfill.cli import main as cli
from backend import auth, registry
from training.inbetween.checkpoint import CheckpointError
from training.motion import bvh, clip
from training.motion.rotations import quat_angle


def test_serve_process_lifecycle(tmp_path):
    """Starts on a free port, creates the token (0600 in a 0700 folder), serves, stops cleanly on SIGTERM."""
    d = models_dir()
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    env.pop(auth.TOKEN_ENV, None)
    proc = subprocess.Popen([sys.executable, "-m", "anyfill.cli", "serve", "--port", "0", "--threads", "1",
                             "--model", f"{d / 'hand.safetensors'}", "--model", f"body={d / 'body.safetensors'}"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        url = None
        log = []
        deadline = time.time() + 60
        while url is None and time.time() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            log.append(line)
            m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
            url = m.group(1) if m else None
        assert url, "".join(log)
        token_file = tmp_path / "cfg" / "anyfill" / "token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
        token = token_file.read_text().strip()
        assert httpx.get(f"{url}/v1/health").json()["models"] == ["hand", "body"]
        assert httpx.post(f"{url}/v1/fill", json=fill_request("hand", frames=5)).status_code == 401
        r = httpx.post(f"{url}/v1/fill", json=fill_request("hand", frames=5),
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        rest = proc.stderr.read()
        assert "shutting down" in rest and "stopped" in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_token_is_kept(tmp_path):
    p = tmp_path / "a" / "token"
    t = auth.ensure_token(p)
    assert auth.ensure_token(p) == t and len(t) >= 32
    p.chmod(0o644)
    assert auth.ensure_token(p) == t and stat.S_IMODE(p.stat().st_mode) == 0o600


def test_serve_refuses_missing_or_corrupt_models(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="hand.safetensors.*body.safetensors"):
        registry.default_specs(tmp_path)
    assert cli(["serve", "--model", str(tmp_path / "nope.safetensors")]) == 2
    assert "nope.safetensors" in capsys.readouterr().err
    bad = tmp_path / "hand.safetensors"
    shutil.copy(models_dir() / "hand.json", tmp_path / "hand.json")
    bad.write_bytes(b"\x00" * 100)
    assert cli(["serve", "--model", str(bad)]) == 2
    assert "corrupt" in capsys.readouterr().err
    (tmp_path / "body.json").write_text("{not json")
    shutil.copy(models_dir() / "body.safetensors", tmp_path / "body.safetensors")
    assert cli(["serve", "--model", str(tmp_path / "body.safetensors")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_loopback_detection():
    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("localhost") and auth.is_loopback("::1")
    assert not auth.is_loopback("0.0.0.0") and not auth.is_loopback("192.168.1.4")


def _slice(src: Path, out: Path, frames: int) -> Path:
    data = bvh.read(src)
    data.motion = data.motion[:frames]
    bvh.write(data, out)
    return out


@pytest.mark.data
def test_fill_bvh_keeps_key_frames(data_root, tmp_path, capsys):
    src = _slice(data_root / "bandai" / "dataset-1" / "dataset-1_bow_old_001.bvh", tmp_path / "in.bvh", 40)
    out = tmp_path / "out.bvh"
    assert cli(["fill", str(src), "-o", str(out), "--keys", "0-4,20,last", "--model",
                str(models_dir() / "body.safetensors"), "--threads", "1"]) == 0
    assert "wrote" in capsys.readouterr().out
    a, b = bvh.read(src), bvh.read(out)
    assert b.names == a.names and b.channels == a.channels and b.n_frames == a.n_frames
    np.testing.assert_allclose(b.offsets, a.offsets)
    ca, cb = clip.load(src, "body"), clip.load(out, "body")
    keys = [0, 1, 2, 3, 4, 20, 39]
    assert quat_angle(ca.rotations[keys], cb.rotations[keys]).max() < 1e-4
    np.testing.assert_allclose(cb.translations[keys], ca.translations[keys], atol=1e-4)
    assert quat_angle(ca.rotations[10], cb.rotations[10]).max() > 1e-3  # the gap was filled, not copied


@pytest.mark.data
def test_fill_bvh_samples_and_joints(data_root, tmp_path, capsys):
    src = _slice(data_root / "manipnet" / "teapot3" / "rightHand.bvh", tmp_path / "hand.bvh", 12)
    out = tmp_path / "var.bvh"
    assert cli(["fill", str(src), "-o", str(out), "--keys", "0,11", "--joints", "WRIST,INDEX_MCP", "--model",
                str(models_dir() / "hand.safetensors"), "--sample", "2", "--k", "200", "--order", "random"]) == 0
    files = [tmp_path / "var-1.bvh", tmp_path / "var-2.bvh"]
    ca = clip.load(src, "hand")
    cs = [clip.load(f, "hand") for f in files]
    for c in cs:
        assert quat_angle(c.rotations[:, [0, 5]], ca.rotations[:, [0, 5]]).max() < 1e-4  # kept joints
        assert quat_angle(c.rotations[[0, 11]], ca.rotations[[0, 11]]).max() < 1e-4  # key frames
    assert quat_angle(cs[0].rotations[5], cs[1].rotations[5]).max() > 1e-4  # two different variations


def test_fill_cli_errors(tmp_path, capsys):
    src = tmp_path / "x.bvh"
    src.write_text("HIERARCHY\nROOT a\n{\n")
    assert cli(["fill", str(src), "-o", str(tmp_path / "o.bvh"), "--keys", "0"]) == 2
    assert "x.bvh" in capsys.readouterr().err
