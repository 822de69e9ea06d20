"""The ``anyfill`` command line: one entry point, one subcommand per job.

Subcommands import their module lazily, so ``anyfill bench`` works without the server's packages and
``anyfill --help`` is instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _conventions(args: argparse.Namespace):
    """The rig conventions of ``--perturb-conventions`` (None: the test windows as captured)."""
    from training.bench.inbetween import Conventions

    if args.perturb_conventions is None:
        return None
    for name in ("perturb_conventions", "perturb_hinge"):
        v = getattr(args, name)
        if not 0.0 <= v <= 180.0:
            raise SystemExit(f"anyfill bench: --{name.replace('_', '-')} must be in [0, 180] degrees, got {v}")
    return Conventions(args.perturb_conventions, args.perturb_hinge, args.perturb_seed)


def _bench_inbetween(args: argparse.Namespace) -> int:
    from training.bench import inbetween

    conv = _conventions(args)
    if conv is not None and args.record:
        print("anyfill bench inbetween: --record writes the card's test-split numbers; not with --perturb-conventions",
              file=sys.stderr)
        return 2
    result = inbetween.run(args.skeleton, args.method, data=args.data, gaps=args.gaps, root=args.data_root,
                           conventions=conv)
    print(inbetween.format_table(result))
    if conv is not None:  # the same method on the windows as captured, and the ratio perturbed / as captured
        plain = inbetween.run(args.skeleton, args.method, data=args.data, gaps=args.gaps, root=args.data_root)
        result["unperturbed"] = {"gaps": plain["gaps"]}
        result["ratio_to_unperturbed"] = inbetween.ratios(result, plain)
        print(f"(above: {args.method} with the test windows in other rig conventions: {conv.twist_deg:g} deg "
              f"twists, knees {conv.hinge_deg:g} deg off their hinge, seed {conv.seed})")
        print(inbetween.format_table(plain))
        print(inbetween.format_table({**result, "method": f"{args.method} perturbed / as captured",
                                      "gaps": result["ratio_to_unperturbed"]}))
    baseline = None
    if args.baseline and args.baseline != args.method:
        baseline = inbetween.run(args.skeleton, args.baseline, data=args.data, gaps=args.gaps, root=args.data_root,
                                 conventions=conv)
        result["baseline"] = {"method": args.baseline, "gaps": baseline["gaps"]}
        result["ratio_to_baseline"] = inbetween.ratios(result, baseline)
        print(inbetween.format_table(baseline))
        print(inbetween.format_table({**result, "method": f"{args.method} / {args.baseline}",
                                      "gaps": result["ratio_to_baseline"]}))
    if args.json:
        inbetween.write_json(result, args.json)
        print(f"wrote {args.json}")
    if args.record:
        import shlex

        inbetween.record_in_card(args.method, result, baseline, "anyfill " + shlex.join(sys.argv[1:]))
        print(f"recorded the numbers in the card of {args.method}")
    return 0


def _bench_keys(args: argparse.Namespace) -> int:
    from training.bench import inbetween, keys

    if args.bands < 0 or (args.bands and not (args.baseline and args.baseline != args.method)):
        print("anyfill bench keys: --bands needs a positive count and a --baseline other than --method "
              f"(the bands are the baseline's errors); got --bands {args.bands}, --baseline {args.baseline}",
              file=sys.stderr)
        return 2
    conv = _conventions(args)
    result = keys.run(args.skeleton, args.method, every=args.every, data=args.data, root=args.data_root,
                      conventions=conv)
    print(keys.format_table(result))
    if conv is not None:  # the same method on the windows as captured, and the ratio perturbed / as captured
        plain = keys.run(args.skeleton, args.method, every=args.every, data=args.data, root=args.data_root)
        result["unperturbed"] = {"every": {n: {m: v[m] for m in ("L2Q", "L2P")} for n, v in plain["every"].items()}}
        result["ratio_to_unperturbed"] = keys.ratios(result, plain)
        print(keys.format_table(plain, title=f"keys every n frames: {args.method} on the windows as captured"))
        print(keys.format_table({**result, "every": result["ratio_to_unperturbed"]},
                                title=f"ratio: {args.method} in other rig conventions ({conv.twist_deg:g} deg twists, "
                                      f"knees {conv.hinge_deg:g} deg) / as captured"))
    if args.baseline and args.baseline != args.method:
        baseline = keys.run(args.skeleton, args.baseline, every=args.every, data=args.data, root=args.data_root,
                            conventions=conv)
        result["baseline"] = {"method": args.baseline, "every": baseline["every"]}
        result["ratio_to_baseline"] = keys.ratios(result, baseline)
        print(keys.format_table(baseline))
        print(keys.format_table({**result, "every": result["ratio_to_baseline"]},
                                title=f"ratio: {args.method} / {args.baseline}"))
        if args.bands:
            result["by_difficulty"] = keys.by_difficulty(result, baseline, bands=args.bands)
            print(keys.format_difficulty(result["by_difficulty"], args.method, args.baseline))
    if args.json:
        inbetween.write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0


def _bench_prediction(args: argparse.Namespace) -> int:
    from training.documents.stcformer import bench as prediction

    result = prediction.run(args.methods, root=args.data_root, stride=args.stride, threads=args.threads,
                            repeats=args.repeats)
    print(prediction.format_table(result))
    if args.json:
        prediction.write_json(result, args.json)
        print(f"wrote {args.json}")
    for run_dir in args.attention or []:
        a = prediction.attention_maps(run_dir, args.attention_out, root=args.data_root, stride=args.stride)
        print(f"{a['model']} attention maps in {args.attention_out}: L1(temporal, spatial) "
              f"{a['l1_temporal_spatial']:.3f}, L1 to uniform {a['l1_temporal_uniform']:.3f} (temporal), "
              f"{a['l1_spatial_uniform']:.3f} (spatial)")
    return 0


def _add_bench_prediction(bench_sub: argparse._SubParsersAction) -> None:
    pr = bench_sub.add_parser("prediction", help="STCFormer-report 10 -> 25 frame motion prediction")
    pr.add_argument("--methods", nargs="+", default=["zero"], metavar="METHOD", help="zero, or training run folders")
    pr.add_argument("--stride", type=int, default=5, help="frames between test windows")
    pr.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    pr.add_argument("--repeats", type=int, default=3, help="inference timing: the fastest of N runs")
    pr.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    pr.add_argument("--attention", nargs="+", metavar="RUN", help="export first-encoder-block attention maps")
    pr.add_argument("--attention-out", default="bench-results/attention", metavar="DIR")
    pr.add_argument("--data-root", metavar="DIR", help="folder holding splits.json (default ../shared/data)")
    pr.set_defaults(func=_bench_prediction)


def _bench_lift(args: argparse.Namespace, extra: list[str]) -> int:
    from training.documents.lift.bench import main as lift_main

    return lift_main(extra)


def _bench_video(args: argparse.Namespace, extra: list[str]) -> int:
    from training.documents.perceiver.bench import main as video_main

    return video_main(extra)


def _bench_rig(args: argparse.Namespace, extra: list[str]) -> int:
    import tempfile
    from pathlib import Path

    from anyfill.build_addon import build
    from training.bench.rig import main as rig_main

    root = Path(__file__).resolve().parents[1]
    return rig_main(extra, addon_zip=build(root, Path(tempfile.mkdtemp(prefix="anyfill-dist-"))))


def _pixels(args: argparse.Namespace, extra: list[str]) -> int:
    from training.documents.pixels import bench as pixels

    return (pixels.bench_main if args.command == "bench" else pixels.sample_main)(extra)


def _backend(args: argparse.Namespace, extra: list[str]) -> int:
    """``anyfill serve``, ``anyfill fill`` and ``anyfill bench serve``: argument parsing lives in the backend."""
    import importlib

    module = {"serve": "server", "fill": "cli_fill", "demo": "demo"}.get(args.command, "bench")
    return importlib.import_module(f"backend.{module}").main(extra)


def _bench_model(args: argparse.Namespace) -> int:
    """``anyfill bench speed|sampling|pose|probe``: the trained any-order motion model's benchmarks."""
    import json
    from pathlib import Path

    if args.bench == "speed":
        from training.bench import speed

        result = speed.run(dict(zip(("body", "hand"), args.models, strict=False)), threads=args.threads,
                           repeats=args.repeats)
        text = speed.format_table(result)
    elif args.bench == "sampling":
        from training.bench import sampling

        result = sampling.run_sampling(args.model, args.skeleton, gap=args.gap, windows=args.windows, n=args.n,
                                       ks=tuple(args.k), temperature=args.temperature, seed=args.seed,
                                       progress=lambda row: print(row, flush=True))
        text = sampling.format_sampling(result)
    elif args.bench == "probe":
        from training.bench import probe

        result = probe.run(args.skeleton, gap=args.gap, windows=args.windows, lambdas=tuple(args.lambdas),
                           base_velocity=args.base_velocity)
        text = probe.format_table(result)
    else:
        from training.bench import sampling

        result = sampling.run_pose(args.model, frames=args.frames)
        text = sampling.format_pose(result)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


