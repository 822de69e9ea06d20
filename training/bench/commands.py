"""``anyfill bench`` commands of the product: in-betweening and keys on the test split, the motion models'
speed, any-order sampling, pose completion, the linear probe, and the extension on real rigs (its quality and its
own time). Only argparse
here: each command imports its module when it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# the rig bench's clips, under the data folder: one rig family each (Mixamo, CMU)
DEFAULT_CLIPS = ("foreign/mixamo_walk-in-circle.bvh", "foreign/cmu-xia_normal.bvh", "foreign/cmu-xia_proud.bvh")
DEFAULT_ADDON_CLIP = DEFAULT_CLIPS[0]  # the addon bench's shot, played forward and back to length


def _conventions(args: argparse.Namespace):
    """The rig conventions of ``--perturb-conventions`` (None: the test windows as captured); ValueError naming a
    bad option."""
    from training.bench.inbetween import Conventions

    if args.perturb_conventions is None:
        return None
    for name in ("perturb_conventions", "perturb_hinge"):
        v = getattr(args, name)
        if not 0.0 <= v <= 180.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 180] degrees, got {v}")
    if args.perturb_seed < 0:
        raise ValueError(f"--perturb-seed must be a whole number >= 0, got {args.perturb_seed}")
    return Conventions(args.perturb_conventions, args.perturb_hinge, args.perturb_seed)


def _refuse(command: str, message: str) -> int:
    print(f"anyfill bench {command}: {message}", file=sys.stderr)
    return 2


def _check_test_split_args(args: argparse.Namespace):
    """What every fill benchmark on the test split checks before any work: the output file can be written, the
    data given exists, the rig conventions, and the method and baseline resolve (a model file loaded, of this
    skeleton). Returns (conventions, method, baseline or None); ValueError naming the bad option."""
    from training.bench.inbetween import resolve_method
    from training.motion.files import check_output
    from training.motion.skeleton import get_schema

    if args.json:
        try:
            check_output(args.json)
        except ValueError as e:
            raise ValueError(f"--json: {e}") from None
    missing = [d for d in args.data or () if not Path(d).exists()]
    if missing:
        raise ValueError(f"--data: no such file or folder: {', '.join(missing)}")
    conv = _conventions(args)
    schema = get_schema(args.skeleton)
    resolved = []
    for option, name in (("--method", args.method), ("--baseline", args.baseline)):
        if option == "--baseline" and (not name or name == args.method):
            resolved.append(None)
            continue
        try:
            resolved.append(resolve_method(name, schema))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{option} {name}: {e.args[0] if isinstance(e, KeyError) else e}") from None
    return conv, *resolved


def _bench_inbetween(args: argparse.Namespace) -> int:
    from training.bench import inbetween

    try:
        inbetween.check_gaps(args.gaps, "--gaps")
        conv, method, base_method = _check_test_split_args(args)
    except ValueError as e:
        return _refuse("inbetween", str(e))
    if conv is not None and args.record:
        return _refuse("inbetween", "--record writes the card's test-split numbers; not with --perturb-conventions")
    if args.record and args.method in inbetween.BASELINES:
        return _refuse("inbetween", f"--record writes into a model's card; --method {args.method} is a baseline, "
                                    "not a model file or shipped model")
    result = inbetween.run(args.skeleton, args.method, data=args.data, gaps=args.gaps, root=args.data_root,
                           conventions=conv, method=method)
    print(inbetween.format_table(result))
    if conv is not None:  # the same method on the windows as captured, and the ratio perturbed / as captured
        plain = inbetween.run(args.skeleton, args.method, data=args.data, gaps=args.gaps, root=args.data_root,
                              method=method)
        result["unperturbed"] = {"gaps": plain["gaps"]}
        result["ratio_to_unperturbed"] = inbetween.ratios(result, plain)
        print(f"(above: {args.method} with the test windows in other rig conventions: {conv.twist_deg:g} deg "
              f"twists, knees {conv.hinge_deg:g} deg off their hinge, seed {conv.seed})")
        print(inbetween.format_table(plain))
        print(inbetween.format_table({**result, "method": f"{args.method} perturbed / as captured",
                                      "gaps": result["ratio_to_unperturbed"]}))
    baseline = None
    if base_method is not None:
        baseline = inbetween.run(args.skeleton, args.baseline, data=args.data, gaps=args.gaps, root=args.data_root,
                                 conventions=conv, method=base_method)
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
        return _refuse("keys", "--bands needs a positive count and a --baseline other than --method (the bands are "
                               f"the baseline's errors); got --bands {args.bands}, --baseline {args.baseline}")
    if (args.wrist == "known" or args.partial is not None) and args.skeleton != "hand":
        return _refuse("keys", f"--wrist known and --partial are for the hand skeleton, not {args.skeleton}")
    if args.partial is not None and not 0 <= args.partial <= 5:
        return _refuse("keys", f"--partial is a number of fingers, 0 to 5, got {args.partial}")
    try:
        keys.check_every(args.every, "--every")
        conv, method, base_method = _check_test_split_args(args)
    except ValueError as e:
        return _refuse("keys", str(e))
    result = keys.run(args.skeleton, args.method, every=args.every, data=args.data, root=args.data_root,
                      conventions=conv, wrist=args.wrist, partial=args.partial, method=method)
    print(keys.format_table(result))
    if conv is not None:  # the same method on the windows as captured, and the ratio perturbed / as captured
        plain = keys.run(args.skeleton, args.method, every=args.every, data=args.data, root=args.data_root,
                         wrist=args.wrist, partial=args.partial, method=method)
        result["unperturbed"] = {"every": {n: {m: v[m] for m in ("L2Q", "L2P")} for n, v in plain["every"].items()}}
        result["ratio_to_unperturbed"] = keys.ratios(result, plain)
        print(keys.format_table(plain, title=f"keys every n frames: {args.method} on the windows as captured"))
        print(keys.format_table({**result, "every": result["ratio_to_unperturbed"]},
                                title=f"ratio: {args.method} in other rig conventions ({conv.twist_deg:g} deg twists, "
                                      f"knees {conv.hinge_deg:g} deg) / as captured"))
    if base_method is not None:
        baseline = keys.run(args.skeleton, args.baseline, every=args.every, data=args.data, root=args.data_root,
                            conventions=conv, wrist=args.wrist, partial=args.partial, method=base_method)
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


def _bench_model(args: argparse.Namespace) -> int:
    """``anyfill bench speed|sampling|pose|probe|shot``: the trained any-order motion model's benchmarks."""
    import json
    from pathlib import Path

    if args.bench == "speed" and args.against:
        from training.bench import interleaved

        speed_args = ["--models", *args.models, "--threads", str(args.threads), "--repeats", str(args.repeats),
                      "--runtime", args.runtime]
        result = interleaved.run(args.against, args.rounds, speed_args)
        text = interleaved.format_table(result)
    elif args.bench == "speed":
        from training.bench import speed

        result = speed.run(dict(zip(("body", "hand"), args.models, strict=False)), threads=args.threads,
                           repeats=args.repeats, runtime=args.runtime)
        text = speed.format_table(result)
    elif args.bench == "sampling":
        from training.bench import sampling

        result = sampling.run_sampling(args.model, args.skeleton, gap=args.gap, windows=args.windows, n=args.n,
                                       ks=tuple(args.k), temperature=args.temperature, seed=args.seed,
                                       split=args.split, refresh=args.refresh, orders=tuple(args.orders),
                                       progress=lambda row: print(row, flush=True))
        text = sampling.format_sampling(result)
    elif args.bench == "calibrate-sampling":
        from training.bench import calibrate_sampling

        result = calibrate_sampling.calibrate(args.model, windows=args.windows, sweep_windows=args.sweep_windows,
                                              progress=lambda row: print(row, flush=True))
        text = calibrate_sampling.format_result(result)
        if args.write:
            text += f"\nwrote the sampling calibration into {calibrate_sampling.write(args.model, result)}"
    elif args.bench == "shot":
        from training.bench import shot

        result = shot.run(args.shots, every=args.every, threads=args.threads, repeats=args.repeats,
                          root=args.data_root, sequential=not args.no_window_by_window)
        text = shot.format_table(result)
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
    sp.add_argument("--runtime", choices=("torch", "numpy"), default="torch",
                    help="the model in torch (the server's) or in the numpy runtime (anyfill fill's)")
    sp.add_argument("--against", metavar="DIR",
                    help="also run another source tree of anyfill (a checkout or a `git archive` of another commit): "
                         "interleaved rounds of fresh processes, the other tree then this code, with each round's "
                         "ratio (this machine's speed drifts too much for numbers measured apart)")
    sp.add_argument("--rounds", type=int, default=4, help="with --against: interleaved rounds (default 4)")
    sm = bench_sub.add_parser("sampling", help="the thesis experiment: any-order sampling by order and k")
    sm.add_argument("--model", default="hand", help="checkpoint path or shipped name")
    sm.add_argument("--skeleton", choices=("body", "hand"), default="hand")
    sm.add_argument("--gap", type=int, default=15)
    sm.add_argument("--windows", type=int, default=12)
    sm.add_argument("--n", type=int, default=8, help="variations per window")
    sm.add_argument("--k", type=int, nargs="+", default=[1, 8, 64], help="cells per step")
    sm.add_argument("--temperature", type=float, default=1.0,
                    help="a multiple of the model's calibrated spread (1: its default, 0: the deterministic fill)")
    sm.add_argument("--orders", nargs="+", default=["forward", "random", "lowest-entropy", "highest-entropy"],
                    choices=("forward", "random", "lowest-entropy", "highest-entropy"), metavar="ORDER")
    sm.add_argument("--split", choices=("test", "val"), default="test",
                    help="the test split or the training split's validation takes")
    sm.add_argument("--refresh", type=int, default=None,
                    help="cells drawn between two encodings of the known cells (default: a frame's joints)")
    cs = bench_sub.add_parser("calibrate-sampling", help="fit the sampler's spreads and default temperature on "
                              "validation windows (--write: into the model's card)")
    cs.add_argument("--model", default="hand", help="checkpoint path or shipped name")
    cs.add_argument("--windows", type=int, default=48, help="validation windows per gap for the spreads")
    cs.add_argument("--sweep-windows", type=int, default=8, help="validation windows for the temperature sweep")
    cs.add_argument("--write", action="store_true", help="store the result in the model card's `sampling`")
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
    sh = bench_sub.add_parser("shot", help="whole shots: fill compute and `anyfill fill` end to end on long real takes")
    sh.add_argument("--shots", nargs="+", choices=("body", "hand"), default=["body", "hand"])
    sh.add_argument("--every", type=int, default=10, help="frames between keys")
    sh.add_argument("--threads", type=int, default=2)
    sh.add_argument("--repeats", type=int, default=5)
    sh.add_argument("--no-window-by-window", action="store_true",
                    help="skip the window-by-window fill (timing and error) the pieces are compared with")
    sh.add_argument("--data-root", metavar="DIR", help="folder holding splits.json (default ../shared/data)")
    for p in (sp, sm, cs, po, pb, sh):
        p.add_argument("--json", metavar="OUT", help="also write the result as JSON")
        p.set_defaults(func=_bench_model)


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


