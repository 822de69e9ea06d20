"""``anyfill serve`` (a real process: token file, SIGTERM, refusals), ``anyfill fill`` on real BVH, and the options
of ``anyfill demo`` and ``anyfill bench serve`` refused before any work."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from backend_support import fill_request, models_dir

from anyfill.cli import main as cli
from backend import auth, registry
from training.inbetween.checkpoint import CheckpointError, shipped_models_dir
from training.motion import bvh, clip
from training.motion.rotations import quat_angle


def test_warm_up_prepares_fills_and_variations():
    """The warm-up sends one fill and one short sampling request per model through the application, so both kinds of
    first request find the traced copies they run through already built (a window's pass; the encoder and a step's
    decode) and answer as fast as the ones after."""
    from backend.jobs import Jobs
    from backend.server import create_app, warm_up

    loaded = registry.Registry.load([str(models_dir() / "hand.safetensors")])
    jobs = Jobs(workers=1)
    try:
        took = warm_up(create_app(loaded, "t" * 32, jobs), "t" * 32)
    finally:
        jobs.close()
    model = loaded.get("hand").model
    assert list(took) == ["hand"] and took["hand"] > 0
    assert model.traced_window.traced is not None and model.core.traced is not None
    assert model.traced_step.traced is not None


@pytest.mark.slow  # a real server process started and stopped
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
        # one fill per model before it listens, so the first request is as fast as the rest
        assert re.search(r"warmed up hand \(\d+ ms\), body \(\d+ ms\)", "".join(log)), "".join(log)
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


def _serve(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, str, str, Path]:
    """A real ``anyfill serve`` (hand and body test models) logging to a file, every Python warning shown;
    returns (process, url, token, log file) once it listens."""
    d = models_dir()
    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "cfg"), PYTHONWARNINGS="always", OMP_NUM_THREADS="1")
    env.pop(auth.TOKEN_ENV, None)
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "anyfill.cli", "serve", "--port", "0", "--threads", "1",
                             "--model", f"hand={d / 'hand.safetensors'}", "--model", f"body={d / 'body.safetensors'}",
                             *extra], stdout=log.open("wb"), stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 120
    while time.time() < deadline:
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if m:
            return proc, m.group(1), (tmp_path / "cfg" / "anyfill" / "token").read_text().strip(), log
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"anyfill serve did not start:\n{log.read_text()}")


@pytest.mark.slow
def test_serve_log_stays_quiet_per_request(tmp_path):
    """Answers add nothing to the log: no deprecation (or any other) warning per request, even with every
    warning shown, so the log does not grow with the number of requests."""
    proc, url, token, log = _serve(tmp_path)
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            # the socket listens before uvicorn logs its start-up lines: once it answers, they are written
            assert c.get("/v1/health").status_code == 200
            size = log.stat().st_size
            for i in range(10):
                assert c.post("/v1/fill", json=fill_request("body", frames=12, data_seed=i)).status_code == 200
                assert c.post("/v1/sample", json=fill_request("hand", frames=6, k=100)).status_code == 200
                assert c.get("/v1/models").status_code == 200
                assert c.post("/v1/fill", json={"model": "body"}).status_code == 422
            with c.stream("POST", "/v1/sample", json=fill_request("hand", frames=6, k=100, stream=True)) as r:
                assert r.status_code == 200 and list(r.iter_lines())
        grown = log.read_text()[size:]
        assert grown == "", grown
        assert "Warning" not in log.read_text()
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_sigterm_during_a_sample_answers_and_exits_at_once(tmp_path):
    """SIGTERM while a long sampling runs (one plain request, one streamed): the plain one gets the
    documented 503 JSON, the stream a ``cancelled`` event; no traceback in the log, and the process exits
    (status 0) well within uvicorn's 5 s grace period, since the jobs are cancelled when the stop begins."""
    proc, url, token, log = _serve(tmp_path, "--workers", "2")
    slow = fill_request("body", frames=65, keys=(0, 64), k=1, n=16)
    answers: dict = {}

    def plain():
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            answers["plain"] = c.post("/v1/sample", json={**slow, "id": "plain"})

    def streamed():
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c, \
                c.stream("POST", "/v1/sample", json={**slow, "id": "streamed", "stream": True}) as r:
            answers["stream"] = [json.loads(line) for line in r.iter_lines() if line]

    threads = [threading.Thread(target=plain), threading.Thread(target=streamed)]
    try:
        for th in threads:
            th.start()
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            deadline = time.time() + 60
            while time.time() < deadline:
                states = [c.get(f"/v1/jobs/{i}").json() for i in ("plain", "streamed")]
                if all(s.get("state") == "running" and s.get("done", 0) > 0 for s in states):
                    break
                time.sleep(0.05)
            assert all(s["state"] == "running" for s in states), states
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        took = time.time() - t0
        for th in threads:
            th.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert took < 4.5, (took, text)  # before uvicorn's 5 s grace ends (the jobs alone would run for minutes)
    r = answers["plain"]
    assert r.status_code == 503 and r.headers["content-type"] == "application/json", r.text
    assert "shutting down" in r.json()["error"]
    events = answers["stream"]
    assert events[0]["event"] == "started" and events[-1]["event"] == "cancelled", events[-1]
    assert events[-1]["status"] == 503 and "shutting down" in events[-1]["error"]
    for bad in ("Traceback", "Exception in ASGI application", "Future exception was never retrieved",
                "timeout graceful shutdown exceeded", "Warning"):
        assert bad not in text, text
    assert "stopped" in text


