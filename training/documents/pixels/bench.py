"""``anyfill sample pixels`` and ``anyfill bench pixels``: samples and likelihoods of the any-order pixel model.

``sample`` writes a PNG grid of digits generated in one order (or completions of the test digits' top
halves). ``bench`` scores the test digits' negative log-likelihood per pixel under each of the four
orders with one cell per step (the exact procedure; a consistent model gives the same value for every
order), and draws samples in each order, reporting their brightness (mean colour index), background
fraction and digit classes next to the test digits': the thesis's claim is that lowest-entropy-first
favours sparse digits (1s) and highest-entropy-first 8s and 9s. Classes come from a small CNN trained
on the 4-colour training digits (:func:`digit_classifier`; its test accuracy is reported with them).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.bench.inbetween import write_json
from training.checks import MAX_THREADS
from training.documents import mnist
from training.documents.pixels import sampling as ps


def _images(colours: torch.Tensor, centres: np.ndarray, side: int) -> np.ndarray:
    return mnist.dequantise(colours.cpu().numpy().reshape(-1, side, side).astype(np.intp), centres)


def _test_colours(cfg: Any, centres: np.ndarray, n: int) -> torch.Tensor:
    test, _ = mnist.load("test", cfg.data_root)
    return torch.from_numpy(mnist.quantise(test[:n], centres).reshape(min(n, len(test)), -1)).long()


def top_half(n: int, side: int) -> torch.Tensor:
    known = torch.zeros(n, side * side, dtype=torch.bool)
    known[:, : side * side // 2] = True
    return known


def sample_grid(model: Any, centres: np.ndarray, cfg: Any, order: str, n: int, out: str | Path, *,
                complete: bool = False, per_step: int = 1, temperature: float = 1.0, seed: int = 0) -> dict[str, Any]:
    """Sample ``n`` digits (or complete the top halves of the first ``n`` test digits) and write a grid."""
    side = model.cfg.side
    t0 = time.perf_counter()
    if complete:
        image = _test_colours(cfg, centres, n)
        r = ps.run_order(model, order, image=image, known=top_half(len(image), side), per_step=per_step,
                         temperature=temperature, seed=seed)
    else:
        r = ps.run_order(model, order, n, per_step=per_step, temperature=temperature, seed=seed)
    mnist.write_png(out, mnist.grid(_images(r.colours, centres, side), scale=2))
    return {"order": order, "n": len(r.colours), "png": str(out), "seconds": time.perf_counter() - t0,
            **ps.summary(r.colours.cpu().numpy()), "colours": r.colours.cpu()}


def digit_classifier(cfg: Any, centres: np.ndarray, seed: int = 0, epochs: int = 3) -> tuple[torch.nn.Module, float]:
    """A small CNN that reads 4-colour digits (B, 784) -> 10 class logits, trained on the training digits
    (the same 8,500 the pixel model saw, their MNIST labels), and its accuracy on the 1,000 test digits."""
    from torch import nn

    from training.documents.pixels.task import quantised_splits

    torch.manual_seed(seed)
    _, sets = quantised_splits(cfg)
    _, labels = mnist.load("train", cfg.data_root)
    x = torch.from_numpy(sets["train"]).float()
    y = torch.from_numpy(labels[: len(x)].astype(np.int64))
    net = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(128):
            loss = torch.nn.functional.cross_entropy(net(x[idx] / 3.0), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    _, test_labels = mnist.load("test", cfg.data_root)
    with torch.no_grad():
        pred = net(torch.from_numpy(sets["test"]).float() / 3.0).argmax(-1).numpy()
    return net, float((pred == test_labels).mean())


def class_shares(net: torch.nn.Module, colours: torch.Tensor) -> list[float]:
    """Share of each digit class 0..9 among 4-colour images (B, 784), as the classifier reads them."""
    with torch.no_grad():
        pred = net(colours.float().cpu() / 3.0).argmax(-1)
    return (torch.bincount(pred, minlength=10).float() / len(pred)).tolist()


def _load(run: str, checkpoint: str | None, threads: int):
    from training.documents.pixels.task import load_run

    if threads > 0:
        torch.set_num_threads(threads)
    return load_run(run, checkpoint)


# limits of the command-line arguments, checked before anything is loaded
MAX_IMAGES = 1024  # digits sampled (or test digits scored) per order: one PNG grid, memory for every order
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds
TEMPERATURE_RANGE = (1e-6, 1e6)  # below, logits / temperature overflow float32; above, colours are uniform


def _check_int(option: str, value: int, low: int, high: int, what: str = "") -> None:
    if not low <= value <= high:
        raise ValueError(f"{option} must be an integer from {low} to {high}{what}, got {value}")


def _check_common(args: argparse.Namespace) -> None:
    # --per-step has no upper limit: a step fills at most the cells still unknown
    if args.per_step < 1:
        raise ValueError(f"--per-step must be an integer >= 1 (cells filled per step), got {args.per_step}")
    _check_int("--seed", args.seed, 0, MAX_SEED)
    _check_int("--threads", args.threads, 0, MAX_THREADS, " (0: torch's default)")


def check_sample_args(args: argparse.Namespace) -> None:
    """``anyfill sample pixels``'s arguments, or a ValueError naming the option and its valid range."""
    _check_int("--n", args.n, 1, MAX_IMAGES)
    low, high = TEMPERATURE_RANGE
    if not (math.isfinite(args.temperature) and low <= args.temperature <= high):
        raise ValueError(f"--temperature must be a finite number from {low:g} to {high:g}, got {args.temperature}")
    _check_common(args)
    if Path(args.out).is_dir():
        raise ValueError(f"-o/--out: {args.out} is a folder; give the PNG file to write")


