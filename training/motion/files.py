"""Files written beside their final name and renamed into place: the permissions the result gets.

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
