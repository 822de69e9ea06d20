"""Video data for the two video models: moving MNIST, Bandai stick figures, and folders of video files.

No public video corpus can be downloaded here, so both synthetic sets are built from real data that is:

- **moving MNIST**: real digits of ``../shared/data/mnist`` (its fixed train/test split) bouncing in a
  square frame. Every sample is generated from its index and a seed, so a dataset is fully reproducible
  and costs no disk; generation is vectorised numpy (a few hundred microseconds a clip).
- **stick figures**: the real Bandai body capture (the fixed train/test split of ``splits.json``)
  rendered as greyscale front-view stick figures, labelled by the content class of each file
  (``dataset-*/<file>.json`` ``{"content": id}``, names in ``dataset-*-cfg/content_label.txt``).
- **a video folder** (the HMDB51 layout: ``ROOT/<class>/*.mp4|*.avi``), decoded with PyAV (the ``av``
  package in the ``training`` extra; imported only when such a folder is read).

Every dataset yields ``(video, label)`` with ``video`` a float32 tensor (C, T, H, W) in [0, 1] and
``label`` an int (0 for moving MNIST, whose labels are not used). ``size`` is the frame's height and
width, ``(h, w)``, or one int for a square. Frames are resized by area averaging or nearest sampling, in
numpy, so no image library is needed.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from training.documents import mnist
from training.motion.splits import data_root, split_files

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")


def frame_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of a frame size given as one int (a square) or as height, width."""
    if isinstance(size, int):
        return size, size
    hw = tuple(int(v) for v in size)
    if len(hw) == 1:
        return hw[0], hw[0]
    if len(hw) != 2:
        raise ValueError(f"a frame size is 'height,width' or one number, got {size!r}")
    return hw


# --------------------------------------------------------------------------------------------------
# moving MNIST


class MovingMNIST(Dataset):
    """``n`` clips of ``digits`` real MNIST digits moving at constant speed and bouncing off the walls of
    a frame of ``size`` (one int or height, width).

    Sample ``i`` depends only on ``(seed, split, i)``, so two workers or two runs see the same clip.
    """

    def __init__(self, split: str = "train", n: int = 10000, frames: int = 16, size: int | Sequence[int] = 64,
                 digits: int = 2, seed: int = 0, root: str | Path | None = None) -> None:
        self.hw = frame_hw(size)
        if min(self.hw) < 28:
            raise ValueError(f"moving MNIST needs frames of at least 28 x 28 (a digit's size), got {size}")
        self.images, _ = mnist.load(split, root)
        self.split, self.n, self.frames, self.digits, self.seed = split, n, frames, digits, seed

    def __len__(self) -> int:
        return self.n

    def clip(self, i: int) -> np.ndarray:
        """Clip ``i`` as uint8 (T, height, width)."""
        rng = np.random.default_rng([self.seed, 0 if self.split == "train" else 1, i])
        lim = np.array(self.hw, dtype=np.float64) - 28
        out = np.zeros((self.frames, *self.hw), np.uint8)
        for _ in range(self.digits):
            img = self.images[rng.integers(len(self.images))]
            pos = rng.uniform(0, lim, 2)
            angle = rng.uniform(0, 2 * np.pi)
            vel = np.array([np.sin(angle), np.cos(angle)]) * rng.uniform(1.0, 3.0)
            for t in range(self.frames):
                y, x = np.round(pos).astype(int)
                np.maximum(out[t, y : y + 28, x : x + 28], img, out=out[t, y : y + 28, x : x + 28])
                pos = pos + vel
                for d in range(2):  # bounce: reflect position and velocity at the walls
                    if pos[d] < 0 or pos[d] > lim[d]:
                        pos[d] = -pos[d] if pos[d] < 0 else 2 * lim[d] - pos[d]
                        vel[d] = -vel[d]
                pos = np.clip(pos, 0, lim)
        return out

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.clip(i)).float().div_(255.0).unsqueeze(0), 0


# --------------------------------------------------------------------------------------------------
# Bandai stick figures


def content_labels(root: Path) -> tuple[dict[Path, str], list[str]]:
    """Content class name of every Bandai .bvh file (``dataset-1_walk``, ...) and the sorted class names."""
    names: dict[Path, str] = {}
    for cfg in sorted((root / "bandai").glob("dataset-*-cfg")):
        labels = cfg.joinpath("content_label.txt").read_text().split()
        for meta in sorted((root / "bandai" / cfg.name[: -len("-cfg")]).glob("*.json")):
            names[meta.with_suffix(".bvh").resolve()] = labels[json.loads(meta.read_text())["content"]]
    return names, sorted(set(names.values()))


