"""Where the real data is and which files are for training and which for testing (``splits.json``).

Test files are only ever used for evaluation; validation data is carved out of the training files.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

DATA_ENV = "ANYFILL_DATA"


class DataNotFound(FileNotFoundError):
    pass


def data_root(path: str | Path | None = None) -> Path:
    """The data folder: ``path`` if given, else ``$ANYFILL_DATA``, else ``../shared/data`` beside the
    project checkout (or beside the current directory)."""
    candidates = []
    if path is not None:
        candidates.append(Path(path))
    elif os.environ.get(DATA_ENV):
        candidates.append(Path(os.environ[DATA_ENV]))
    else:
        repo = Path(__file__).resolve().parents[2]
        candidates += [repo.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for c in candidates:
        if (c / "splits.json").is_file():
            return c
    raise DataNotFound(
        "motion data not found (looked in " + ", ".join(str(c) for c in candidates)
        + f"); pass --data-root or set {DATA_ENV} to the folder that holds splits.json"
    )


@lru_cache(maxsize=8)
def _splits(root: Path) -> dict:
    """The data folder's splits.json: the test files of each dataset (``bandai``: ``test``; ``manipnet``: ``train``
    and ``test`` takes); a file that does not hold them is an error naming it and what is missing."""
    path = root / "splits.json"
    try:
        s = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid JSON file ({e})") from None
    for dataset, parts in (("bandai", ("test",)), ("manipnet", ("train", "test"))):
        for part in parts:
            if not isinstance(s, dict) or not isinstance(s.get(dataset), dict) or not isinstance(
                    s[dataset].get(part), list):
                raise ValueError(f"{path}: no list of {dataset} {part} files ('{dataset}': {{'{part}': [...]}})")
    return s


def split_files(skeleton: str, split: str, root: str | Path | None = None) -> list[Path]:
    """BVH files of one skeleton ('hand' or 'body') and split ('train' or 'test'), sorted."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = data_root(root)
    s = _splits(root)
    if skeleton == "hand":
        return [root / "manipnet" / take / f"{side}Hand.bvh" for take in s["manipnet"][split]
                for side in ("left", "right")]
    if skeleton == "body":
        test = [root / "bandai" / f for f in s["bandai"]["test"]]
        if split == "test":
            return test
        test_set = {p.resolve() for p in test}
        return [p for p in sorted((root / "bandai").glob("*/*.bvh")) if p.resolve() not in test_set]
    raise ValueError(f"unknown skeleton {skeleton!r}; expected 'hand' or 'body'")
