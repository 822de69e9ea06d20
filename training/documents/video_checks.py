"""Checks shared by the two video models' settings (``data`` and the frame size), without torch: each model's
``check_settings`` uses them, and ``--print-config`` imports no more than that."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from training.checks import is_whole

SOURCES = ("mnist", "sticks")  # the generated data sets; anything else names a folder of class folders
MNIST_SIDE = 28  # a moving MNIST frame holds a whole digit (video_data.MovingMNIST refuses smaller ones)


def frame_sides(cfg: Any, name: str) -> tuple[int, int]:
    """(height, width) of ``cfg.name``: one whole number >= 1 (a square) or two (height, width)."""
    v = getattr(cfg, name)
    sides = [v] if is_whole(v) else list(v) if isinstance(v, (list, tuple)) else []
    if len(sides) not in (1, 2) or not all(is_whole(s) and s >= 1 for s in sides):
        raise ValueError(f"{name} must be one whole number >= 1 (a square) or two (height, width), got {v!r}")
    return sides[0], sides[-1]


def check_source(cfg: Any, name: str, hw: tuple[int, int]) -> None:
    """``cfg.data`` is a generated data set or an existing folder; moving MNIST frames hold a digit."""
    if cfg.data not in SOURCES and not (isinstance(cfg.data, str) and Path(cfg.data).is_dir()):
        raise ValueError(
            f"data must be mnist, sticks or a folder of class folders of videos, got {cfg.data!r} (no such folder)"
        )
    if cfg.data == "mnist" and min(hw) < MNIST_SIDE:
        raise ValueError(
            f"{name} must be at least {MNIST_SIDE} pixels a side with data=mnist (a digit's size), "
            f"got {getattr(cfg, name)!r}"
        )
