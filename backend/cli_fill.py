"""``anyfill fill INPUT.bvh -o OUTPUT.bvh --keys FRAMES [--joints NAMES] [--frames A-B] [--model ...]
[--sample N ...]``: the fill engine without a server, for people without Blender.

The given frames (every joint) and the given joints (every frame) are kept as keys; every other cell is
filled, deterministically or, with ``--sample N``, as N any-order variations written to
``OUTPUT-1.bvh`` ... ``OUTPUT-N.bvh``. The output keeps the input file's hierarchy and channel layout.
Frames are numbered from 0 (the first frame of the file's MOTION table); ``--frames A-B`` fills only
that part and copies the rest of the file unchanged.

The outputs are checked before any work (not a directory, a folder that can be written) and written
all or nothing: a failure leaves no output of this run and no temporary file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from backend import options
from backend.commands import SAMPLING_DEFAULTS
from backend.registry import LoadedModel, load_one
from training.inbetween import fill as engine
from training.inbetween import sampling
from training.motion import bvh as bvh_io
from training.motion import clip as clip_io
from training.motion.files import mode_for
from training.motion.skeleton import SCHEMAS, get_schema

_NUMBER = re.compile(r"[0-9]+")  # a frame number as written: digits only (int() would also take 1_0, +3, ٣)


def _items(spec: str, what: str, example: str) -> list[str]:
    """The comma-separated items of an option's value, spaces ignored; refused: no item at all, an empty one
    (``0,,3``, ``0,``: a frame or a name left out by mistake) and one given twice (``0,0``, ``Hips,Hips``: likely a
    typo for another), each naming the option and what is valid."""
    items = spec.replace(" ", "").split(",")
    if items == [""]:
        raise ValueError(f"{what}: nothing given; e.g. {what} {example}")
    if "" in items:
        raise ValueError(f"{what}: {spec!r} has an empty item (two commas in a row, or one at an end); e.g. "
                         f"{what} {example}")
    twice = next((x for i, x in enumerate(items) if x in items[:i]), None)
    if twice is not None:
        raise ValueError(f"{what}: {twice!r} is given twice in {spec!r}; give each once")
    return items


def _frame_number(tok: str, end: int, n_frames: int, what: str) -> int:
    """One frame of a frame list: digits, or ``last`` / ``end`` (frame ``end``); a negative one is named as such."""
    if tok in ("last", "end"):
        return end
    if _NUMBER.fullmatch(tok):
        return int(tok)
    if tok.startswith("-") and _NUMBER.fullmatch(tok[1:]):
        raise ValueError(f"{what}: frame {tok} is negative: frames are numbered from 0 (0..{n_frames - 1})")
    raise ValueError  # the caller names the whole item


def parse_frames(spec: str, n_frames: int, what: str = "--keys", last: int | None = None) -> list[int]:
    """``"0,10,20-25,last"`` -> sorted unique frame indices (0-based, ranges inclusive). ``A:B:STEP`` is
    every STEP-th frame from A to B (``0:last:10``: 0, 10, 20, ...; ``A:B`` every frame). ``last``
    (or ``end``) is frame ``last`` (default ``n_frames - 1``); frames must lie in ``0..n_frames - 1``. Items may
    overlap (``0:last:10,last``), but none may be empty or given twice (:func:`_items`)."""
    out: set[int] = set()
    end = n_frames - 1 if last is None else last

    def number(tok: str) -> int:
        return _frame_number(tok, end, n_frames, what)

    for part in _items(spec, what, "0,10,20-25,last or 0:last:10"):
        try:
            if ":" in part:
                bits = part.split(":")
                if len(bits) not in (2, 3):
                    raise ValueError
                lo, hi = number(bits[0]), number(bits[1])
                step = 1 if len(bits) == 2 else int(bits[2]) if _NUMBER.fullmatch(bits[2]) else 0
                if step < 1:
                    raise ValueError(f"{what}: {part!r}: the step must be at least 1 (a whole number)")
                if hi < lo:
                    raise ValueError(f"{what}: {part!r} runs backwards")
                _within(part, lo, hi, n_frames, what)
                out.update(range(lo, hi + 1, step))
            elif "-" in part[1:]:
                a, b = part.split("-", 1)
                lo, hi = number(a), number(b)
                if hi < lo:
                    raise ValueError(f"{what}: range {part!r} runs backwards")
                _within(part, lo, hi, n_frames, what)
                out.update(range(lo, hi + 1))
            else:
                out.add(number(part))
        except ValueError as e:
            if what in str(e):
                raise
            raise ValueError(f"{what}: {part!r} is not a frame number, range or step (e.g. 0,10,20-25,last or "
                             "0:last:10)") from None
    bad = sorted(f for f in out if not 0 <= f < n_frames)
    if bad:
        raise ValueError(f"{what}: frame(s) {', '.join(map(str, bad))} outside 0..{n_frames - 1} of the file")
    return sorted(out)


def _within(part: str, lo: int, hi: int, n_frames: int, what: str) -> None:
    """A range's ends within the file, checked before the range is expanded (``0-99999999999`` would fill memory)."""
    if lo < 0 or hi >= n_frames:
        raise ValueError(f"{what}: {part!r} reaches outside 0..{n_frames - 1} of the file")


