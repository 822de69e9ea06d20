"""The ``anyfill`` command line: one entry point, one subcommand per job.

Subcommands import their module lazily, so ``anyfill bench`` works without the server's packages and
``anyfill --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _bench_inbetween(args: argparse.Namespace) -> int:
    from anyfill.training.bench import inbetween

    result = inbetween.run(args.skeleton, args.method, data=args.data, gaps=args.gaps, root=args.data_root)
    print(inbetween.format_table(result))
    if args.json:
        inbetween.write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from anyfill.training.train import main as train_main

    return train_main([args.model, *extra])


def build_parser() -> argparse.ArgumentParser:
    from anyfill import __version__

    p = argparse.ArgumentParser(prog="anyfill", description="AI in-betweening for animators.")
    p.add_argument("--version", action="version", version=f"anyfill {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="benchmarks (quality and speed)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    ib = bench_sub.add_parser("inbetween", help="LaFAN1-protocol in-betweening on the test split")
    ib.add_argument("--skeleton", choices=("body", "hand"), required=True)
    ib.add_argument("--method", default="interp", help="zero, interp, or a checkpoint path / shipped model name")
    ib.add_argument("--data", nargs="+", metavar="FILE_OR_DIR", help="score these BVH files instead of the test split")
    ib.add_argument("--gaps", nargs="+", type=int, default=[5, 15, 30, 45], metavar="N")
    ib.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    ib.add_argument("--data-root", metavar="DIR", help="folder holding splits.json (default ../shared/data)")
    ib.set_defaults(func=_bench_inbetween)

    train = sub.add_parser("train", help="train a model (see 'anyfill train MODEL --help')", add_help=False)
    train.add_argument("model", nargs="?", default="--help")
    train.set_defaults(func=_train, passthrough=True)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    try:
        if getattr(args, "passthrough", False):
            return args.func(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.func(args)
    except (FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"anyfill: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("anyfill: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
