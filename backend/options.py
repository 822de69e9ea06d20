"""The checks of the backend commands' options (``anyfill serve``, ``fill``, ``demo`` and ``bench serve``): each returns
None, or what is wrong with one option in one line naming it, the value given and what is valid. A command runs every
check of its options before any work (a model loaded, a file read, a server started) and stops with the first problem
and exit status 2, so an option taken by several commands is refused alike by each.

Plain Python (no NumPy, torch or server packages).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

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


def folder(option: str, path: str) -> str | None:
    """A folder files will be written into: not empty (``""`` would be the current folder), not a file, and the
    nearest folder of it that exists one a file can be made in (the folder itself is made when missing)."""
    if not path.strip():
        return f"{option} is empty; name the folder to write into"
    p = Path(path)
    if p.exists() and not p.is_dir():
        return f"{option} {path}: is a file, not a folder"
    parent = p.absolute()
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        return f"{option} {path}: {parent} is a file, not a folder"
    try:  # a file made and removed at once: permissions, a read-only or virtual file system (/proc)
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".anyfill-probe-")
    except OSError as e:
        return f"{option} {path}: cannot write in {parent} ({e.strerror or e})"
    os.close(fd)
    os.unlink(probe)
    return None