def check_bench_args(args: argparse.Namespace) -> None:
    """``anyfill bench pixels``'s arguments, or a ValueError naming the option and its valid range."""
    _check_int("--images", args.images, 1, MAX_IMAGES)
    _check_int("--samples", args.samples, 0, MAX_IMAGES, " (0: NLL only)")
    _check_common(args)
    if Path(args.out_dir).exists() and not Path(args.out_dir).is_dir():
        raise ValueError(f"--out-dir: {args.out_dir} is a file, not a folder")
    if args.json and Path(args.json).is_dir():
        raise ValueError(f"--json: {args.json} is a folder; give the JSON file to write")


def sample_main(args: argparse.Namespace) -> int:
    """``anyfill sample pixels`` (its arguments: :mod:`training.documents.commands`)."""
    check_sample_args(args)
    model, centres, cfg = _load(args.run, args.checkpoint, args.threads)
    res = sample_grid(model, centres, cfg, args.order, args.n, args.out, complete=args.complete,
                      per_step=args.per_step, temperature=args.temperature, seed=args.seed)
    res.pop("colours")
    print(f"wrote {res['png']}: {res['n']} digits, {args.order} order, brightness {res['brightness']:.3f}, "
          f"background {res['background']:.3f}, {res['seconds']:.1f} s")
    return 0


def _check_orders(orders: Sequence[str]) -> None:
    if not orders:
        raise ValueError(f"no order given; expected some of {', '.join(ps.ORDERS)}")
    unknown = [o for o in orders if o not in ps.ORDERS]
    if unknown:
        raise ValueError(f"unknown order(s) {', '.join(unknown)}; expected some of {', '.join(ps.ORDERS)}")


