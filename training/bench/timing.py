"""Wall-clock timing of repeated calls, one way for every ``anyfill bench`` that reports a speed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def repeat(fn: Callable[[], Any], repeats: int, warmup: int = 0) -> tuple[list[float], Any]:
    """Seconds of each of ``repeats`` calls of ``fn`` (after ``warmup`` untimed calls) and the last call's result."""
    for _ in range(warmup):
        fn()
    runs, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        runs.append(time.perf_counter() - t0)
    return runs, out
