"""The checks every model's ``check_settings`` is made of: one setting of a config, refused with a ValueError that
names it, its valid values and the value given (``anyfill train`` turns it into one line and exit status 2).

Plain Python, no torch or NumPy: ``anyfill train MODEL --print-config`` imports a model's config and its check,
and must stay fast. ``prefix`` names a setting as the command line does (``trainer.`` for the loop's own).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# the most CPU threads any command's --threads takes (torch's, the BLAS's): a count no machine has would have the
# libraries start that many threads, or fail to
MAX_THREADS = 1024


def is_number(v: Any) -> bool:
    """A finite int or float, not a bool (``True`` is an int to Python, never a size or a rate to a model)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_whole(v: Any) -> bool:
    """An int, not a bool: a config file's ``3.0`` or ``true`` is no count of anything."""
    return isinstance(v, int) and not isinstance(v, bool)


def whole(cfg: Any, name: str, low: int, meaning: str = "", prefix: str = "") -> None:
    """``cfg.name`` is a whole number >= ``low``."""
    v = getattr(cfg, name)
    if not is_whole(v) or v < low:
        raise ValueError(f"{prefix}{name} must be a whole number >= {low}{meaning}, got {v!r}")


def at_least(cfg: Any, name: str, low: float = 0.0, meaning: str = "", strict: bool = False, prefix: str = "") -> None:
    """``cfg.name`` is a finite number >= ``low`` (> with ``strict``)."""
    v = getattr(cfg, name)
    if not is_number(v) or v < low or (strict and v == low):
        raise ValueError(
            f"{prefix}{name} must be a finite number {'>' if strict else '>='} {low:g}{meaning}, got {v!r}"
        )


def within(
    cfg: Any,
    name: str,
    low: float,
    high: float,
    what: str = "",
    meaning: str = "",
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    """``cfg.name`` is a number in the interval from ``low`` to ``high`` (either end left out with ``open_*``);
    ``what`` says what it is ("a share "), ``meaning`` what it measures (" degrees (0: off)")."""
    v = getattr(cfg, name)
    inside = is_number(v) and (low < v if open_low else low <= v) and (v < high if open_high else v <= high)
    if not inside:
        span = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise ValueError(f"{name} must be {what}in {span}{meaning}, got {v!r}")


def one_of(cfg: Any, name: str, options: Sequence[Any], meaning: str = "") -> None:
    """``cfg.name`` is one of ``options`` (two: "'a' or 'b'")."""
    v = getattr(cfg, name)
    if isinstance(v, bool) or v not in options:
        shown = [repr(o) for o in options]
        valid = " or ".join(shown) if len(shown) == 2 else "one of " + ", ".join(shown)
        raise ValueError(f"{name} must be {valid}{meaning}, got {v!r}")


def boolean(cfg: Any, *names: str) -> None:
    """Each of ``names`` is true or false (a config file's 1 or "yes" is not)."""
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, bool):
            raise ValueError(f"{name} must be true or false, got {v!r}")


def positive_list(cfg: Any, name: str, meaning: str = "") -> None:
    """``cfg.name`` is a non-empty list of finite numbers > 0."""
    v = getattr(cfg, name)
    if not isinstance(v, (list, tuple)) or not v or not all(is_number(x) and x > 0 for x in v):
        raise ValueError(f"{name} must be a non-empty list of finite numbers > 0{meaning}, got {v!r}")


def wholes(cfg: Any, name: str, count: int, low: int, meaning: str = "") -> None:
    """``cfg.name`` is a list of ``count`` whole numbers, each >= ``low``."""
    v = getattr(cfg, name)
    if not isinstance(v, (list, tuple)) or len(v) != count or not all(is_whole(x) and x >= low for x in v):
        raise ValueError(f"{name} must be {count} whole numbers >= {low}{meaning}, got {v!r}")


def divides(cfg: Any, name: str, of: str, unit: int = 1, why: str = "") -> None:
    """``unit`` x ``cfg.name`` (a whole number >= 1, checked before) divides ``cfg.of``: attention heads share a
    width evenly. The message lists the counts that do."""
    v, total = getattr(cfg, name), getattr(cfg, of)
    if total % (unit * v):
        fits = ", ".join(str(h) for h in range(1, total + 1) if total % (unit * h) == 0)
        head = f"{name} must divide {of}={total}" if unit == 1 else f"{unit} x {name} must divide {of}={total}"
        raise ValueError(f"{head}{why}: one of {fits}; got {v}")
