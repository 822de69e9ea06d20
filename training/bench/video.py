"""``anyfill bench video-loader``: is the video loader the bottleneck of perceiver-ae training?

Measures samples per second of (1) the data loader alone (iterating batches, no model), with 0 and N
worker processes, and (2) training steps of the Perceiver autoencoder fed from an in-memory batch (no
loader). If (1) is well above (2), the loader can keep the model busy; the update's main pain was an
input pipeline slower than its model. Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader


def loader_rate(ds: torch.utils.data.Dataset, batch_size: int, workers: int, prefetch: int, batches: int) -> float:
    """Samples per second of a DataLoader alone, after one warm-up batch (worker start-up excluded)."""
    dl = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers,
                    prefetch_factor=prefetch if workers > 0 else None, drop_last=True)
    it = iter(dl)
    next(it)
    t = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += len(next(it)[0])
    return n / (time.perf_counter() - t)


def train_rate(overrides: Sequence[str], steps: int) -> tuple[float, int]:
    """Samples per second of perceiver-ae training steps (forward, backward, AdamW) on a fixed batch."""
    from ..tasks.perceiver import TASK, PerceiverModule, make_data
    from ..train import resolve_configs

    cfg, _ = resolve_configs(TASK, None, None, list(overrides))
    module = PerceiverModule(cfg)
    opt = module.configure_optimizers()
    train, _ = make_data(cfg)
    batch = torch.stack([train[i][0] for i in range(cfg.batch_size)])

    def step() -> None:
        opt.zero_grad()
        module.run(batch, train=True)[0].backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * cfg.batch_size / (time.perf_counter() - t), cfg.batch_size


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="anyfill bench video-loader", description=__doc__.splitlines()[0])
    p.add_argument("--data", nargs="+", default=["mnist", "sticks"], help="mnist, sticks or a video folder")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1])
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--steps", type=int, default=10, help="training steps timed")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared CPU)")
    p.add_argument("--json", default="bench-results/video_loader.json", metavar="OUT")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="perceiver-ae settings, e.g. batch_size=8")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from ..tasks.perceiver import TASK, make_data
    from ..train import resolve_configs

    rows = []
    for data in args.data:
        ov = [*args.overrides, f"data={data}"]
        cfg, _ = resolve_configs(TASK, None, None, ov)
        train, _ = make_data(cfg)
        for w in args.workers:
            rate = loader_rate(train, cfg.batch_size, w, cfg.num_prefetch, args.batches)
            rows.append({"data": data, "what": f"loader, {w} workers", "samples_per_s": rate})
            print(f"{data:>8}  loader {w} workers: {rate:8.1f} samples/s", flush=True)
        rate, bs = train_rate(ov, args.steps)
        rows.append({"data": data, "what": f"train step, batch {bs}", "samples_per_s": rate})
        print(f"{data:>8}  training steps:   {rate:8.1f} samples/s (batch {bs}, {args.threads} thread(s))", flush=True)
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "overrides": args.overrides, "rows": rows}, indent=2) + "\n")
    print(f"-> {out}")
    return 0


# the classifier's three ablation tables: title -> rows; a row lists named configs with identical settings
# (the 8-block cross-attention model with one self-attention layer is a row of all three tables), and the
# first of them that has a finished run fills the row, so that model is trained once
_REF = ("attn-depth-1", "cnn-blocks-8", "head-cross")
ABLATIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "attention depth (self-attention layers after 4 queries' cross-attention; 8 CNN blocks)":
        (("attn-depth-0",), _REF, ("attn-depth-2",), ("attn-depth-4",)),
    "CNN depth (blocks kept; cross-attention head with 1 self-attention layer)":
        (("cnn-blocks-8", *_REF), ("cnn-blocks-7",), ("cnn-blocks-6",), ("cnn-blocks-4",)),
    "cross- versus self-attention (8 CNN blocks)":
        (("head-cross", *_REF), ("head-self",), ("head-pool", "baseline")),
}


def ablation_tables(runs_root: str | Path) -> str:
    """Markdown tables of ``video-classifier`` runs in ``RUNS_ROOT/<named config>/results.json``."""
    out = []
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for title, rows in ABLATIONS.items():
        out += [f"**{title}**", "", "| config | train loss | val loss | val acc | CNN params | attention params |",
                "|---|---|---|---|---|---|"]
        for names in rows:
            found = [f for f in (Path(runs_root) / n / "results.json" for n in names) if f.is_file()]
            if not found:
                out.append(f"| {names[0]} | not run | | | | |")
                continue
            r = json.loads(found[0].read_text())
            out.append(f"| {names[0]} | {fmt(r['train_loss'])} | {fmt(r['val_loss'])} | {fmt(r['val_acc'])} | "
                       f"{r['params']['cnn']:,} | {r['params']['attention']:,} |")
        out.append("")
    return "\n".join(out)
