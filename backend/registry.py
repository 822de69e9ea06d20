"""The models a server holds: loaded once at start-up (safetensors + JSON card, never unpickled), read-only
afterwards, so any number of requests may use them at once.

By default the shipped ``hand`` and ``body`` models (package data of ``backend.models``, see
:func:`~training.inbetween.checkpoint.shipped_models_dir`); ``--model NAME_OR_PATH`` (or ``NAME=PATH``) replaces
that list. A missing, corrupt or mismatched file stops the start with a
:class:`CheckpointError` that says which file and why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from backend.rest import REST_OFFSETS
from training.inbetween.checkpoint import (
    CheckpointError,
    card_path,
    load_model,
    load_numpy_model,
    read_card,
    resolve_path,
    shipped_models_dir,
)
from training.inbetween.fill import MAX_FPS, MIN_FPS, model_length
from training.motion.skeleton import Schema, get_schema

if TYPE_CHECKING:
    from training.inbetween.model import MotionFill
    from training.inbetween.numpy_model import NumpyMotionFill

DEFAULT_MODELS = ("hand", "body")


@dataclass(frozen=True)
class LoadedModel:
    name: str
    path: Path
    model: MotionFill | NumpyMotionFill
    card: dict
    schema: Schema
    rest_offsets: np.ndarray  # (J, 3) in model units
    fps_range: tuple[float, float]

    @property
    def length(self) -> int:
        return model_length(self.model)


def default_specs(shipped_dir: Path | None = None) -> list[str]:
    """The shipped models' paths; raises :class:`CheckpointError` naming any that is missing."""
    shipped_dir = shipped_models_dir() if shipped_dir is None else shipped_dir
    paths = [shipped_dir / f"{n}.safetensors" for n in DEFAULT_MODELS]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise CheckpointError(
            "shipped model(s) missing: " + ", ".join(str(p) for p in missing)
            + "; train them (see docs/backend.md) or pass --model NAME_OR_PATH")
    return [str(p) for p in paths]


def _rest_offsets(card: dict, schema: Schema, path: Path) -> np.ndarray:
    given = card.get("schema", {}).get("rest_offsets") or card.get("rest_offsets")
    try:
        offsets = np.asarray(given if given is not None else REST_OFFSETS[schema.name], dtype=np.float64)
    except (TypeError, ValueError):
        offsets = np.empty(0)
    if offsets.shape != (schema.n_joints, 3) or not np.isfinite(offsets).all():
        raise CheckpointError(f"{card_path(path)}: the rest offsets of the {schema.name} model must be "
                              f"{schema.n_joints} finite [x, y, z]")
    return offsets


def _fps_range(card: dict, schema: Schema, path: Path) -> tuple[float, float]:
    """The frame rates the model was trained at (its card's ``training.config.fps``; the skeleton's own when the
    card gives none); refused unless they are rates a window may have (:data:`.fill.MIN_FPS`..``MAX_FPS``)."""
    training = card.get("training")
    config = training.get("config") if isinstance(training, dict) else None
    fps = config.get("fps") if isinstance(config, dict) else None
    if fps is None:
        return (schema.fps, schema.fps)
    try:
        values = [float(f) for f in (fps if isinstance(fps, list | tuple) else [fps])]
    except (TypeError, ValueError):
        values = []
    if not values or not all(MIN_FPS <= f <= MAX_FPS for f in values):
        raise CheckpointError(f"{card_path(path)}: training.config.fps must be frame rates within "
                              f"{MIN_FPS:g}..{MAX_FPS:g}, got {fps!r}")
    return (min(values), max(values))


def load_one(spec: str, numpy: bool = False) -> LoadedModel:
    """``NAME_OR_PATH`` or ``NAME=PATH``; the name defaults to the file's stem. ``numpy``: a query-variant model
    in the numpy runtime (fills and sampling without importing torch; other variants load in torch)."""
    name, _, path = spec.partition("=") if "=" in spec else ("", "", spec)
    p = resolve_path(path)
    variant = read_card(p).get("config", {}).get("variant") if numpy and p.is_file() else None
    model, card = load_numpy_model(p) if variant == "query" else load_model(p)
    schema = get_schema(model.cfg.skeleton)
    return LoadedModel(name or p.stem, p, model, card, schema, _rest_offsets(card, schema, p),
                       _fps_range(card, schema, p))


class Registry:
    """Loaded models by name (read-only once built)."""

    def __init__(self, models: list[LoadedModel] | None = None):
        self._models: dict[str, LoadedModel] = {}
        for m in models or []:
            if m.name in self._models:
                raise CheckpointError(f"two models are named {m.name!r}; name them with NAME=PATH")
            self._models[m.name] = m

    @classmethod
    def load(cls, specs: list[str] | None = None, shipped_dir: Path | None = None) -> Registry:
        return cls([load_one(s) for s in (specs or default_specs(shipped_dir))])

    def names(self) -> list[str]:
        return list(self._models)

    def get(self, name: str) -> LoadedModel | None:
        return self._models.get(name)

    def __iter__(self):
        return iter(self._models.values())
