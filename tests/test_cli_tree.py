"""``anyfill`` is one argparse tree: every command's help comes from it, without importing torch, FastAPI or
the command's own module."""

from __future__ import annotations

import subprocess
import sys

COMMANDS = [[], ["bench"], ["bench", "inbetween"], ["bench", "keys"], ["bench", "rig"], ["bench", "addon"],
            ["bench", "lift"],
            ["bench", "pixels"], ["bench", "prediction"], ["bench", "serve"], ["bench", "speed"],
            ["bench", "video-loader"], ["serve"], ["fill"], ["demo"], ["build-addon"], ["train"],
            ["train", "anyorder"], ["sample", "pixels"]]


def test_every_command_has_help_from_the_tree_without_heavy_imports():
    code = (f"import contextlib, io, sys\nfrom anyfill.cli import main\nfor cmd in {COMMANDS!r}:\n"
            "    out = io.StringIO()\n"
            "    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
            "        main([*cmd, '--help'])\n"
            "    assert out.getvalue().startswith('usage: anyfill'), (cmd, out.getvalue()[:200])\n"
            "print(sorted(m for m in ('torch', 'lightning', 'fastapi', 'numpy', 'training.bench.rig', "
            "'training.bench.addon', 'backend.server') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_overrides_may_follow_options(monkeypatch):
    from anyfill.cli import main
    from training.documents.lift import bench

    seen = {}
    monkeypatch.setattr(bench, "main", lambda args: seen.setdefault("args", args) and 0)
    assert main(["bench", "lift", "hidden=64", "--named", "tiny", "dropout=0.1"]) == 0
    assert seen["args"].overrides == ["hidden=64", "dropout=0.1"] and seen["args"].named == "tiny"
