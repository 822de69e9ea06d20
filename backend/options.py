"""The checks of the backend commands' options (``anyfill serve`` and ``fill``): each returns None, or what is wrong
with one option in one line naming it, the value given and what is valid. A command runs every check of its options
before any work (a model loaded, a file read, a server started) and stops with the first problem and exit status 2,
so an option taken by several commands is refused alike by each.

Plain Python (no NumPy, torch or server packages).
"""

from __future__ import annotations

from collections.abc import Iterable

from backend.commands import DEFAULT_HOST
from training.checks import MAX_THREADS


def first(*problems: str | None) -> str | None:
    """The first problem found, in the order the options are checked (None: every option can work)."""
    return next((p for p in problems if p), None)


def whole(option: str, value: int, low: int, high: int | None = None, meaning: str = "") -> str | None:
    """``value`` within ``low``..``high`` (no upper end when ``high`` is None); ``meaning`` says what it counts."""
    if low <= value and (high is None or value <= high):
        return None
    span = f">= {low}" if high is None else f"{low}..{high}"
    return f"{option} must be {span}{meaning}, got {value}"


def threads(value: int, zero: str) -> str | None:
    """A ``--threads``: 0 (``zero`` says what it leaves to the libraries) up to :data:`~training.checks.MAX_THREADS`
    (a larger count is no machine's: torch or the BLAS would start that many threads, or fail to)."""
    return whole("--threads", value, 0, MAX_THREADS, f" (0: {zero})")


def workers(value: int, max_jobs: int) -> str | None:
    """A server's ``--workers``: at most the ``max_jobs`` it holds at once (:data:`backend.jobs.MAX_JOBS`; more
    would never run)."""
    return whole("--workers", value, 1, max_jobs,
                 f" (at most {max_jobs} requests are held at once: more workers would never run)")


def host(value: str) -> str | None:
    """A ``--host`` that names an address (an empty one listened on every interface)."""
    return None if value.strip() else f"--host is empty; give an address such as {DEFAULT_HOST}"


def port(value: int) -> str | None:
    """A TCP port, 0 for any free one."""
    return whole("--port", value, 0, 65535, " (0: any free port)")


def models(specs: Iterable[str] | None) -> str | None:
    """Each ``--model``: a shipped name, a path or ``NAME=PATH``, neither side empty (whether the file is a model is
    known only once it loads)."""
    for spec in specs or ():
        if not spec.strip() or spec.startswith("=") or spec.endswith("="):
            return f"--model {spec!r}: give a shipped name, a .safetensors path or NAME=PATH, neither part empty"
    return None