def parse_part(spec: str, n_frames: int) -> tuple[int, int]:
    """``--frames A-B`` (also ``A-last``, ``A:B``): the first and last frame of the part to fill."""
    lo_hi = spec.replace(" ", "").replace(":", "-", 1).split("-")
    try:
        if len(lo_hi) != 2:
            raise ValueError
        lo, hi = (_frame_number(x, n_frames - 1, n_frames, "--frames") for x in lo_hi)
    except ValueError:
        raise ValueError(f"--frames: {spec!r} is not a range of frames such as 100-164 (frames from 0, `last` for "
                         f"the last, {n_frames - 1})") from None
    if not 0 <= lo < hi < n_frames:
        raise ValueError(f"--frames: {spec!r} must be a range of at least 2 frames within 0..{n_frames - 1}")
    return lo, hi


def output_paths(output: str | Path, sample: int) -> list[Path]:
    output = Path(output)
    if not sample:
        return [output]
    return [output.with_name(f"{output.stem}-{i + 1}{output.suffix or '.bvh'}") for i in range(sample)]


def check_outputs(outs: list[Path], source: Path | None = None) -> None:
    """Refuse, before any work, outputs that cannot be written: a directory, a path under a file, a folder
    that cannot be written (tried with a temporary file, removed at once); and the input file ``source`` itself
    (the fill would replace the keys it was made from)."""
    for out in outs:
        if source is not None and (out.resolve() == source.resolve()
                                   or (out.exists() and source.exists() and os.path.samefile(out, source))):
            raise ValueError(f"-o {out}: is the input file; the fill would replace the motion it was made from: "
                             f"write to another file")
        if out.is_dir():
            raise ValueError(f"-o {out}: is a directory; name a file, e.g. {out / 'filled.bvh'}")
        if out.exists() and not out.resolve().is_file():
            raise ValueError(f"-o {out}: is not a regular file (a device, a FIFO or a socket): the fill is written "
                             "to a file, which would replace it; name a file")
        folder = out.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise ValueError(f"-o {out}: {folder} is not a directory")
        try:
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".anyfill-probe-")
        except OSError as e:
            raise ValueError(f"-o {out}: cannot write in {folder} ({e.strerror or e})") from None
        os.close(fd)
        os.unlink(probe)


def write_all(files: list[tuple[bvh_io.BVH, Path]]) -> None:
    """Write every file or none: each goes to a new temporary file beside it (a name no other file has, so an
    input called ``OUTPUT.bvh.tmp`` is never overwritten) and is renamed once all are written; on a failure the
    temporary files (and any output already renamed) are removed. An output that is a symbolic link is written
    through it (the link stays)."""
    staged: list[tuple[Path, Path]] = []
    done: list[Path] = []
    current = files[0][1] if files else None
    try:
        for data, current in files:
            current = current.resolve() if current.is_symlink() else current
            current.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(dir=current.parent, prefix=f".{current.name}.", suffix=".tmp")
            staged.append((Path(name), current))
            os.fchmod(fd, mode_for(current))  # mkstemp's is 0600: only its owner could read the fill
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(bvh_io.dumps(data))
        for tmp, current in staged:
            tmp.replace(current)
            done.append(current)
    except OSError as e:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        for out in done:
            out.unlink(missing_ok=True)
        raise ValueError(f"cannot write {current}: {e.strerror or e}; no output was written") from None


