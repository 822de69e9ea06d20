"""``anyfill fill INPUT.bvh -o OUTPUT.bvh --keys FRAMES [--joints NAMES] [--model ...] [--sample N ...]``:
the fill engine without a server, for people without Blender.

The given frames (every joint) and the given joints (every frame) are kept as keys; every other cell is
filled, deterministically or, with ``--sample N``, as N any-order variations written to
``OUTPUT-1.bvh`` ... ``OUTPUT-N.bvh``. The output keeps the input file's hierarchy and channel layout.
Frames are numbered from 0 (the first frame of the file's MOTION table).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from backend.registry import LoadedModel, load_one
from training.inbetween import fill as engine
from training.motion import bvh as bvh_io
from training.motion import clip as clip_io
from training.motion.skeleton import SCHEMAS


def parse_frames(spec: str, n_frames: int) -> list[int]:
    """``"0,10,20-25,last"`` -> sorted unique frame indices (0-based, ranges inclusive)."""
    out: set[int] = set()
    for part in spec.replace(" ", "").split(","):
        if not part:
            continue
        try:
            if part in ("last", "end"):
                out.add(n_frames - 1)
            elif "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = int(a), (n_frames - 1 if b in ("last", "end") else int(b))
                if hi < lo:
                    raise ValueError(f"--keys: range {part!r} runs backwards")
                out.update(range(lo, hi + 1))
            else:
                out.add(int(part))
        except ValueError as e:
            if "--keys" in str(e):
                raise
            raise ValueError(f"--keys: {part!r} is not a frame number or range (e.g. 0,10,20-25,last)") from None
    bad = sorted(f for f in out if not 0 <= f < n_frames)
    if bad:
        raise ValueError(f"--keys: frame(s) {', '.join(map(str, bad))} outside 0..{n_frames - 1} of the file")
    if not out:
        raise ValueError("--keys: no frames given")
    return sorted(out)


def _clip_and_model(data: bvh_io.BVH, path: Path, model: str | None) -> tuple[clip_io.Clip, LoadedModel]:
    if model is not None:
        lm = load_one(model)
        return clip_io.from_bvh(data, lm.schema, name=str(path)), lm
    for name in SCHEMAS:
        try:
            c = clip_io.from_bvh(data, name, name=str(path))
        except clip_io.SchemaMismatch:
            continue
        return c, load_one(name)
    raise ValueError(f"{path}: neither a hand nor a body skeleton (joint names differ); "
                     "see `anyfill serve`'s /v1/models for the expected joints")


def fill_file(input_path: str | Path, output: str | Path, keys: str, joints: str | None = None,
              model: str | None = None, sample: int = 0, order: str = "lowest-entropy", k: int = 1,
              temperature: float = 1.0, seed: int = 0) -> list[Path]:
    """Fill a BVH file (see the module docstring); returns the files written."""
    input_path, output = Path(input_path), Path(output)
    data = bvh_io.read(input_path)
    clip, lm = _clip_and_model(data, input_path, model)
    t, j = clip.n_frames, clip.schema.n_joints
    known = np.zeros((1, t, j), dtype=bool)
    known[0, parse_frames(keys, t)] = True
    for name in (joints or "").replace(" ", "").split(","):
        if name:
            known[0, :, clip.schema.index(name)] = True
    if known.all():
        raise ValueError("every cell is a key: nothing to fill")
    times = (np.arange(t) / clip.fps)[None]
    rot, trans = clip.rotations[None], clip.translations[None]
    t0 = time.perf_counter()
    if sample:
        if t > lm.length:
            raise ValueError(f"--sample works on windows of at most {lm.length} frames (the model's window); "
                             f"{input_path} has {t}: cut it first, or fill it without --sample")
        results = engine.sample(lm.model, rot, trans, known, times, order=order, k=k, temperature=temperature,
                                seed=seed, n=sample)
        outs = [output.with_name(f"{output.stem}-{i + 1}{output.suffix or '.bvh'}") for i in range(sample)]
    else:
        r = engine.fill(lm.model, rot, trans, known, times)
        results = [engine.FillResult(r.rotations[0], r.translations[0], r.entropy[0], r.spread_deg[0])]
        outs = [output]
    elapsed = time.perf_counter() - t0
    for res, out in zip(results, outs, strict=True):
        filled = replace(clip, rotations=res.rotations, translations=res.translations)
        out.parent.mkdir(parents=True, exist_ok=True)
        bvh_io.write(clip_io.to_bvh(filled, data), out)
    spread = np.concatenate([r.spread_deg[~known[0]] for r in results])
    print(f"{input_path.name}: {t} frames, {int(known.any(-1).sum())} key frames, {int((~known).sum())} cells "
          f"filled with model {lm.name} ({lm.model.cfg.variant}) in {elapsed:.2f} s; mean uncertainty "
          f"{spread.mean():.1f} deg")
    for out in outs:
        print(f"wrote {out}")
    return outs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="anyfill fill", description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("input", metavar="INPUT.bvh")
    p.add_argument("-o", "--output", required=True, metavar="OUTPUT.bvh")
    p.add_argument("--keys", required=True, metavar="FRAMES", help="key frames to keep, 0-based: e.g. 0,10,20-25,last")
    p.add_argument("--joints", metavar="NAMES", help="comma-separated joints kept on every frame")
    p.add_argument("--model", metavar="NAME_OR_PATH", help="shipped model name or .safetensors path "
                   "(default: the shipped model of the file's skeleton)")
    p.add_argument("--sample", type=int, default=0, metavar="N", help="write N sampled variations instead")
    p.add_argument("--order", choices=engine.ORDERS, default="lowest-entropy",
                   help="sampling order (default: most certain cells first)")
    p.add_argument("--k", type=int, default=1, help="cells (or frames) per sampling step")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.sample < 0 or args.k < 1:
        print("anyfill fill: error: --sample must be >= 0 and --k >= 1", file=sys.stderr)
        return 2
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    fill_file(args.input, args.output, args.keys, args.joints, args.model, args.sample, args.order, args.k,
              args.temperature, args.seed)
    return 0