def add_parsers(bench_sub: argparse._SubParsersAction) -> None:
    """Add the product's benchmarks to ``anyfill bench``."""
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
    kb.add_argument("--wrist", choices=("keyed", "known"), default="keyed",
                    help="hand: keyed (default) keys the wrist with the fingers and scores the whole hand; known gives "
                         "every method the wrist on every frame (a full rig's arm), keys the fingers and scores them "
                         "in the wrist's frame (wrist-relative L2Q, fingertip L2P and distance)")
    kb.add_argument("--partial", type=int, metavar="K",
                    help="hand: key only the first K fingers (thumb, index, middle, ring, pinky), the others never "
                         "(interp and bezier hold those in the rest pose); scored in the wrist's frame")
    kb.set_defaults(func=_bench_keys)
    _add_bench_model(bench_sub)
    rig = bench_sub.add_parser(
        "rig", help="the extension on real rigs in headless Blender against Blender's Bezier curves",
        description="Score the real extension on real rigs (built with 'anyfill build-addon' first, then run in "
        "headless Blender) against Blender's own Bezier curves of the same keys.")
    rig.add_argument("clips", nargs="*", help=f"BVH files, here or under the data folder (default: "
                     f"{', '.join(DEFAULT_CLIPS)})")
    rig.add_argument("--every", type=int, nargs="+", default=[5, 10, 20], help="keep a key every n frames")
    rig.add_argument("--model", action="append", default=None, help="models to serve (default: hand, body)")
    rig.add_argument("--json", type=Path, default=None, help="write the rows as JSON here")
    rig.add_argument("--via", type=Path, default=None, metavar="MIXAMO.bvh|rigify",
                     help="put each clip (of the training skeleton) on this Mixamo rig first, as a capture would move "
                     "it, keyed on every frame (rig invariance: compare with the clip on its own skeleton); 'rigify': "
                     "on a generated Rigify rig's controls (Human metarig), scored on its DEF bones")
    rig.add_argument("--legs", choices=("fk", "ik"), default="fk",
                     help="with --via rigify: key the legs through their IK controls (Rigify's own snap), in IK")
    rig.add_argument("--hands", type=Path, default=None, metavar="TAKE_DIR_OR_BVH",
                     help="put the finger motion of this ManipNet take (a folder of hand BVHs, or one) on the Mixamo "
                     "rig's fingers with Blender's constraints, baked, from the stretch where its fingers move most")
    # its func is set by anyfill.cli, which builds the extension first (training never imports anyfill)
    ad = bench_sub.add_parser(
        "addon", help="the extension's own read and write time in headless Blender on a long shot, and its "
        "editable curves", description="Time Blender's side of Fill (reading the rig, writing the keys; the "
        "server's answer is given, not timed) on a long Mixamo shot with a key on every frame and with editable "
        "curves, and measure the editable curves' key count and deviation with Blender's own fcurve.evaluate.")
    ad.add_argument("--clip", help=f"a BVH file (default {DEFAULT_ADDON_CLIP} under the data folder)")
    ad.add_argument("--frames", type=int, default=1291, help="the shot's length: the clip played forward and back")
    ad.add_argument("--every", type=int, default=10, help="keep a key every n frames")
    ad.add_argument("--repeats", type=int, default=5)
    ad.add_argument("--part", default="body", help="the part of the rig to fill (body, hand.L, hand.R)")
    ad.add_argument("--rotation-tolerance", type=float, default=1.0, metavar="DEG")
    ad.add_argument("--location-tolerance", type=float, default=1.0, metavar="CM")
    ad.add_argument("--unit-scale", type=float, default=0.01,
                    help="the scene's Unit Scale: the clip's units in metres (Mixamo BVH: centimetres, 0.01)")
    ad.add_argument("--model", action="append", default=None, help="models to serve (default: hand, body)")
    ad.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                    help="another version of the extension's modules (a folder with its __init__.py, e.g. "
                    "'git archive COMMIT addon | tar -x -C /tmp/old' gives /tmp/old/addon), timed in the same "
                    "process interleaved with this one, its keys compared with this one's")
    ad.add_argument("--json", type=Path, default=None, help="write the result as JSON here")
