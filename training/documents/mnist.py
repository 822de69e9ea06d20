"""MNIST for the any-order pixel model: the idx files, the fixed split, 4-colour k-means quantisation and
PNG grids of digits.

Only the official MNIST test set (10,000 digits) lies in ``../shared/data/mnist``; its first 9,000
images are the training split and its last 1,000 the test split. Pixels are quantised to 4 colours by
1-D k-means learned on the training pixels (a model over 4 categorical values, as in the thesis); colour
index 0 is the darkest centre (the background) and 3 the brightest.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np

from training.motion.splits import data_root

N_TRAIN = 9000
IMAGES_FILE = "t10k-images-idx3-ubyte.gz"
LABELS_FILE = "t10k-labels-idx1-ubyte.gz"


def read_idx(path: str | Path) -> np.ndarray:
    """An idx file (optionally gzipped) as a uint8 array of its declared shape."""
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte idx file")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: {data.size} values for shape {shape}")
    return data.reshape(shape)


@lru_cache(maxsize=2)
def _load(root: Path) -> tuple[np.ndarray, np.ndarray]:
    folder = root / "mnist"
    return read_idx(folder / IMAGES_FILE), read_idx(folder / LABELS_FILE)


def load(split: str, root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) of the 'train' (first 9,000) or 'test' (last 1,000) split."""
    images, labels = _load(data_root(root))
    if split == "train":
        return images[:N_TRAIN], labels[:N_TRAIN]
    if split == "test":
        return images[N_TRAIN:], labels[N_TRAIN:]
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def kmeans_1d(values: np.ndarray, k: int = 4, iters: int = 100) -> np.ndarray:
    """Sorted k-means centres (k,) of 8-bit values, by Lloyd's algorithm on their 256-bin histogram (exact,
    deterministic: the centres start evenly spaced over 0..255)."""
    counts = np.bincount(np.asarray(values, dtype=np.uint8).ravel(), minlength=256).astype(np.float64)
    levels = np.arange(256, dtype=np.float64)
    centres = np.linspace(0.0, 255.0, k)
    for _ in range(iters):
        assign = np.abs(levels[:, None] - centres[None]).argmin(axis=1)
        mass = np.bincount(assign, weights=counts, minlength=k)
        total = np.bincount(assign, weights=counts * levels, minlength=k)
        new = np.where(mass > 0, total / np.maximum(mass, 1e-12), centres)
        if np.allclose(new, centres):
            break
        centres = new
    return np.sort(centres)


def quantise(images: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Colour indices (uint8) of the nearest centre of each pixel."""
    return np.abs(images[..., None].astype(np.float64) - centres).argmin(axis=-1).astype(np.uint8)


def dequantise(indices: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Pixel intensities (uint8) of colour indices."""
    return np.round(centres[indices]).clip(0, 255).astype(np.uint8)


def grid(images: np.ndarray, cols: int | None = None, pad: int = 2, scale: int = 1,
         background: int = 128) -> np.ndarray:
    """Images (N, H, W) uint8 tiled into one (rows, cols) image with ``pad`` pixels between tiles."""
    n, h, w = images.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad), background, dtype=np.uint8)
    for i, img in enumerate(images):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    return np.kron(out, np.ones((scale, scale), dtype=np.uint8)) if scale > 1 else out


def write_png(path: str | Path, image: np.ndarray) -> None:
    """An 8-bit greyscale PNG of a (H, W) uint8 array (standard library only)."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    h, w = image.shape
    raw = b"".join(b"\x00" + image[r].tobytes() for r in range(h))  # filter type 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(png)
