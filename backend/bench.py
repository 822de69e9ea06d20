"""``anyfill bench serve``: latency and throughput of ``POST /v1/fill`` through a real server.

Starts ``anyfill serve`` in a subprocess on a free 127.0.0.1 port (its own token file), then for each
model sends a 65-frame window in the in-betweening pattern (10 context frames and the last frame known,
every joint; the 54-frame gap is the target): one client sequentially, then 8 clients at once. Reports
p50 and p99 of the client-side latency, the model's own time (``timings.model_ms``) beside it so the
server's overhead is visible, and requests per second; and the latency of each model's first request after
the server started listening (the server warms every model up before it listens).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from backend import options

WINDOW, CONTEXT = 65, 10


def window_request(model: dict, frames: int = WINDOW, context: int = CONTEXT, seed: int = 0) -> dict:
    """A fill request for a model described by ``GET /v1/models``: smooth random rotations near the rest
    pose, moving joints drifting forward, keys on the context frames and the last frame."""
    from training.motion.rotations import axis_angle_to_quat

    rng = np.random.default_rng(seed)
    keys = set(range(context)) | {frames - 1}
    u = np.linspace(0.0, 1.0, frames)[:, None]
    joints = {}
    for j in model["joints"]:
        a, b = rng.normal(scale=0.3, size=(2, 3))
        q = axis_angle_to_quat(a * (1 - u) + b * u)[:, [3, 0, 1, 2]]
        track = {"rotations": [q[t].tolist() if t in keys else None for t in range(frames)]}
        if j["moving"]:
            pos = np.asarray(j["rest_offset"]) + u * np.array([1.0, 0.0, 0.0])
            track["translations"] = [pos[t].tolist() if t in keys else None for t in range(frames)]
        joints[j["name"]] = track
    return {"model": model["name"], "fps": 30.0, "frames": list(range(frames)), "joints": joints}


def _percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(ms)}


def _run_client(client, body: bytes, n: int, lat: list, model_ms: list) -> None:
    for _ in range(n):
        t = time.perf_counter()
        r = client.post("/v1/fill", content=body, headers={"content-type": "application/json"})
        lat.append((time.perf_counter() - t) * 1e3)
        r.raise_for_status()
        model_ms.append(r.json()["timings"]["model_ms"])


def measure(url: str, token: str, model: dict, requests: int, clients: int = 8, warmup: int = 5) -> dict:
    import httpx

    body = json.dumps(window_request(model)).encode()
    headers = {"Authorization": f"Bearer {token}"}
    out = {"model": model["name"], "skeleton": model["skeleton"], "joints": len(model["joints"]),
           "frames": WINDOW, "body_bytes": len(body)}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as c:
        first: list[float] = []
        _run_client(c, body, 1, first, [])  # the model's first request since the server started
        out["first_ms"] = first[0]
        _run_client(c, body, warmup, [], [])
        lat, mm = [], []
        t = time.perf_counter()
        _run_client(c, body, requests, lat, mm)
        wall = time.perf_counter() - t
    out["single"] = {**_percentiles(lat), "model_p50_ms": float(np.median(mm)), "rps": requests / wall}
    lat, mm = [], []
    per = max(1, requests // clients)
    cs = [httpx.Client(base_url=url, headers=headers, timeout=120) for _ in range(clients)]
    threads = [threading.Thread(target=_run_client, args=(c, body, per, lat, mm)) for c in cs]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    for c in cs:
        c.close()
    out[f"clients_{clients}"] = {**_percentiles(lat), "model_p50_ms": float(np.median(mm)),
                                 "rps": per * clients / wall}
    return out


def start_server(models: list[str] | None, threads: int, workers: int, token_file: Path):
    cmd = [sys.executable, "-m", "anyfill.cli", "serve", "--port", "0", "--threads", str(threads),
           "--workers", str(workers), "--log-level", "info"]
    for m in models or []:
        cmd += ["--model", m]
    env = dict(os.environ, ANYFILL_TOKEN_FILE=str(token_file))
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            threading.Thread(target=lambda: [None for _ in proc.stderr], daemon=True).start()  # keep draining
            return proc, m.group(1)
    proc.wait()
    raise RuntimeError("anyfill serve did not start:\n" + "".join(lines[-20:]))


def format_table(results: list[dict]) -> str:
    rows = ["| model | clients | p50 ms | p99 ms | model p50 ms | overhead p50 ms | req/s | first request ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        for key in ("single", "clients_8"):
            s = r[key]
            n = 1 if key == "single" else 8
            first = f"{r['first_ms']:.1f}" if key == "single" else ""
            rows.append(f"| {r['model']} ({r['skeleton']}, {r['joints']} joints x {r['frames']} frames) | {n} | "
                        f"{s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['model_p50_ms']:.1f} | "
                        f"{s['p50_ms'] - s['model_p50_ms']:.1f} | {s['rps']:.1f} | {first} |")
    return "\n".join(rows)


def bad_option(args: argparse.Namespace) -> str | None:
    """The first of ``anyfill bench serve``'s options that cannot work, checked before the server starts (``--requests
    0`` failed in NumPy's percentile after the server had started, ``--workers 0`` as a traceback saying the server
    did not start): the server's own options as ``anyfill serve`` checks them, a model that is no file, a JSON output
    that cannot be written."""
    from backend.jobs import MAX_JOBS
    from training.inbetween.checkpoint import CheckpointError, resolve_path
    from training.motion.files import check_output

    problem = options.first(
        options.models(args.model),
        options.whole("--requests", args.requests, 1, meaning=" (requests per measurement)"),
        options.threads(args.threads, "torch's default, one per core"),
        options.workers(args.workers, MAX_JOBS),
    )
    for spec in [] if problem else args.model or []:
        try:
            path = resolve_path(spec.partition("=")[2] or spec)
        except CheckpointError as e:
            return f"--model {spec}: {e}"
        if not path.is_file():
            return f"--model {spec}: no such file {path}"
    if not problem and args.json:
        try:
            check_output(args.json)
        except ValueError as e:
            problem = f"--json: {e}"
    return problem


def main(args: argparse.Namespace) -> int:
    """``anyfill bench serve`` (its arguments: :mod:`backend.commands`)."""
    import httpx

    problem = bad_option(args)
    if problem:
        print(f"anyfill bench serve: error: {problem}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        token_file = Path(tmp) / "token"
        proc, url = start_server(args.model, args.threads, args.workers, token_file)
        try:
            token = token_file.read_text().strip()
            models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {token}"}).json()["models"]
            results = [measure(url, token, m, args.requests) for m in models]
        finally:
            proc.terminate()
            proc.wait(30)
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"benchmark": "serve", "threads": args.threads,
                                               "workers": args.workers, "results": results}, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