def bench(run: str, checkpoint: str | None = None, images: int = 8, samples: int = 64, per_step: int = 8,
          out_dir: str | Path = "bench-results/pixels", seed: int = 0, threads: int = 0,
          orders: Sequence[str] = ps.ORDERS, query_unknown: bool = False) -> dict[str, Any]:
    """Test NLL per order (exact, one cell per step, on the first ``images`` test digits) and sample
    grids and statistics per order (``per_step`` cells per step; none when ``samples`` is 0).
    ``query_unknown``: the fixed orders query every unknown cell at every step, as the entropy orders do."""
    _check_orders(orders)
    if per_step < 1 or images < 1 or samples < 0:  # before loading and scoring, not deep in the sampler
        raise ValueError(f"need per_step >= 1, images >= 1 and samples >= 0, got {per_step}, {images}, {samples}")
    model, centres, cfg = _load(run, checkpoint, threads)
    out_dir = Path(out_dir)
    test = _test_colours(cfg, centres, images)
    result: dict[str, Any] = {"run": str(run), "variant": model.cfg.variant, "test_images": len(test),
                              "independent": model.cfg.independent, "query_unknown": query_unknown,
                              "sample_per_step": per_step, "test_stats": ps.summary(_test_colours(cfg, centres,
                                                                                                  1000).numpy()),
                              "nll": {}, "samples": {}}
    for order in orders:
        t0 = time.perf_counter()
        r = ps.run_order(model, order, image=test, score=True, seed=seed, query_unknown=query_unknown)
        nats = float(r.nll.mean()) / model.n_cells
        result["nll"][order] = {"nats_per_pixel": nats, "bits_per_pixel": nats / math.log(2),
                                "seconds": time.perf_counter() - t0}
        print(f"pixels {model.cfg.variant}: {order} NLL {nats:.4f} nats/pixel", file=sys.stderr, flush=True)
        if samples > 0:
            png = out_dir / f"{model.cfg.variant}-{order}.png"
            result["samples"][order] = sample_grid(model, centres, cfg, order, samples, png, per_step=per_step,
                                                   seed=seed)
            print(f"pixels {model.cfg.variant}: {order} samples -> {png}", file=sys.stderr, flush=True)
    if samples > 0:
        png = out_dir / f"{model.cfg.variant}-complete-random.png"
        result["completion"] = sample_grid(model, centres, cfg, "random", 16, png, complete=True, per_step=per_step,
                                           seed=seed)
    if samples > 0:  # the thesis's claim is about digit classes: read every sample's class
        net, acc = digit_classifier(cfg, centres, seed)
        result["classifier_test_accuracy"] = acc
        result["test_classes"] = class_shares(net, _test_colours(cfg, centres, 1000))
        for res in result["samples"].values():
            res["classes"] = class_shares(net, res["colours"])
    for res in [*result["samples"].values(), result.get("completion", {})]:
        res.pop("colours", None)
    nll = [v["nats_per_pixel"] for v in result["nll"].values()]
    result["nll_spread_nats_per_pixel"] = max(nll) - min(nll)
    return result


def format_table(result: dict[str, Any]) -> str:
    t = result["test_stats"]
    lines = [f"| {result['variant']}: order | test NLL (nats/pixel) | test NLL (bits/pixel) | sample brightness "
             "| sample background |", "| --- | --- | --- | --- | --- |"]
    for order, n in result["nll"].items():
        s = result["samples"].get(order)
        stats = f"{s['brightness']:.3f} | {s['background']:.3f}" if s else "not sampled | not sampled"
        lines.append(f"| {order} | {n['nats_per_pixel']:.4f} | {n['bits_per_pixel']:.4f} | {stats} |")
    lines.append(f"| test digits | | | {t['brightness']:.3f} | {t['background']:.3f} |")
    if "test_classes" in result:
        lines += ["", "| classes (share) | " + " | ".join(str(c) for c in range(10)) + " |",
                  "| --- |" + " --- |" * 10]
        for order, s in [*result["samples"].items(), ("test digits", {"classes": result["test_classes"]})]:
            lines.append(f"| {order} | " + " | ".join(f"{v:.2f}" for v in s["classes"]) + " |")
        lines.append(f"(digit classifier: {result['classifier_test_accuracy']:.3f} accuracy on the test digits)")
    lines.append(f"\nNLL spread across orders: {result['nll_spread_nats_per_pixel']:.4f} nats/pixel "
                 f"({result['test_images']} test digits); samples: {result['sample_per_step']} cells per step")
    return "\n".join(lines)


def bench_main(args: argparse.Namespace) -> int:
    """``anyfill bench pixels`` (its arguments: :mod:`training.documents.commands`)."""
    orders = [o.strip() for o in args.orders.split(",") if o.strip()]
    try:
        _check_orders(orders)
    except ValueError as e:
        raise ValueError(f"--orders: {e}") from None
    check_bench_args(args)
    result = bench(args.run, args.checkpoint, args.images, args.samples, args.per_step, args.out_dir, args.seed,
                   args.threads, orders, args.query_unknown)
    print(format_table(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