def test_token_is_kept(tmp_path):
    p = tmp_path / "a" / "token"
    t = auth.ensure_token(p)
    assert auth.ensure_token(p) == t and len(t) >= 32
    p.chmod(0o644)
    assert auth.ensure_token(p) == t and stat.S_IMODE(p.stat().st_mode) == 0o600


def test_a_token_path_that_is_a_directory_is_refused_and_leaves_nothing_beside_it(tmp_path):
    where = tmp_path / "token"
    where.mkdir()
    with pytest.raises(OSError):
        auth.ensure_token(where)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["token"]


@pytest.mark.parametrize(("content", "says"), [
    (b"short-token\n", "holds a token of 11 characters; at least 16 are needed"),
    (b"abcdefghijklmnop qrstuvwxyz\n", "holds whitespace inside the token (at character 17)"),
    (b"abcdefghijklmnop\nqrstuvwxyz\n", "holds whitespace inside the token"),
    ("abcdefghijklmnop\u00e9".encode(), "holds the character '\u00e9' inside the token"),
    (b"\xff\xfe\x00garbage-garbage-garbage", "is not text (not UTF-8)"),
    (b"x" * 5000, "holds 5000 bytes: a token is at most 4096 characters"),
])
def test_a_token_file_that_holds_no_usable_token_is_refused_never_replaced(tmp_path, content, says):
    """A token file whose token is too short, holds whitespace or characters no header carries, or is not text,
    stops the start with a message naming the file, what is wrong and the fix; the file is left as it was (a short
    one was silently replaced by a new token: every client configured with it stopped working, and what the user
    wrote was lost)."""
    p = tmp_path / "token"
    p.write_bytes(content)
    with pytest.raises(OSError) as refused:
        auth.ensure_token(p)
    message = str(refused.value)
    assert says in message and str(p) in message, message
    assert "remove" in message, message  # and how to fix it
    assert p.read_bytes() == content and sorted(x.name for x in tmp_path.iterdir()) == ["token"]


