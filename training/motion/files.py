"""Files written beside their final name and renamed into place: the permissions the result gets; and whether a file
can be written at all, asked before the work that makes it.

A temporary file made by ``tempfile.mkstemp`` (or by safetensors' writer) is readable by its owner only, and the rename
keeps that, so a BVH or a model file written so could not be read by another user (a Blender or a server run by
someone else). The result takes what ``open`` gives a new file, or the permissions of the file it replaces.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def mode_for(path: Path) -> int:
    """The permissions a file written to ``path`` gets: those of the file it replaces, else what ``open`` would give
    a new file (0666 less the umask)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_output(path: str | Path) -> None:
    """A file a command will write its results to (a benchmark's JSON), checked before any work is done: not a folder,
    its folder a folder (made if missing) that can be written; ValueError naming what is wrong."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{path} is a folder; give a file name for the JSON, e.g. {p / 'result.json'}")
    if p.exists() and not os.access(p, os.W_OK):
        raise ValueError(f"{path} exists and cannot be written")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ValueError(f"{path} cannot be written: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"{path} cannot be written: no permission to write in {parent}")
