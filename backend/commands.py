"""The backend's commands: ``anyfill serve``, ``anyfill demo``, ``anyfill fill`` and ``anyfill bench serve``.
Only argparse here: each command imports its module (FastAPI, torch) when it runs."""

from __future__ import annotations

import argparse

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8765
# ``anyfill fill``'s sampling options and their defaults (a plain fill ignores them, and says so when they are set)
SAMPLING_DEFAULTS = {"order": "lowest-entropy", "k": 1, "temperature": 1.0, "seed": 0}


def _run(module: str):
    def run(args: argparse.Namespace) -> int:
        import importlib

        return importlib.import_module(f"backend.{module}").main(args)

    return run


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``serve``, ``demo`` and ``fill`` to ``anyfill``."""
    serve = sub.add_parser("serve", help="run the local fill server",
                           description="Serve the fill models on a local HTTP port.")
    serve.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1; others warn)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"port (default {DEFAULT_PORT}; 0: any free port)")
    serve.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                       help="model to serve, repeatable: a shipped name, a .safetensors path, or NAME=PATH "
                       "(default: the shipped hand and body models)")
    serve.add_argument("--workers", type=int, default=2,
                       help="requests run at once (default 2), as threads of the one server process: one request's "
                       "model arithmetic runs beside another's Python, not two requests' Python at once")
    serve.add_argument("--threads", type=int, default=1,
                       help="torch CPU threads per request (default 1; 0: torch's default); a 65-frame window gains "
                       "nothing from a second thread, and two threads per request on a busy machine made fills "
                       "several times slower")
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--no-warm-up", action="store_true",
                       help="listen at once, without a fill and a sample per model first (first requests pay for it)")
    serve.set_defaults(func=_run("server"))

    demo = sub.add_parser("demo", help="the main job: start the server and fill real test clips over HTTP",
                          description="The main job end to end: start 'anyfill serve', take the test-split body "
                          "and hand windows that move the most per second, fill them over HTTP from a key every "
                          "N frames, write the ground truth, the fill, interpolation's and Blender Bezier's as "
                          "BVH with a PNG of each method's error per frame, and print which file each clip came "
                          "from and each method's error.")
    demo.add_argument("--every", type=int, default=10, help="keep one key every N frames (default 10)")
    demo.add_argument("--frames", type=int, default=121, help="frames of each clip at 30 fps (default 121: 4 s)")
    demo.add_argument("--out", default="demo-output",
                      help="folder for the BVH files and plots (default demo-output; files there are replaced)")
    demo.set_defaults(func=_run("demo"))

    fill = sub.add_parser("fill", help="fill a BVH file from its key frames",
                          description="Fill a BVH file from its key frames with the fill engine, without a "
                          "server: the given frames (every joint) and joints (every frame) are kept, the rest "
                          "filled.")
    fill.add_argument("input", metavar="INPUT.bvh")
    fill.add_argument("-o", "--output", required=True, metavar="OUTPUT.bvh")
    fill.add_argument("--keys", required=True, metavar="FRAMES",
                      help="key frames to keep, 0-based: e.g. 0,10,20-25,last; 0:last:10 is every 10th frame")
    fill.add_argument("--joints", metavar="NAMES", help="comma-separated joints kept on every frame")
    fill.add_argument("--frames", metavar="A-B", help="fill only frames A to B (file numbering; the rest is copied)")
    fill.add_argument("--model", metavar="NAME_OR_PATH", help="shipped model name or .safetensors path "
                      "(default: the shipped model of the file's skeleton)")
    fill.add_argument("--sample", type=int, default=0, metavar="N", help="write N sampled variations instead")
    fill.add_argument("--order", default=SAMPLING_DEFAULTS["order"], metavar="ORDER",
                      help="sampling order: one of the engine's (GET /v1/models lists them; default lowest-entropy, "
                      "the most certain cells first)")
    fill.add_argument("--k", type=int, default=SAMPLING_DEFAULTS["k"], help="cells (or frames) per sampling step")
    fill.add_argument("--temperature", type=float, default=SAMPLING_DEFAULTS["temperature"],
                      help="how far variations stray from the fill: a multiple of the model's calibrated default (1)")
    fill.add_argument("--seed", type=int, default=SAMPLING_DEFAULTS["seed"])
    fill.add_argument("--threads", type=int, default=0,
                      help="CPU threads of the model's arithmetic (NumPy's BLAS; torch's for a triples model; 0: "
                      "their defaults)")
    fill.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                      help="show progress on stderr: a bar on a terminal, plain lines otherwise (default: for "
                      "clips longer than the model's window, and for --sample)")
    fill.set_defaults(func=_run("cli_fill"))


def add_bench_parsers(bench_sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to ``anyfill bench``."""
    bs = bench_sub.add_parser("serve", help="fill latency and throughput of a local server",
                              description="Fill latency and throughput of a local 'anyfill serve'.")
    bs.add_argument("--model", action="append", metavar="NAME_OR_PATH", help="as for anyfill serve (default: shipped)")
    bs.add_argument("--requests", type=int, default=100, help="requests per measurement")
    bs.add_argument("--threads", type=int, default=1, help="the server's torch CPU threads")
    bs.add_argument("--workers", type=int, default=2, help="the server's concurrent requests")
    bs.add_argument("--json", metavar="OUT", help="also write the results as JSON")
    bs.set_defaults(func=_run("bench"))
