"""``anyfill bench`` and ``anyfill sample`` commands of the documents' models: STCFormer-report prediction,
the CS764 LiftModel sweep, the any-order pixel model, the video loader. Only argparse here: each command
imports its module when it runs."""

from __future__ import annotations

import argparse
import os

# the CS764 report's four tables: swept setting -> (its name in the report, its values)
TABLES: dict[str, tuple[str, tuple[float, ...]]] = {
    "dropout": ("dropout", (0.0, 0.5, 0.9999)),
    "lr": ("learning rate", (0.001, 0.1, 1.0)),
    "hidden": ("hidden size", (256, 512, 1024)),
    "blocks": ("residual blocks", (1, 2, 3)),
}
# the pixel model's sampling orders
PIXEL_ORDERS = ("raster", "random", "lowest-entropy", "highest-entropy")


def check_prediction_args(args: argparse.Namespace) -> None:
    """The options of ``anyfill bench prediction``, refused before the test split is read (ValueError naming the
    option and its valid values), as ``bench inbetween`` refuses its own: a bad one would fail with NumPy's words
    after the data is loaded, or (``--repeats 0``) silently do something else than asked."""
    from training.motion.files import check_output
    from training.train import TRAINING_RUN_HINT, run_paths

    for option, low, meaning in (("stride", 1, " (frames between test windows)"), ("repeats", 1, " (timed runs)"),
                                 ("threads", 0, " (0: torch's default)")):
        v = getattr(args, option)
        if not isinstance(v, int) or v < low:
            raise ValueError(f"--{option} must be a whole number >= {low}{meaning}, got {v}")
    if args.data_root is not None and not os.path.isdir(args.data_root):
        raise ValueError(f"--data-root {args.data_root}: no such folder")
    runs = [("--methods", m, "zero or ") for m in args.methods if m != "zero"]
    for option, run, other in [*runs, *(("--attention", r, "") for r in args.attention or [])]:
        try:
            run_paths(run)
        except FileNotFoundError:
            raise ValueError(f"{option} {run}: not {other}{TRAINING_RUN_HINT}") from None
    if args.json:
        try:
            check_output(args.json)
        except ValueError as e:
            raise ValueError(f"--json: {e}") from None


def _bench_prediction(args: argparse.Namespace) -> int:
    check_prediction_args(args)
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


def _run(module: str, function: str = "main"):
    """A command's function: imports ``module`` when the command runs."""

    def run(args: argparse.Namespace) -> int:
        import importlib

        return getattr(importlib.import_module(module), function)(args)

    return run


def add_bench_parsers(bench_sub: argparse._SubParsersAction) -> None:
    """Add the documents' benchmarks to ``anyfill bench``."""
    _add_bench_prediction(bench_sub)
    lift = bench_sub.add_parser(
        "lift", help="LiftModel sweep: the CS764 report's four tables",
        description="Train and score the LiftModel settings of the CS764 report's four tables (dropout, "
        "learning rate, hidden size, residual blocks). Settings: the lift task's defaults, then --named, then "
        "key=value overrides (trainer.key=value for the training loop), then the swept value.")
    lift.add_argument("overrides", nargs="*", metavar="key=value")
    lift.add_argument("--named", default="quick", help="named config of the lift task for every run (default quick)")
    lift.add_argument("--runs-dir", default="runs/lift-sweep", help="one run folder per setting in here")
    lift.add_argument("--tables", nargs="+", choices=list(TABLES), default=list(TABLES), metavar="TABLE",
                      help=f"which tables, by swept setting ({', '.join(TABLES)}); default all")
    lift.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    lift.set_defaults(func=_run("training.documents.lift.bench"))

    px = bench_sub.add_parser("pixels", help="any-order pixel model: test NLL and samples per order",
                              description="Test NLL per order, and samples per order, of a trained pixel model.")
    _add_pixel_run(px)
    px.add_argument("--images", type=int, default=8, help="test digits scored under every order (default 8)")
    px.add_argument("--samples", type=int, default=64, help="digits sampled per order (default 64; 0: NLL only)")
    px.add_argument("--per-step", type=int, default=8, help="cells per step when sampling (default 8)")
    px.add_argument("--orders", default=",".join(PIXEL_ORDERS),
                    help=f"comma-separated orders to score (default all: {','.join(PIXEL_ORDERS)})")
    px.add_argument("--query-unknown", action="store_true",
                    help="fixed orders query every unknown cell per step, as the entropy orders do (same queries)")
    px.add_argument("--out-dir", default="bench-results/pixels", help="where the PNG grids go")
    px.add_argument("--seed", type=int, default=0)
    px.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    px.add_argument("--json", metavar="OUT", help="also write the result as JSON")
    px.set_defaults(func=_run("training.documents.pixels.bench", "bench_main"))

    vl = bench_sub.add_parser("video-loader", help="video loader vs perceiver-ae training throughput (samples/s)",
                              description="Video loader and perceiver-ae training throughput (samples/s).")
    vl.add_argument("--data", nargs="+", default=["mnist", "sticks"], help="mnist, sticks or a video folder")
    vl.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    vl.add_argument("--batches", type=int, default=20)
    vl.add_argument("--steps", type=int, default=10, help="training steps timed")
    vl.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    vl.add_argument("--json", default="bench-results/video_loader.json", metavar="OUT")
    vl.add_argument("overrides", nargs="*", metavar="key=value", help="perceiver-ae settings, e.g. batch_size=8")
    vl.set_defaults(func=_run("training.documents.perceiver.bench"))


def _add_pixel_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default="runs/pixels", help="run folder of 'anyfill train pixels' (default runs/pixels)")
    p.add_argument("--checkpoint", help="a checkpoint file (default RUN/checkpoints/last.ckpt)")


def add_sample_parsers(sample_sub: argparse._SubParsersAction) -> None:
    """Add the documents' samplers to ``anyfill sample``."""
    sp = sample_sub.add_parser("pixels", help="4-colour digits in one order, as a PNG grid",
                               description="Sample 4-colour digits in one order.")
    _add_pixel_run(sp)
    sp.add_argument("--order", choices=PIXEL_ORDERS, default="random")
    sp.add_argument("--n", type=int, default=64, help="how many digits")
    sp.add_argument("-o", "--out", default="grid.png", help="PNG file to write")
    sp.add_argument("--complete", action="store_true", help="complete the top halves of the first N test digits")
    sp.add_argument("--per-step", type=int, default=1, help="cells per step (1: the thesis's exact procedure)")
    sp.add_argument("--temperature", type=float, default=1.0)
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    sp.set_defaults(func=_run("training.documents.pixels.bench", "sample_main"))
