"""The ``anyfill`` command line: one argparse tree, one subcommand per job.

Each area adds its own subcommands (``add_parser(s)`` of :mod:`backend.commands`, :mod:`training.bench.commands`,
:mod:`training.documents.commands`, :mod:`training.train`, :mod:`anyfill.build_addon`); those modules hold
only argparse, and a command imports its module when it runs, so ``anyfill bench`` works without the
server's packages and ``anyfill --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _bench_rig(args: argparse.Namespace) -> int:
    """``anyfill bench rig``: the extension as a user installs it, built first."""
    import tempfile
    from pathlib import Path

    from anyfill.build_addon import build
    from training.bench.rig import main as rig_main

    return rig_main(args, addon_zip=build(out_dir=Path(tempfile.mkdtemp(prefix="anyfill-dist-"))))


def _bench_addon(args: argparse.Namespace) -> int:
    """``anyfill bench addon``: the extension as a user installs it, built first."""
    import tempfile
    from pathlib import Path

    from anyfill.build_addon import build
    from training.bench.addon import main as addon_main

    return addon_main(args, addon_zip=build(out_dir=Path(tempfile.mkdtemp(prefix="anyfill-dist-"))))


def build_parser() -> argparse.ArgumentParser:
    from anyfill import __version__, build_addon
    from backend import commands as backend_commands
    from training import train
    from training.bench import commands as bench_commands
    from training.documents import commands as document_commands

    p = argparse.ArgumentParser(prog="anyfill", description="AI in-betweening for animators.")
    p.add_argument("--version", action="version", version=f"anyfill {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="benchmarks (quality and speed)", description="Benchmarks: quality and speed.")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    bench_commands.add_parsers(bench_sub)
    bench_sub.choices["rig"].set_defaults(func=_bench_rig)
    bench_sub.choices["addon"].set_defaults(func=_bench_addon)
    document_commands.add_bench_parsers(bench_sub)
    backend_commands.add_bench_parsers(bench_sub)

    backend_commands.add_parsers(sub)
    build_addon.add_parser(sub)
    train.add_parser(sub)

    sample = sub.add_parser("sample", help="sample from a trained model", description="Sample from a trained model.")
    document_commands.add_sample_parsers(sample.add_subparsers(dest="sample", required=True, metavar="MODEL"))
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "argv", None), list):
        args.argv = [*extra, *args.argv]  # a command that parses the rest itself (anyfill train)
    elif extra and isinstance(getattr(args, "overrides", None), list) and not any(e.startswith("-") for e in extra):
        args.overrides += extra  # key=value overrides may come after options too
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except (OSError, KeyError, ValueError) as e:  # a file that cannot be read or written, a full disk, bad input
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        if isinstance(e, OSError) and e.filename is not None:
            msg = f"{e.filename}: {e.strerror or e}"
        print(f"anyfill: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("anyfill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