def _add_bench_model(bench_sub: argparse._SubParsersAction) -> None:
    sp = bench_sub.add_parser("speed", help="fill and sampling latency of the motion models (CPU)")
    sp.add_argument("--models", nargs=2, default=["body", "hand"], metavar=("BODY", "HAND"))
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--repeats", type=int, default=20)
    sm = bench_sub.add_parser("sampling", help="the thesis experiment: any-order sampling by order and k")
    sm.add_argument("--model", default="hand", help="checkpoint path or shipped name")
    sm.add_argument("--skeleton", choices=("body", "hand"), default="hand")
    sm.add_argument("--gap", type=int, default=15)
    sm.add_argument("--windows", type=int, default=12)
    sm.add_argument("--n", type=int, default=8, help="variations per window")
    sm.add_argument("--k", type=int, nargs="+", default=[1, 8, 64], help="cells per step")
    sm.add_argument("--temperature", type=float, default=1.0)
    sm.add_argument("--seed", type=int, default=0)
    po = bench_sub.add_parser("pose", help="pose completion of the hand from the wrist and some fingers")
    po.add_argument("--model", default="hand", help="checkpoint path or shipped name")
    po.add_argument("--frames", type=int, default=400)
    pb = bench_sub.add_parser("probe", help="ridge maps from the context: what is linearly predictable in a gap")
    pb.add_argument("--skeleton", choices=("body", "hand"), default="hand")
    pb.add_argument("--gap", type=int, default=15)
    pb.add_argument("--windows", type=int, default=30000, help="training windows to fit on")
    pb.add_argument("--lambdas", type=float, nargs="+", default=[1e-4, 1e-2, 1.0])
    pb.add_argument("--base-velocity", type=float, default=0.5, help="the Hermite baseline's share (0: interp)")
    for p in (sp, sm, po, pb):
        p.add_argument("--json", metavar="OUT", help="also write the result as JSON")
        p.set_defaults(func=_bench_model)