def _clip_and_model(data: bvh_io.BVH, path: Path, model: str | None) -> tuple[clip_io.Clip, LoadedModel]:
    """The clip in the model's skeleton and the model, in the numpy runtime where it can run (no torch to import:
    most of a fresh process's start)."""
    if model is not None:
        lm = load_one(model, numpy=True)
        return clip_io.from_bvh(data, lm.schema, name=str(path)), lm
    errors = {}
    for name in SCHEMAS:
        try:
            c = clip_io.from_bvh(data, name, name=str(path))
        except clip_io.SchemaMismatch as e:
            errors[name] = e
            continue
        return c, load_one(name, numpy=True)
    nearest = min(SCHEMAS, key=lambda n: sum(j not in data.names for j in get_schema(n).joints))
    nearest_says = str(errors[nearest]).removeprefix(f"{path}: ")
    raise ValueError(f"{path}: neither a hand nor a body skeleton (the nearest: {nearest_says}); see `anyfill "
                     "serve`'s /v1/models for the expected joints")


def _check_values(data: bvh_io.BVH, path: Path) -> None:
    """Refuse a frame table with a value no motion has (1e39 in a position channel overflowed the fill into
    SciPy's "zero norm quaternions"), naming the first such value's frame, joint and channel."""
    big = np.abs(data.motion) > engine.MAX_VALUE
    if big.any():
        frame, col = (int(x[0]) for x in np.nonzero(big))
        joint, channel = next((data.names[j], c) for j, idx in enumerate(data.channel_index())
                              for c, i in idx.items() if i == col)
        raise ValueError(f"{path}: frame {frame}, {joint} {channel} = {data.motion[frame, col]:g}: beyond "
                         f"+-{engine.MAX_VALUE:g}, not a motion")


def _joint_indices(names: str | None, schema) -> list[int]:
    """The joints ``--joints`` keeps on every frame (none when it is not given); an unknown name is named with the
    skeleton's joints, and an empty list or item (``--joints ""``, ``Hips,,Spine``) is refused, not read as none."""
    if names is None:
        return []
    out = []
    for name in _items(names, "--joints", f"{schema.joints[1]},{schema.joints[2]}"):
        if name not in schema.joints:
            raise ValueError(f"--joints: unknown joint {name!r} for the {schema.name} skeleton; joints are "
                             f"{', '.join(schema.joints)}")
        out.append(schema.joints.index(name))
    return out


def _check_rate(fps: float, lm: LoadedModel, path: Path) -> None:
    lo, hi = lm.fps_range
    if not lo * 0.99 <= fps <= hi * 1.01:
        trained = f"{lo:g} fps" if lo == hi else f"{lo:g} to {hi:g} fps"
        print(f"anyfill fill: note: {path.name} runs at {fps:g} fps, outside the rates model {lm.name} was "
              f"trained at ({trained}): it is filled at the nearest of those rates and carried back to its "
              "frames", file=sys.stderr)


class Progress:
    """What a long fill shows while it runs, on stderr: a bar on a terminal (rich), else a plain line at most
    every ``every`` seconds and at the end. A context manager; call it with ``(done, total)``."""

    def __init__(self, what: str, unit: str, stream=None, every: float = 1.0):
        self.what, self.unit, self.every = what, unit, every
        self.stream = sys.stderr if stream is None else stream
        self._bar = self._task = None
        self._last = -1e9
        self._done = -1

    def __enter__(self) -> Progress:
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            self._bar = Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn(self.unit), TimeElapsedColumn(), console=Console(file=self.stream),
                            transient=True)
            self._bar.start()
            self._task = self._bar.add_task(self.what, total=None)
        return self

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=total)
            return
        now = time.perf_counter()
        if done != self._done and (done >= total or now - self._last >= self.every):
            print(f"anyfill fill: {self.what}: {done}/{total} {self.unit} ({100 * done / max(total, 1):.0f}%)",
                  file=self.stream, flush=True)
            self._last, self._done = now, done

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()