def test_a_token_file_that_is_not_a_file_or_unreadable_is_refused_naming_it(tmp_path):
    """A FIFO (whose read would block the start; it was replaced by a regular file), a link to nothing (the link was
    replaced) and, for a user other than root, a file that cannot be read: refused, named, left as they were."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "nowhere")
    cases = [(fifo, "is not a regular file"), (dangling, "is a symbolic link to")]
    if os.geteuid() != 0:  # root reads a file of mode 000
        locked = tmp_path / "locked"
        locked.write_text("a-long-enough-token-0123456789\n")
        locked.chmod(0)
        cases.append((locked, "cannot read the token file"))
    for path, says in cases:
        with pytest.raises(OSError, match=re.escape(says)) as refused:
            auth.ensure_token(path)
        assert str(path) in str(refused.value)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and dangling.is_symlink()


def test_an_empty_token_file_gets_a_new_token_and_says_so(tmp_path, caplog):
    """A file of nothing but whitespace holds no token a client could have: a new one is written there, and the log
    says so (nothing is replaced without a word)."""
    p = tmp_path / "token"
    p.write_text(" \n")
    with caplog.at_level("WARNING", logger="anyfill.backend"):
        token = auth.ensure_token(p)
    assert len(token) >= 32 and p.read_text().strip() == token
    assert f"the token file {p} was empty: wrote a new token" in caplog.text


def test_serve_refuses_a_short_token_file_before_it_listens(tmp_path, capsys, monkeypatch):
    """``anyfill serve`` with a token file of 8 characters: exit status 2 and one line naming the file and the
    minimum; the file is untouched."""
    from backend import server

    def listened(*args, **kwargs):
        raise AssertionError("anyfill serve started with a token file it should refuse")

    p = tmp_path / "token"
    p.write_text("12345678\n")
    monkeypatch.setenv(auth.TOKEN_ENV, str(p))
    monkeypatch.setattr(server, "bind", listened)
    assert cli(["serve", "--port", "0", "--no-warm-up", "--model", str(models_dir() / "hand.safetensors")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anyfill serve: error: ") and "\n" not in err, err
    assert str(p) in err and "8 characters; at least 16" in err, err
    assert p.read_text() == "12345678\n"


@pytest.mark.parametrize(("flags", "says"), [
    (["--threads", "-1"], "--threads must be 0..1024 (0: torch's default, one per core), got -1"),  # was a traceback
    (["--threads", "100000"], "--threads must be 0..1024 (0: torch's default, one per core), got 100000"),
    (["--host", ""], "--host is empty"),  # listened on every interface
    (["--host", " "], "--host is empty"),
    (["--port", "70000"], "--port must be 0..65535 (0: any free port), got 70000"),
    (["--port", "-1"], "--port must be 0..65535"),
    (["--workers", "0"], "--workers must be 1..32"),
    (["--workers", "1000"], "--workers must be 1..32 (at most 32 requests are held at once"),
    (["--model", ""], "--model '': give a shipped name, a .safetensors path or NAME=PATH"),
    (["--model", "=hand"], "--model '=hand'"),
    (["--model", "hand", "--model", "body="], "--model 'body='"),
])
def test_serve_refuses_options_that_cannot_work_before_any_work(capsys, monkeypatch, flags, says):
    """Each of ``anyfill serve``'s options that cannot work: exit status 2 and one line naming it, its value and what
    is valid, before a model loads or a token file is touched."""
    from backend import server

    def started(*args, **kwargs):
        raise AssertionError(f"anyfill serve {flags} started")

    monkeypatch.setattr(server, "serve", started)
    assert cli(["serve", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anyfill serve: error: ") and "\n" not in err and says in err, err


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


def _card_with(card: dict, path: tuple[str, ...], value) -> dict:
    card = json.loads(json.dumps(card))
    inner = card
    for key in path[:-1]:
        inner = inner[key]
    inner[path[-1]] = value
    return card


@pytest.mark.parametrize(("change", "message"), [
    (lambda card: [card], "a model card is a JSON object, this one is list"),
    (lambda card: None, "a model card is a JSON object, this one is NoneType"),
    (lambda card: _card_with(card, ("config", "max_frames"), 2), "max_frames is 2; a model's window is at least 4"),
    (lambda card: _card_with(card, ("training", "config", "fps"), [0, 0]), "training.config.fps must be frame rates"),
    (lambda card: _card_with(card, ("training", "config", "fps"), [1e9]), "training.config.fps must be frame rates"),
    (lambda card: _card_with(card, ("sampling", "temperature"), float("inf")), "must be a finite number"),
    (lambda card: _card_with(card, ("schema", "rest_offsets"), [[float("nan")] * 3] * 17),
     "the rest offsets of the hand model must be 17 finite"),
])
def test_a_card_that_reads_but_says_nonsense_is_refused_naming_it(tmp_path, capsys, change, message):
    """A card that is JSON but not a card a model can run by (no object, a window of 2 frames, rates of 0 fps, an
    infinite sampling temperature, NaN rest offsets) stops a start with a message naming the card; it was a
    traceback, or a server whose every fill or sample answered 500."""
    shutil.copy(shipped_models_dir() / "hand.safetensors", tmp_path / "hand.safetensors")  # a card that says it all
    card = json.loads((shipped_models_dir() / "hand.json").read_text())
    (tmp_path / "hand.json").write_text(json.dumps(change(card)))
    for numpy in (False, True):  # the server's torch model, anyfill fill's numpy runtime
        with pytest.raises(CheckpointError, match=re.escape(message)) as refused:
            registry.load_one(str(tmp_path / "hand.safetensors"), numpy=numpy)
        assert "hand.json" in str(refused.value)


def test_loopback_detection():
    assert auth.is_loopback("127.0.0.1") and auth.is_loopback("localhost") and auth.is_loopback("::1")
    assert auth.is_loopback("127.3.2.1") and auth.is_loopback("[::1]")
    for host in ("0.0.0.0", "192.168.1.4", "127.evil.example", "127.0.0.1.nip.io", "localhost.example", "127.1"):
        assert not auth.is_loopback(host), host


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
def test_fill_bvh_shows_progress_on_a_long_clip(data_root, tmp_path, capsys):
    """Not on a terminal (here): plain lines on stderr, the last one at 100%; a short clip shows none."""
    src = _slice(data_root / "bandai" / "dataset-1" / "dataset-1_bow_old_001.bvh", tmp_path / "in.bvh", 150)
    model = str(models_dir() / "body.safetensors")
    assert cli(["fill", str(src), "-o", str(tmp_path / "out.bvh"), "--keys", "0:last:10", "--model", model]) == 0
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "filling:" in ln]
    assert lines and lines[-1].endswith("(100%)")
    done, total = map(int, re.search(r"(\d+)/(\d+) frames", lines[-1]).groups())
    assert done == total > 0
    short = _slice(src, tmp_path / "short.bvh", 40)
    assert cli(["fill", str(short), "-o", str(tmp_path / "o2.bvh"), "--keys", "0,last", "--model", model]) == 0
    assert "filling:" not in capsys.readouterr().err


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


@pytest.mark.data
def test_fill_bvh_samples_a_clip_longer_than_the_models_window(data_root, tmp_path, capsys):
    """--sample on a whole clip (here 100 frames, keys every 10): drawn window by window, the keys kept."""
    src = _body_clip(data_root, tmp_path, frames=100)
    out = tmp_path / "var.bvh"
    assert cli(["fill", str(src), "-o", str(out), "--keys", "0:last:10,last", "--model",
                str(models_dir() / "body.safetensors"), "--sample", "2", "--k", "22", "--no-progress"]) == 0
    ca = clip.load(src, "body")
    cs = [clip.load(tmp_path / f"var-{i}.bvh", "body") for i in (1, 2)]
    for c in cs:
        assert c.n_frames == 100 and np.isfinite(c.rotations).all()
        assert quat_angle(c.rotations[::10], ca.rotations[::10]).max() < 1e-4  # key frames
    assert quat_angle(cs[0].rotations[75], cs[1].rotations[75]).max() > 1e-4  # beyond the first window: drawn


def test_fill_cli_errors(tmp_path, capsys):
    src = tmp_path / "x.bvh"
    src.write_text("HIERARCHY\nROOT a\n{\n")
    assert cli(["fill", str(src), "-o", str(tmp_path / "o.bvh"), "--keys", "0"]) == 2
    assert "x.bvh" in capsys.readouterr().err


@pytest.mark.parametrize(("frame_time", "named"), [
    ("1000", "the window spans 40000 s"),  # a million frames at a trained rate: refused, not filled for minutes
    ("1e-09", "the frame rate must be within 0.001..1000 fps"),
])
@pytest.mark.data
def test_fill_refuses_an_absurd_frame_time_before_any_work(data_root, tmp_path, capsys, frame_time, named):
    src = _body_clip(data_root, tmp_path, frames=41)
    src.write_text(re.sub(r"Frame Time:.*", f"Frame Time: {frame_time}", src.read_text()))
    out = tmp_path / "o.bvh"
    assert cli(["fill", str(src), "-o", str(out), "--keys", "0:40:10"]) == 2
    assert named in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize(("flags", "named"), [
    (["--temperature", "-1", "--sample", "1"], "--temperature must be within 0..10, got -1"),
    (["--temperature", "nan", "--sample", "1"], "--temperature must be within"),
    (["--seed", "-3", "--sample", "1"], "--seed must be within"),
    (["--threads", "-1"], "--threads must be 0..1024 (0: the libraries' defaults), got -1"),
    (["--threads", "100000"], "--threads must be 0..1024 (0: the libraries' defaults), got 100000"),  # was taken
    (["--k", "0", "--sample", "1"], "--k must be 1..4096"),
    (["--k", "1000000000", "--sample", "1"], "--k must be 1..4096 (cells, or a triples model's frames, drawn per "
     "step"),  # was taken, and drew every cell in one step
    (["--sample", "-1"], "--sample must be >= 0"),
    (["--sample", "100000000"], "--sample: at most 16 variations"),  # was minutes and gigabytes, then killed
])
def test_fill_refuses_bad_settings_before_any_work(tmp_path, capsys, flags, named):
    out = tmp_path / "o.bvh"
    assert cli(["fill", str(tmp_path / "absent.bvh"), "-o", str(out), "--keys", "0", *flags]) == 2
    assert named in capsys.readouterr().err and not out.exists()


def test_fill_takes_the_servers_k_and_as_many_threads_as_serve(tmp_path, capsys):
    """The largest --k (the API's limit) passes the option checks, the missing input is what is refused; the largest
    --threads is serve's (checked without a run: a fill sets its thread count for the whole process)."""
    from backend import options
    from backend.schemas import Limits
    from training.checks import MAX_THREADS

    out = tmp_path / "o.bvh"
    assert cli(["fill", str(tmp_path / "absent.bvh"), "-o", str(out), "--keys", "0", "--sample", "1",
                "--k", str(Limits().max_k)]) == 2
    err = capsys.readouterr().err
    assert "absent.bvh" in err and "--k" not in err, err
    assert options.threads(MAX_THREADS, "") is None and options.threads(MAX_THREADS + 1, "") is not None


@pytest.fixture()
def no_server(monkeypatch):
    """``anyfill demo`` and ``bench serve`` fail the test if they pick a clip or start a server."""
    from backend import bench, demo

    def started(*args, **kwargs):
        raise AssertionError("the work started before the options were checked")

    for module, name in ((bench, "start_server"), (demo, "start_server"), (demo, "pick_window")):
        monkeypatch.setattr(module, name, started)


@pytest.mark.parametrize(("flags", "says"), [
    (["--every", "1"], "--every must be 2..120 (a key every N of the 121 frames"),  # a traceback after 20 s: 422
    (["--every", "0"], "--every must be 2..120"),
    (["--every", "121"], "--every must be 2..120"),
    (["--every", "31", "--frames", "31"], "--every must be 2..30"),
    (["--frames", "2"], "--frames must be 3..2048"),
    (["--frames", "-5"], "--frames must be 3..2048"),
    (["--frames", "100000"], "--frames must be 3..2048 (frames of each clip at 30 fps: at most a request's), got "
     "100000"),
    (["--out", ""], "--out is empty"),  # wrote into the current folder
    (["--out", " "], "--out is empty"),
])
def test_demo_refuses_options_that_cannot_work_before_any_work(capsys, no_server, flags, says):
    assert cli(["demo", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anyfill demo: error: ") and "\n" not in err and says in err, err


def test_demo_refuses_an_output_folder_it_cannot_write_in(tmp_path, capsys, no_server):
    (tmp_path / "file").write_text("")
    for out, says in ((tmp_path / "file", "is a file, not a folder"),
                      (tmp_path / "file" / "deeper", f"{tmp_path / 'file'} is a file, not a folder")):
        assert cli(["demo", "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"anyfill demo: error: --out {out}: ") and says in err, err


@pytest.mark.parametrize(("flags", "says"), [
    (["--requests", "0"], "--requests must be >= 1 (requests per measurement), got 0"),  # NumPy's IndexError, late
    (["--requests", "-3"], "--requests must be >= 1"),
    (["--workers", "0"], "--workers must be 1..32"),  # a traceback: 'anyfill serve did not start'
    (["--workers", "33"], "--workers must be 1..32"),
    (["--threads", "-1"], "--threads must be 0..1024"),
    (["--threads", "100000"], "--threads must be 0..1024"),
    (["--model", ""], "--model '': give a shipped name"),
    (["--model", "hand="], "--model 'hand='"),
    (["--model", "nosuch"], "--model nosuch: no model 'nosuch': not a file, and shipped models are body, hand"),
    (["--model", "absent.safetensors"], "--model absent.safetensors: no such file absent.safetensors"),
])
def test_bench_serve_refuses_options_that_cannot_work_before_any_work(capsys, no_server, flags, says):
    assert cli(["bench", "serve", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anyfill bench serve: error: ") and "\n" not in err and says in err, err


def test_bench_serve_refuses_a_json_output_it_cannot_write(tmp_path, capsys, no_server):
    assert cli(["bench", "serve", "--json", str(tmp_path)]) == 2
    assert "--json: " in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert cli(["bench", "serve", "--json", str(tmp_path / "file" / "out.json")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err


def _body_clip(data_root: Path, tmp_path: Path, frames: int = 40, name: str = "in.bvh") -> Path:
    return _slice(data_root / "bandai" / "dataset-1" / "dataset-1_bow_old_001.bvh", tmp_path / name, frames)


def _left_over(folder: Path, before: set[str]) -> set[str]:
    return {p.name for p in folder.iterdir()} - before


@pytest.mark.data
def test_fill_refuses_outputs_it_cannot_write_before_any_work(data_root, tmp_path, capsys, monkeypatch):
    """-o naming a directory, a path under a file or the input file itself: a clear error before the model runs,
    nothing left and the input as it was."""
    from training.inbetween import fill as engine
    from training.inbetween import sampling

    src = _body_clip(data_root, tmp_path)
    model = str(models_dir() / "body.safetensors")
    ran = []
    monkeypatch.setattr(engine, "fill", lambda *a, **k: ran.append(1))
    monkeypatch.setattr(sampling, "sample", lambda *a, **k: ran.append(1))
    (tmp_path / "outdir").mkdir()
    (tmp_path / "afile").write_text("x")
    (tmp_path / "var-2.bvh").mkdir()
    original = src.read_bytes()
    before = {p.name for p in tmp_path.iterdir()}
    for out, extra, says in ((tmp_path / "outdir", [], "is a directory"),
                             (tmp_path / "afile" / "o.bvh", [], "is not a directory"),
                             (tmp_path / "var.bvh", ["--sample", "3"], "var-2.bvh: is a directory"),
                             (src, [], "is the input file"),  # the clip's own keys would be overwritten
                             (tmp_path / "." / src.name, [], "is the input file")):
        assert cli(["fill", str(src), "-o", str(out), "--keys", "0,last", "--model", model, *extra]) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err, err
        assert _left_over(tmp_path, before) == set() and list((tmp_path / "outdir").iterdir()) == []
    assert ran == [] and src.read_bytes() == original


@pytest.mark.data
def test_fill_refuses_an_unwritable_folder(data_root, tmp_path, capsys):
    """A folder no file can be created in (a read-only one; /proc where the tests run as root, who may
    write into read-only folders): refused before any work, naming it."""
    src = _body_clip(data_root, tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    target = Path("/proc/anyfill-test") if os.geteuid() == 0 else locked
    try:
        assert cli(["fill", str(src), "-o", str(target / "o.bvh"), "--keys", "0,last", "--model",
                    str(models_dir() / "body.safetensors")]) == 2
        err = capsys.readouterr().err
        assert f"cannot write in {target.parent if target.parent == Path('/proc') else target}" in err, err
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.data
def test_fill_sample_writes_all_outputs_or_none(data_root, tmp_path, capsys, monkeypatch):
    """With --sample 3, a failure while writing the second output (a full disk) leaves no output of the
    run and no .tmp file; the error names the file."""
    import errno

    src = _body_clip(data_root, tmp_path, frames=12)
    real = os.fdopen
    calls = []

    def full_disk(fd, *a, **k):
        f = real(fd, *a, **k)
        calls.append(fd)
        if len(calls) == 2:
            f.write("partial")  # half written, then the disk is full
            f.close()
            raise OSError(errno.ENOSPC, "No space left on device")
        return f

    monkeypatch.setattr(os, "fdopen", full_disk)
    before = {p.name for p in tmp_path.iterdir()}
    assert cli(["fill", str(src), "-o", str(tmp_path / "var.bvh"), "--keys", "0,11", "--sample", "3", "--k", "500",
                "--model", str(models_dir() / "body.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {tmp_path / 'var-2.bvh'}: No space left" in err and "no output was written" in err, err
    assert _left_over(tmp_path, before) == set()
    monkeypatch.setattr(os, "fdopen", real)
    assert cli(["fill", str(src), "-o", str(tmp_path / "var.bvh"), "--keys", "0,11", "--sample", "3", "--k", "500",
                "--model", str(models_dir() / "body.safetensors")]) == 0
    assert _left_over(tmp_path, before) == {"var-1.bvh", "var-2.bvh", "var-3.bvh"}


def _with_a_prop(src: Path, out: Path) -> Path:
    """``src`` with an animated joint the model does not know (a prop in the right foot's last bone)."""
    data = bvh.read(src)
    toes = data.names.index("Toes_R")
    assert toes == data.n_joints - 1  # the last joint: its new child's channels come last in the frame table
    n = data.n_frames
    prop = np.stack([np.linspace(-30, 60, n), np.full(n, 20.0), np.sin(np.arange(n)) * 15], axis=1)
    data.names.append("Prop_R")
    data.parents = np.append(data.parents, toes)
    data.offsets = np.vstack([data.offsets, [0.0, 5.0, 0.0]])
    data.channels.append(("Zrotation", "Xrotation", "Yrotation"))
    data.end_sites = {**{j: v for j, v in data.end_sites.items() if j != toes}, data.n_joints - 1: np.ones(3)}
    data.motion = np.hstack([data.motion, prop])
    bvh.write(data, out)
    return out


@pytest.mark.data
def test_fill_keeps_joints_it_does_not_know_and_writes_kept_cells_as_read(data_root, tmp_path, capsys):
    """A prop joint keeps its channels on every frame (was written at rest: lost); key frames and the frames outside
    --frames are the input's numbers exactly, a key's Euler angle past 180 degrees included (was wrapped by 360)."""
    src = _with_a_prop(_body_clip(data_root, tmp_path, frames=40), tmp_path / "prop.bvh")
    data = bvh.read(src)
    chest = data.channel_index()[data.names.index("Chest")]["Zrotation"]
    data.motion[20, chest] += 360.0  # the same rotation, written on another branch by the animator's tool
    bvh.write(data, src)
    out = tmp_path / "out.bvh"
    assert cli(["fill", str(src), "-o", str(out), "--keys", "0:last:10", "--frames", "5-35", "--model",
                str(models_dir() / "body.safetensors")]) == 0
    capsys.readouterr()
    a, b = bvh.read(src), bvh.read(out)
    assert b.names == a.names and b.channels == a.channels
    prop = list(a.channel_index()[-1].values())
    assert np.array_equal(b.motion[:, prop], a.motion[:, prop])
    kept = [*range(0, 5), 10, 20, 30, *range(36, 40)]
    assert np.array_equal(b.motion[kept], a.motion[kept])
    assert not np.array_equal(b.motion[15], a.motion[15])  # filled
    assert abs(b.motion[21, chest] - b.motion[20, chest]) < 30  # the frames after a key continue from its number


@pytest.mark.data
def test_fill_never_deletes_an_input_named_like_a_temporary_file_nor_replaces_what_is_not_a_file(
        data_root, tmp_path, capsys):
    """An input called OUT.bvh.tmp (the name the output's temporary file had: it was overwritten, then renamed
    away); a FIFO as -o is refused (it was replaced by a regular file); a symbolic link is written through."""
    src = _body_clip(data_root, tmp_path, frames=12, name="take.bvh.tmp")
    original = src.read_bytes()
    model = str(models_dir() / "body.safetensors")
    assert cli(["fill", str(src), "-o", str(tmp_path / "take.bvh"), "--keys", "0,last", "--model", model]) == 0
    assert src.read_bytes() == original and bvh.read(tmp_path / "take.bvh").n_frames == 12
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert cli(["fill", str(src), "-o", str(fifo), "--keys", "0,last", "--model", model]) == 2
    assert "is not a regular file" in capsys.readouterr().err and fifo.is_fifo()
    target, link = tmp_path / "target.bvh", tmp_path / "link.bvh"
    target.write_text("old")
    link.symlink_to(target)
    assert cli(["fill", str(src), "-o", str(link), "--keys", "0,last", "--model", model]) == 0
    assert link.is_symlink() and bvh.read(target).n_frames == 12


@pytest.mark.data
def test_fill_refuses_values_no_motion_has_and_files_it_cannot_read(data_root, tmp_path, capsys):
    src = _body_clip(data_root, tmp_path, frames=12)
    data = bvh.read(src)
    data.motion[10, data.channel_index()[data.names.index("Hips")]["Xposition"]] = 1e39
    bvh.write(data, src)
    out = tmp_path / "o.bvh"
    assert cli(["fill", str(src), "-o", str(out), "--keys", "0,last"]) == 2
    assert "frame 10, Hips Xposition = 1e+39: beyond +-1e+06" in capsys.readouterr().err and not out.exists()
    assert cli(["fill", str(tmp_path), "-o", str(out), "--keys", "0"]) == 2
    assert f"{tmp_path}: Is a directory" in capsys.readouterr().err
    loop = tmp_path / "loop.bvh"
    loop.symlink_to(loop)  # any other OSError is a message too, naming the file (was a traceback)
    assert cli(["fill", str(loop), "-o", str(out), "--keys", "0"]) == 2
    assert f"{loop}: Too many levels of symbolic links" in capsys.readouterr().err


@pytest.mark.data
def test_fill_says_sampling_options_are_ignored_without_sample(data_root, tmp_path, capsys):
    src = _body_clip(data_root, tmp_path, frames=12)
    assert cli(["fill", str(src), "-o", str(tmp_path / "o.bvh"), "--keys", "0,last", "--seed", "3", "--k", "4",
                "--model", str(models_dir() / "body.safetensors")]) == 0
    captured = capsys.readouterr()
    assert "--k, --seed only apply to --sample N" in captured.err and "2 key frames" in captured.out


@pytest.mark.data
def test_fill_reads_a_bom_and_refuses_a_clip_without_frames(data_root, tmp_path, capsys):
    src = _body_clip(data_root, tmp_path)
    bom = tmp_path / "bom.bvh"
    bom.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    assert bvh.read(bom).n_frames == 40
    out = tmp_path / "bom-out.bvh"
    assert cli(["fill", str(bom), "-o", str(out), "--keys", "0,last", "--model",
                str(models_dir() / "body.safetensors")]) == 0
    assert bvh.read(out).n_frames == 40
    empty = _slice(src, tmp_path / "empty.bvh", 0)
    assert bvh.read(empty).n_frames == 0
    assert cli(["fill", str(empty), "-o", str(tmp_path / "e.bvh"), "--keys", "0", "--model",
                str(models_dir() / "body.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "the BVH has no frames" in err and "outside" not in err, err


def test_key_syntax():
    from backend.cli_fill import parse_frames, parse_part

    assert parse_frames("0:last:10", 35) == [0, 10, 20, 30]
    assert parse_frames("0:last:10,last", 35) == [0, 10, 20, 30, 34]
    assert parse_frames("5:9", 20) == [5, 6, 7, 8, 9]
    assert parse_frames("0,3-5,2:8:3", 20) == [0, 2, 3, 4, 5, 8]
    assert parse_frames("last", 200, last=164) == [164]
    for bad, says in (("0:last:0", "step must be at least 1"), ("9:3:1", "runs backwards"), ("0:x:2", "not a frame"),
                      ("1:2:3:4", "not a frame"), ("0:40:10", "outside 0..34"),
                      ("0-99999999999", "reaches outside 0..34"), ("0:99999999999:1", "reaches outside")):
        with pytest.raises(ValueError, match=says):
            parse_frames(bad, 35)
    assert parse_part("100-164", 300) == (100, 164) and parse_part("10-last", 30) == (10, 29)
    for bad in ("100", "164-100", "0-300", "a-b", "5-5"):
        with pytest.raises(ValueError, match="--frames"):
            parse_part(bad, 300)


def test_key_lists_with_holes_are_refused_naming_the_option():
    """An empty item (``0,,3``, a trailing comma), an item given twice, a negative frame, a number written other than
    in digits and an empty list: each refused with the option and what is valid (``0,,3`` read as 0,3 before).
    Items that overlap (``0:last:10,last``) stay allowed."""
    from backend.cli_fill import parse_frames, parse_part

    for bad, says in (("0,,3", "'0,,3' has an empty item"), ("0,", "has an empty item"), (",0", "has an empty item"),
                      ("", "--keys: nothing given"), (" ", "nothing given"), ("0,5,0", "'0' is given twice"),
                      ("last,last", "'last' is given twice"), ("-5", "frame -5 is negative: frames are numbered"),
                      ("1_0", "'1_0' is not a frame number"), ("+3", "is not a frame number"),
                      ("0:last:", "the step must be at least 1"), ("34,35", "frame(s) 35 outside 0..34")):
        with pytest.raises(ValueError, match=re.escape(says)) as refused:
            parse_frames(bad, 35)
        assert str(refused.value).startswith("--keys: ") and "\n" not in str(refused.value)
    assert parse_frames("0:last:10,last", 31) == [0, 10, 20, 30] and parse_frames("0-5,5", 9) == [0, 1, 2, 3, 4, 5]
    for bad in ("", "1_0-20", "-1-5"):
        with pytest.raises(ValueError, match="--frames: .* is not a range of frames"):
            parse_part(bad, 300)


@pytest.mark.parametrize(("flags", "says"), [
    (["--keys", "0,,3"], "--keys: '0,,3' has an empty item"),
    (["--keys", "0,last", "--joints", ""], "--joints: nothing given"),  # was read as no joints
    (["--keys", "0,last", "--joints", "Hips,,Spine"], "--joints: 'Hips,,Spine' has an empty item"),
    (["--keys", "0,last", "--joints", "Hips,Spine,Hips"], "--joints: 'Hips' is given twice"),
    (["--keys", "0,last", "--joints", "Hips,hips"], "--joints: unknown joint 'hips' for the body skeleton; joints are"),
    (["--keys", "0,last", "--frames", ""], "--frames: '' is not a range of frames"),  # was read as the whole clip
    (["--keys", "0,12"], "--keys: frame(s) 12 outside 0..11 of the file"),
    (["--keys=-1,5"], "--keys: frame -1 is negative"),
])
@pytest.mark.data
def test_fill_refuses_option_values_with_holes(data_root, tmp_path, capsys, flags, says):
    """``anyfill fill``'s lists with a hole in them: exit status 2, one line naming the option and what is valid,
    no output."""
    src = _body_clip(data_root, tmp_path, frames=12)
    out = tmp_path / "o.bvh"
    assert cli(["fill", str(src), "-o", str(out), "--model", str(models_dir() / "body.safetensors"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and "\n" not in err and not out.exists(), err


@pytest.mark.data
def test_fill_part_of_a_clip_with_step_keys(data_root, tmp_path, capsys):
    """--frames 20-44 fills only that part (keys every 8th frame in it and its last); the frames outside
    come back unchanged, the keys inside too, the gaps are filled."""
    src = _body_clip(data_root, tmp_path, frames=60)
    out = tmp_path / "part.bvh"
    assert cli(["fill", str(src), "-o", str(out), "--keys", "0:last:8,last", "--frames", "20-44", "--model",
                str(models_dir() / "body.safetensors")]) == 0
    assert "(20-44)" in capsys.readouterr().out
    a, b = clip.load(src, "body"), clip.load(out, "body")
    assert b.n_frames == 60
    same = [*range(0, 20), 24, 32, 40, 44, *range(45, 60)]
    assert quat_angle(a.rotations[same], b.rotations[same]).max() < 1e-4
    assert quat_angle(a.rotations[28], b.rotations[28]).max() > 1e-3


@pytest.mark.data
def test_fill_names_valid_joints_and_fills_at_a_trained_rate(data_root, tmp_path, capsys):
    src = _body_clip(data_root, tmp_path, frames=20)
    model = str(models_dir() / "body.safetensors")
    assert cli(["fill", str(src), "-o", str(tmp_path / "o.bvh"), "--keys", "0,last", "--joints", "Hips,Tail",
                "--model", model]) == 2
    err = capsys.readouterr().err
    assert "unknown joint 'Tail'" in err and "Hips, Spine" in err, err
    data = bvh.read(src)
    data.frame_time = 1 / 120
    fast = tmp_path / "fast.bvh"
    bvh.write(data, fast)
    assert cli(["fill", str(fast), "-o", str(tmp_path / "o.bvh"), "--keys", "0,last", "--model", model]) == 0
    err = capsys.readouterr().err
    assert "note" in err and "runs at 120 fps" in err and "trained at (30 fps)" in err, err
    assert "filled at the nearest of those rates" in err, err  # the card: 30 fps
    assert cli(["fill", str(src), "-o", str(tmp_path / "o.bvh"), "--keys", "0,last", "--model", model]) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.data
def test_fill_writes_files_others_may_read_and_keeps_a_replaced_files_mode(data_root, tmp_path, capsys):
    """Outputs get what ``open`` gives a new file (0666 less the umask; they were 0600, unreadable to a Blender run
    by another user), and a replaced file keeps its own permissions."""
    src = _body_clip(data_root, tmp_path, frames=12)
    model = str(models_dir() / "body.safetensors")
    new, old = tmp_path / "new.bvh", tmp_path / "old.bvh"
    old.write_text("x")
    old.chmod(0o640)
    umask = os.umask(0o022)
    try:
        for out in (new, old):
            assert cli(["fill", str(src), "-o", str(out), "--keys", "0,last", "--model", model]) == 0
    finally:
        os.umask(umask)
    assert stat.S_IMODE(new.stat().st_mode) == 0o644 and stat.S_IMODE(old.stat().st_mode) == 0o640
    assert bvh.read(old).n_frames == 12


@pytest.mark.data
def test_fill_names_the_joint_a_clip_lacks_and_a_lone_ignored_option(data_root, tmp_path, capsys):
    src = _body_clip(data_root, tmp_path, frames=12)
    text = src.read_text().replace("JOINT Neck", "JOINT Neck2")
    renamed = tmp_path / "renamed.bvh"
    renamed.write_text(text)
    assert cli(["fill", str(renamed), "-o", str(tmp_path / "o.bvh"), "--keys", "0,last"]) == 2
    err = capsys.readouterr().err
    assert "neither a hand nor a body skeleton (the nearest: not a body skeleton, missing joints Neck)" in err
    assert cli(["fill", str(src), "-o", str(tmp_path / "o.bvh"), "--keys", "0,last", "--k", "4",
                "--model", str(models_dir() / "body.safetensors")]) == 0
    assert "--k only applies to --sample N" in capsys.readouterr().err