def _train(args: argparse.Namespace, extra: list[str]) -> int:
    from training.train import main as train_main

    return train_main([args.model, *extra])


def _build_addon(args: argparse.Namespace, extra: list[str]) -> int:
    from anyfill.build_addon import main as build_main

    return build_main(extra)


def _add_test_split_args(p: argparse.ArgumentParser) -> None:
    """What every fill benchmark on the test split takes: skeleton, method, data, baseline, output."""
    p.add_argument("--skeleton", choices=("body", "hand"), required=True)
    p.add_argument("--method", default="interp",
                   help="zero, interp, bezier (Blender's own curves), or a checkpoint path / shipped model name")
    p.add_argument("--data", nargs="+", metavar="FILE_OR_DIR", help="score these BVH files instead of the test split")
    p.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    p.add_argument("--baseline", metavar="METHOD", help="also score this method and print the ratios to it")
    p.add_argument("--data-root", metavar="DIR", help="folder holding splits.json (default ../shared/data)")
    p.add_argument("--perturb-conventions", type=float, metavar="DEG",
                   help="put the test windows in other rig conventions first: forearms, hands, feet, toes and the "
                        "head turned about their bone axes by +-DEG (moving no joint); the fill is turned back "
                        "before scoring; also scores the windows as captured and prints the ratio")
    p.add_argument("--perturb-hinge", type=float, default=15.0, metavar="DEG",
                   help="with --perturb-conventions: each knee's hinge tilted by +-DEG (default 15)")
    p.add_argument("--perturb-seed", type=int, default=0, metavar="N",
                   help="with --perturb-conventions: the seed of the turns' signs (default 0)")