@lru_cache(maxsize=4)
def _stick_positions(split: str, root: Path, max_files: int) -> tuple[list[np.ndarray], list[str], list[str], tuple]:
    """Global joint positions (T, J, 3) of every file of a split, its class name, all class names, parents."""
    from training.motion import clip as clip_io

    labels, classes = content_labels(root)
    files = split_files("body", split, root)
    if max_files > 0:  # spread over the list so that a small subset still covers many classes
        files = [files[i] for i in np.linspace(0, len(files) - 1, min(max_files, len(files))).astype(int)]
    pos, names, parents = [], [], ()
    for f in files:
        c = clip_io.load(f, "body")
        pos.append(c.fk()[1].astype(np.float32))
        names.append(labels[Path(f).resolve()])
        parents = tuple(c.schema.parents)
    return pos, names, classes, parents


def render_sticks(positions: np.ndarray, parents: tuple, size: int | Sequence[int],
                  thickness: float = 1.0) -> np.ndarray:
    """Front-view (x right, y up) greyscale renderings uint8 (T, height, width) of joint positions (T, J, 3).

    The figure is centred on its root's mean position and scaled by a fixed body height from the clip,
    so motion through the frame (walking sideways) stays visible while the camera is fixed per clip.
    """
    h, w = frame_hw(size)
    if h != w:  # drawn on a square of the longer side, then centre-cropped
        sq = render_sticks(positions, parents, max(h, w), thickness)
        y0, x0 = (sq.shape[1] - h) // 2, (sq.shape[2] - w) // 2
        return sq[:, y0 : y0 + h, x0 : x0 + w]
    size = h
    xy = positions[..., :2].astype(np.float64)
    centre = xy[:, 0].mean(axis=0)
    extent = max(np.ptp(xy[..., 1]), 0.5 * np.ptp(xy[..., 0]), 1e-6)  # body height, unless it travels far
    pix = (xy - centre) / (extent * 1.1) * size + size / 2.0
    pix[..., 1] = size - pix[..., 1]  # image rows grow downwards
    bones = [(j, p) for j, p in enumerate(parents) if p >= 0]
    s = np.linspace(0.0, 1.0, 2 * size // 4 + 2)
    a = pix[:, [j for j, _ in bones]]  # (T, B, 2)
    b = pix[:, [p for _, p in bones]]
    pts = a[:, :, None] + (b - a)[:, :, None] * s[None, None, :, None]  # (T, B, S, 2)
    t_idx = np.broadcast_to(np.arange(len(pix))[:, None, None], pts.shape[:-1])
    out = np.zeros((len(pix), size, size), np.uint8)
    r = int(np.ceil(thickness)) - 1
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            xs = np.round(pts[..., 0]).astype(int) + dx
            ys = np.round(pts[..., 1]).astype(int) + dy
            ok = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
            out[t_idx[ok], ys[ok], xs[ok]] = 255
    return out


class StickFigures(Dataset):
    """Windows of ``frames`` frames (every ``stride``-th capture frame) of rendered Bandai stick figures.

    Windows start every ``hop`` frames in each file; ``label`` indexes :attr:`classes` (the content
    classes of both Bandai datasets, e.g. ``dataset-1_walk``).
    """

    def __init__(self, split: str = "train", frames: int = 16, size: int | Sequence[int] = 64, stride: int = 2,
                 hop: int = 16,
                 max_files: int = 0, root: str | Path | None = None, thickness: float = 1.0) -> None:
        self.positions, self.names, self.classes, self.parents = _stick_positions(split, data_root(root), max_files)
        self.frames, self.size, self.stride, self.thickness = frames, size, stride, thickness
        span = (frames - 1) * stride + 1
        self.index = [(f, s) for f, p in enumerate(self.positions) for s in range(0, len(p) - span + 1, hop)]
        self.labels = [self.classes.index(self.names[f]) for f, _ in self.index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        f, s = self.index[i]
        window = self.positions[f][s : s + (self.frames - 1) * self.stride + 1 : self.stride]
        video = render_sticks(window, self.parents, self.size, self.thickness)
        return torch.from_numpy(video).float().div_(255.0).unsqueeze(0), self.labels[i]


# --------------------------------------------------------------------------------------------------
# folders of video files (HMDB51 layout)


def resize_frames(frames: np.ndarray, size: int | Sequence[int]) -> np.ndarray:
    """(T, H, W[, C]) uint8 frames centre-cropped to the aspect of ``size`` (one int: a square; or height,
    width) and resized to it (area mean when shrinking by one integer factor, nearest otherwise)."""
    oh, ow = frame_hw(size)
    h, w = frames.shape[1:3]
    k = min(h / oh, w / ow)  # the crop is k times the output size
    ch, cw = min(h, round(oh * k)), min(w, round(ow * k))
    frames = frames[:, (h - ch) // 2 : (h - ch) // 2 + ch, (w - cw) // 2 : (w - cw) // 2 + cw]
    if ch % oh == 0 and cw % ow == 0 and ch // oh == cw // ow:
        f = ch // oh
        shape = (frames.shape[0], oh, f, ow, f, *frames.shape[3:])
        return frames.reshape(shape).mean(axis=(2, 4)).round().astype(np.uint8)
    iy = (np.arange(oh) * ch / oh + ch / (2 * oh)).astype(int)
    ix = (np.arange(ow) * cw / ow + cw / (2 * ow)).astype(int)
    return frames[:, iy][:, :, ix]


def read_video(path: str | Path, grey: bool = True) -> np.ndarray:
    """Every frame of a video file as uint8 (T, H, W) (grey) or (T, H, W, 3), decoded with PyAV."""
    import av

    fmt = "gray" if grey else "rgb24"
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format=fmt) for f in container.decode(video=0)]
    if not frames:
        raise ValueError(f"{path}: no video frames")
    return np.stack(frames)


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10) -> None:
    """Write uint8 (T, H, W) grey frames to a video file (codec by suffix: .avi mpeg4, else h264 or mpeg4)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        codec = "mpeg4"
        if path.suffix == ".mp4" and "libx264" in av.codecs_available:
            codec = "libx264"
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for img in frames:
            rgb = np.repeat(img[..., None], 3, axis=-1) if img.ndim == 2 else img
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class VideoFolder(Dataset):
    """``ROOT/<class>/*.mp4|*.avi`` (the HMDB51 layout): one sample per file, ``frames`` frames taken
    every ``stride``-th from the clip's middle (files that are too short repeat their last frame).

    Files are decoded on access (in the loader's workers), so a large folder costs no memory up front.
    """

    def __init__(self, root: str | Path, frames: int = 16, size: int | Sequence[int] = 64, stride: int = 1,
                 grey: bool = True) -> None:
        root = Path(root)
        self.classes = sorted(d.name for d in root.iterdir() if d.is_dir())
        self.files = [(f, c) for c, name in enumerate(self.classes)
                      for f in sorted((root / name).iterdir()) if f.suffix.lower() in VIDEO_SUFFIXES]
        if not self.files:
            raise ValueError(f"{root}: no video files ({', '.join(VIDEO_SUFFIXES)}) in class folders")
        self.labels = [c for _, c in self.files]
        self.frames, self.size, self.stride, self.grey = frames, size, stride, grey

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.files[i]
        video = read_video(path, self.grey)
        span = (self.frames - 1) * self.stride + 1
        start = max(0, (len(video) - span) // 2)
        idx = np.minimum(np.arange(start, start + span, self.stride), len(video) - 1)
        video = resize_frames(video[idx], self.size)
        x = torch.from_numpy(video).float().div_(255.0)
        x = x.unsqueeze(0) if self.grey else x.permute(3, 0, 1, 2)
        return x.contiguous(), label


# --------------------------------------------------------------------------------------------------


@dataclass
class VideoSpec:
    """Which video data a task reads: ``source`` is ``mnist``, ``sticks`` or a folder of class folders."""

    source: str = "mnist"
    frames: int = 16
    size: int | tuple[int, int] = 64  # one int (square) or (height, width)
    n_train: int = 10000  # moving MNIST only: clips per epoch
    n_val: int = 256  # moving MNIST only: validation clips
    stride: int = 2  # sticks / folders: take every stride-th frame
    max_files: int = 0  # sticks: > 0 limits files per split (quick runs, tests)
    seed: int = 0
    root: str | None = None  # the shared data folder (default: ../shared/data or $ANYFILL_DATA)


def class_by_class(ds: Dataset, n: int) -> list[int]:
    """Indices of ``n`` clips of ``ds`` taken class by class in turn (the first clip of each class, then the
    second, ...), in the set's order: the first ``n`` clips of stick figures are the windows of one file, one
    class, and an overfit check on them is passed by a constant answer. Sets without labels: the first ``n``."""
    labels = getattr(ds, "labels", None)
    if labels is None and isinstance(ds, torch.utils.data.Subset):
        inner = getattr(ds.dataset, "labels", None)
        labels = None if inner is None else [inner[i] for i in ds.indices]
    if labels is None:
        return list(range(min(n, len(ds))))
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    turns = [i for group in itertools.zip_longest(*by_class.values()) for i in group if i is not None]
    return sorted(turns[:n])


def make_datasets(spec: VideoSpec) -> tuple[Dataset, Dataset, list[str]]:
    """Train and validation datasets and the class names of a :class:`VideoSpec`.

    Validation: the test split for moving MNIST and sticks; every 5th file for a video folder (which
    has no fixed split)."""
    if spec.source == "mnist":
        mk = lambda split, n: MovingMNIST(split, n, spec.frames, spec.size, seed=spec.seed, root=spec.root)  # noqa: E731
        return mk("train", spec.n_train), mk("test", spec.n_val), ["moving-mnist"]
    if spec.source == "sticks":
        mk = lambda split: StickFigures(split, spec.frames, spec.size, spec.stride, max_files=spec.max_files,  # noqa: E731
                                        root=spec.root)
        train, val = mk("train"), mk("test")
        return train, val, train.classes
    full = VideoFolder(spec.source, spec.frames, spec.size, spec.stride)
    val_idx = [i for i in range(len(full)) if i % 5 == 4]
    train_idx = [i for i in range(len(full)) if i % 5 != 4] or val_idx
    return torch.utils.data.Subset(full, train_idx), torch.utils.data.Subset(full, val_idx or train_idx), full.classes
