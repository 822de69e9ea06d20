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
    from training.documents.perceiver.task import TASK, PerceiverModule, make_data
    from training.train import resolve_configs

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


def main(args: argparse.Namespace) -> int:
    """``anyfill bench video-loader`` (its arguments: :mod:`training.documents.commands`)."""
    torch.set_num_threads(args.threads)

    from training.documents.perceiver.task import TASK, make_data
    from training.train import resolve_configs

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