def build_parser() -> argparse.ArgumentParser:
    from anyfill import __version__

    p = argparse.ArgumentParser(prog="anyfill", description="AI in-betweening for animators.")
    p.add_argument("--version", action="version", version=f"anyfill {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    bench = sub.add_parser("bench", help="benchmarks (quality and speed)")
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    ib = bench_sub.add_parser("inbetween", help="LaFAN1-protocol in-betweening on the test split")
    _add_test_split_args(ib)
    ib.add_argument("--gaps", nargs="+", type=int, default=[5, 15, 30, 45], metavar="N")
    ib.add_argument("--record", action="store_true", help="write the numbers into the model's card")
    ib.set_defaults(func=_bench_inbetween)
    kb = bench_sub.add_parser("keys", help="the animator's use: a key every n frames, fill the rest (test split)")
    _add_test_split_args(kb)
    kb.add_argument("--every", nargs="+", type=int, default=[5, 10, 20], metavar="N", help="frames between keys")
    kb.add_argument("--bands", type=int, default=0, metavar="K",
                    help="with --baseline: also the ratio in K bands of windows, easiest (lowest baseline error) first")
    kb.set_defaults(func=_bench_keys)
    _add_bench_prediction(bench_sub)
    _add_bench_model(bench_sub)
    lift = bench_sub.add_parser("lift", help="LiftModel sweep: the CS764 report's four tables", add_help=False)
    lift.set_defaults(func=_bench_lift, passthrough=True)
    bench_sub.add_parser("rig", help="the extension on real rigs in headless Blender against Blender's Bezier curves",
                         add_help=False).set_defaults(func=_bench_rig, passthrough=True)
    px = bench_sub.add_parser("pixels", help="any-order pixel model: test NLL and samples per order", add_help=False)
    px.set_defaults(func=_pixels, passthrough=True)
    bench_sub.add_parser("video-loader", help="video loader vs perceiver-ae training throughput (samples/s)",
                         add_help=False).set_defaults(func=_bench_video, passthrough=True)

    bench_sub.add_parser("serve", help="fill latency and throughput of a local server",
                         add_help=False).set_defaults(func=_backend, passthrough=True)
    for name, text in (("serve", "run the local fill server (see 'anyfill serve --help')"),
                       ("demo", "the main job: start the server and fill real sample clips over HTTP"),
                       ("fill", "fill a BVH file from its key frames (see 'anyfill fill --help')")):
        sub.add_parser(name, help=text, add_help=False).set_defaults(func=_backend, passthrough=True)

    sub.add_parser("build-addon", help="build the Blender extension zip into dist/ (see 'anyfill build-addon --help')",
                   add_help=False).set_defaults(func=_build_addon, passthrough=True)

    train = sub.add_parser("train", help="train a model (see 'anyfill train MODEL --help')", add_help=False)
    train.add_argument("model", nargs="?", default="--help")
    train.set_defaults(func=_train, passthrough=True)

    sample = sub.add_parser("sample", help="sample from a trained model")
    sample_sub = sample.add_subparsers(dest="sample", required=True, metavar="MODEL")
    sp = sample_sub.add_parser("pixels", help="4-colour digits in one order, as a PNG grid", add_help=False)
    sp.set_defaults(func=_pixels, passthrough=True)
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