def fill_file(input_path: str | Path, output: str | Path, keys: str, joints: str | None = None,
              model: str | None = None, sample: int = 0, order: str = "lowest-entropy", k: int = 1,
              temperature: float = 1.0, seed: int = 0, frames: str | None = None,
              progress: bool | None = None) -> list[Path]:
    """Fill a BVH file (see the module docstring); returns the files written. ``progress``: show it on stderr
    (default: for fills longer than the model's window and for sampling)."""
    input_path = Path(input_path)
    outs = output_paths(output, sample)
    data = bvh_io.read(input_path)  # first: an input that cannot be read is named as such
    check_outputs(outs, input_path)
    if data.n_frames == 0:
        raise ValueError(f"{input_path}: the BVH has no frames (Frames: 0): nothing to fill")
    _check_values(data, input_path)
    whole, lm = _clip_and_model(data, input_path, model)
    lo, hi = parse_part(frames, whole.n_frames) if frames is not None else (0, whole.n_frames - 1)
    clip = whole.frames(slice(lo, hi + 1))
    t, j = clip.n_frames, clip.schema.n_joints
    known = np.zeros((1, t, j), dtype=bool)
    # file numbering; with --frames, `last` is the part's last frame and keys outside the part do not count
    key_frames = [f for f in parse_frames(keys, whole.n_frames, last=hi) if lo <= f <= hi]
    if not key_frames:
        raise ValueError(f"--keys: no key frame within --frames {lo}-{hi}")
    known[0, [f - lo for f in key_frames]] = True
    known[0, :, _joint_indices(joints, clip.schema)] = True
    if known.all():
        raise ValueError("every cell is a key: nothing to fill")
    _check_rate(clip.fps, lm, input_path)
    times = (np.arange(t) / clip.fps)[None]
    rot, trans = clip.rotations[None], clip.translations[None]
    show = (bool(sample) or t > lm.length) if progress is None else progress
    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        report = stack.enter_context(Progress(*(("sampling", "steps") if sample else ("filling", "frames")))) \
            if show else None
        if sample:
            results = sampling.sample_at_rate(lm.model, rot, trans, known, times, lm.fps_range, order=order, k=k,
                                            temperature=temperature, seed=seed, n=sample, progress=report)
        else:
            r = engine.fill_at_rate(lm.model, rot, trans, known, times, lm.fps_range, progress=report)
            results = [engine.FillResult(r.rotations[0], r.translations[0], r.entropy[0], r.spread_deg[0])]
    elapsed = time.perf_counter() - t0
    files = []
    kept = np.ones((whole.n_frames, j), dtype=bool)  # written as read: the keys and the frames outside the part
    kept[lo : hi + 1] = known[0]
    for res, out in zip(results, outs, strict=True):
        rotations, translations = whole.rotations.copy(), whole.translations.copy()
        rotations[lo : hi + 1], translations[lo : hi + 1] = res.rotations, res.translations
        files.append((clip_io.to_bvh(replace(whole, rotations=rotations, translations=translations), data, kept),
                      out))
    write_all(files)
    spread = np.concatenate([r.spread_deg[~known[0]] for r in results])
    print(f"{input_path.name}: {t} frames{f' ({lo}-{hi})' if frames is not None else ''}, {len(key_frames)} key "
          f"frames, {int((~known).sum())} cells filled with model {lm.name} ({lm.model.cfg.variant}) in "
          f"{elapsed:.2f} s; mean uncertainty {spread.mean():.1f} deg")
    for out in outs:
        print(f"wrote {out}")
    return outs


def main(args: argparse.Namespace) -> int:
    """``anyfill fill`` (its arguments: :mod:`backend.commands`)."""
    problem = options.first(
        None if args.order in sampling.ORDERS else
        f"--order must be one of {', '.join(sampling.ORDERS)}, got {args.order!r}",
        options.whole("--sample", args.sample, 0, meaning=" (0: a fill; N: N variations)"),
        None if args.sample <= sampling.MAX_VARIATIONS else
        f"--sample: at most {sampling.MAX_VARIATIONS} variations at once, got {args.sample}",
        options.whole("--k", args.k, 1, sampling.MAX_K, " (cells, or a triples model's frames, drawn per step; a "
                      "step draws at most the cells of a model's window)"),
        None if 0.0 <= args.temperature <= sampling.MAX_TEMPERATURE else
        f"--temperature must be within 0..{sampling.MAX_TEMPERATURE:g}, got {args.temperature:g}",
        None if 0 <= args.seed < 2**32 else f"--seed must be within 0..{2**32 - 1}, got {args.seed}",
        options.threads(args.threads, "the libraries' defaults"),
    )
    if problem:
        print(f"anyfill fill: error: {problem}", file=sys.stderr)
        return 2
    unused = [f"--{name}" for name, default in SAMPLING_DEFAULTS.items() if getattr(args, name) != default]
    if unused and not args.sample:
        verb = "applies" if len(unused) == 1 else "apply"
        print(f"anyfill fill: note: {', '.join(unused)} only {verb} to --sample N (a fill is deterministic): ignored",
              file=sys.stderr)
    if args.threads:
        from threadpoolctl import threadpool_limits

        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # torch's threads, read when a fill imports it
        threadpool_limits(args.threads)  # NumPy's BLAS (the numpy runtime's matmuls), loaded already
    fill_file(args.input, args.output, args.keys, args.joints, args.model, args.sample, args.order, args.k,
              args.temperature, args.seed, args.frames, args.progress)
    return 0
