"""``anyfill bench speed``: how long a fill takes, the way an animator waits for it.

Median of repeated runs on the CPU with a fixed number of threads (2 by default, this machine; torch's and NumPy's
BLAS's), the model in torch (the server's) or in the numpy runtime (``--runtime numpy``, ``anyfill fill``'s):
deterministic fill of one 65-frame window (body and hand), and any-order sampling with k = 1 of a
30-frame, 17-joint hand gap (510 cells, one model call per cell). Real test windows are used.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial

import numpy as np
import torch

from training.bench.inbetween import N_CONTEXT, WINDOW, load_protocol_clips
from training.bench.timing import repeat
from training.inbetween.checkpoint import load_model, load_numpy_model
from training.inbetween.fill import fill
from training.inbetween.sampling import sample
from training.motion.splits import split_files
from training.motion.windows import cut


def _median_ms(fn: Callable[[], object], repeats: int, warmup: int = 2) -> tuple[float, list[float]]:
    runs, _ = repeat(fn, repeats, warmup)
    times = [s * 1000.0 for s in runs]
    return statistics.median(times), times


def _test_window(skeleton: str, root=None):
    from training.motion.skeleton import get_schema

    schema = get_schema(skeleton)
    w = cut(load_protocol_clips(split_files(skeleton, "test", root)[:1], schema), WINDOW, 40)
    return w.rotations[:1], w.translations[:1], w.fps


def run(models: dict[str, str], threads: int = 2, repeats: int = 20, sample_repeats: int = 3, root=None,
        runtime: str = "torch") -> dict:
    """Time the models (skeleton -> checkpoint path or shipped name) in a runtime (torch or numpy)."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(threads)
    load = {"torch": load_model, "numpy": load_numpy_model}[runtime]
    result: dict = {"threads": threads, "repeats": repeats, "runtime": runtime, "fill_ms": {}, "sample_s": {}}
    for skeleton, name in models.items():
        model, _ = load(name)
        rot, trans, fps = _test_window(skeleton, root)
        t = rot.shape[1]
        times = (np.arange(t) / fps)[None]
        known = np.zeros(rot.shape[:3], dtype=bool)
        known[:, :N_CONTEXT] = True
        known[:, N_CONTEXT + 30] = True
        known[:, N_CONTEXT + 31 :] = True
        med, all_ms = _median_ms(partial(fill, model, rot, trans, known, times), repeats)
        result["fill_ms"][skeleton] = {"median": med, "min": min(all_ms), "max": max(all_ms), "frames": t,
                                       "variant": model.cfg.variant}
        if skeleton == "hand":
            t_gap = N_CONTEXT + 31  # 10 context frames, 30 gap frames, 1 target frame
            kn = known[0, :t_gap]
            job = partial(sample, model, rot[0, :t_gap], trans[0, :t_gap], kn, times[0, :t_gap], order="forward",
                          k=1, seed=0, n=1)
            med_s, all_s = _median_ms(job, sample_repeats, warmup=0)
            result["sample_s"][skeleton] = {"median": med_s / 1000.0, "runs": [x / 1000.0 for x in all_s],
                                            "cells": int((~kn).sum()), "k": 1, "variant": model.cfg.variant}
    return result


def format_table(result: dict) -> str:
    lines = [f"speed ({result['threads']} CPU threads, {result.get('runtime', 'torch')} runtime, median of "
             f"{result['repeats']} runs)"]
    for sk, r in result["fill_ms"].items():
        lines.append(f"  fill {sk:<5} {r['frames']}-frame window ({r['variant']}): {r['median']:.1f} ms "
                     f"(min {r['min']:.1f}, max {r['max']:.1f})")
    for sk, r in result["sample_s"].items():
        lines.append(f"  sample {sk} k={r['k']}, {r['cells']} cells ({r['variant']}): {r['median']:.2f} s")
    return "\n".join(lines)
