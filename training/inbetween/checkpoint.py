"""Model files: weights in safetensors, everything else in a JSON card beside them. Nothing is pickled.

``hand.safetensors`` + ``hand.json``: the card names the model kind, its config, the skeleton schema it
fills, how it was trained (the exact command) and its benchmark numbers. Loading checks the card against
the weights, so a corrupt or mismatched file fails with a message that says which and why. Nothing here
imports torch until a torch model is made: :func:`load_numpy_model` reads a file without it.
"""

from __future__ import annotations

import dataclasses
import json
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from training.inbetween.config import MotionConfig
from training.motion import files
from training.motion.skeleton import get_schema

if TYPE_CHECKING:
    from training.inbetween.model import MotionFill
    from training.inbetween.numpy_model import NumpyMotionFill

FORMAT = "anyfill-model/1"


class CheckpointError(ValueError):
    """A model file that is missing, corrupt, or does not match its card."""


MIN_WINDOW = 4  # frames of the shortest model window a card may give


# Shipped default models live with the backend that serves them, as package data of ``backend.models``: found
# through importlib.resources (a data dependency; nothing here imports the server's code).
SHIPPED_PACKAGE = "backend.models"


def shipped_models_dir() -> Path:
    """The folder of the shipped models (``hand.safetensors`` + ``hand.json``, ...)."""
    return Path(str(resources.files(SHIPPED_PACKAGE)))


def resolve_path(name_or_path: str | Path) -> Path:
    """A model file from a path, or from a shipped model's name (``hand``, ``body``)."""
    p = Path(name_or_path)
    if p.suffix == ".safetensors" or p.exists():
        return p
    shipped_dir = shipped_models_dir()
    shipped = shipped_dir / f"{name_or_path}.safetensors"
    if shipped.is_file():
        return shipped
    names = sorted(q.stem for q in shipped_dir.glob("*.safetensors"))
    shipped_names = ", ".join(names) or "none"
    raise CheckpointError(f"no model {str(name_or_path)!r}: not a file, and shipped models are {shipped_names}")


def card_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def save_model(model: MotionFill, path: str | Path, training: dict[str, Any] | None = None,
               metrics: dict[str, Any] | None = None, rest_offsets=None, conventions: dict | None = None) -> Path:
    """Write ``path`` (.safetensors) and its card (.json), each atomically. ``rest_offsets`` (J, 3): the
    training data's mean bone offsets, which clients use as the model's rest skeleton; ``conventions``: the
    training data's joint habits (:mod:`.conventions`), which clients match a rig's rest pose against."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = get_schema(model.cfg.skeleton)
    card = {
        "format": FORMAT,
        "kind": "motion-anyorder",
        "config": dataclasses.asdict(model.cfg),
        "schema": {"name": schema.name, "joints": list(schema.joints), "parents": list(schema.parents),
                   "root": schema.root, "moving": list(schema.moving), "units": schema.units,
                   **({"rest_offsets": [[float(x) for x in row] for row in rest_offsets]}
                      if rest_offsets is not None else {}),
                   **({"conventions": conventions} if conventions is not None else {})},
        "rotation": "local quaternions (x, y, z, w); 6D at the network",
        "data": "ManipNet hands (CC BY-NC)" if schema.name == "hand" else "Bandai Namco Research Motion (CC BY-NC 4.0)",
        "licence": "non-commercial (trained on CC BY-NC data)",
        "training": training or {},
        "metrics": metrics or {},
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}, str(tmp))
    tmp.chmod(files.mode_for(path))  # safetensors writes it readable by its owner only
    tmp.replace(path)
    write_card(path, card)
    return path


def write_card(path: str | Path, card: dict[str, Any]) -> None:
    cp = card_path(path)
    tmp = cp.with_name(cp.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2) + "\n")
    tmp.replace(cp)


def read_card(path: str | Path) -> dict[str, Any]:
    cp = card_path(path)
    if not cp.is_file():
        raise CheckpointError(f"{path}: its card {cp.name} is missing")
    try:
        card = json.loads(cp.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{cp}: not valid JSON ({e})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"{cp}: a model card is a JSON object, this one is {type(card).__name__}")
    if card.get("format") != FORMAT:
        raise CheckpointError(f"{cp}: format {card.get('format')!r} is not {FORMAT!r}")
    return card


def _checked_card(path: str | Path) -> tuple[Path, dict[str, Any], MotionConfig]:
    """A model file's path, its card and its config, the card checked against the skeleton it names."""
    path = resolve_path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such model file")
    card = read_card(path)
    try:
        cfg = MotionConfig.from_card(card["config"])
        schema = get_schema(cfg.skeleton)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{card_path(path)}: bad model config ({e})") from None
    if cfg.max_frames < MIN_WINDOW:
        raise CheckpointError(f"{card_path(path)}: max_frames is {cfg.max_frames}; a model's window is at least "
                              f"{MIN_WINDOW} frames (a long fill's windows overlap by a quarter of it)")
    if card.get("schema", {}).get("joints") != list(schema.joints):
        raise CheckpointError(f"{card_path(path)}: its joints do not match the {schema.name} skeleton")
    return path, card, cfg


def _weights(path: Path, framework: str = "numpy") -> dict[str, Any]:
    """The file's tensors (NumPy arrays, or torch tensors with ``framework="torch"``, which also reads the
    half-precision types NumPy lacks), each checked to be finite."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework=framework) as f:
            state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118  (safe_open is not a mapping)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt safetensors file ({e})") from None
    except TypeError as e:  # a dtype NumPy lacks (bfloat16): the numpy runtime reads float32 files
        raise CheckpointError(f"{path}: unsupported tensor type for the numpy runtime ({e})") from None
    for k, v in state.items():
        if not (np.isfinite(v).all() if framework == "numpy" else bool(v.isfinite().all())):
            raise CheckpointError(f"{path}: tensor {k} holds NaN or infinite values")
    return state


def _with_sampling(model: Any, card: dict[str, Any], cfg: MotionConfig, path: Path) -> None:
    from training.inbetween.sampling import SamplingCalibration

    try:
        model.sampling = SamplingCalibration.from_card(card.get("sampling"))
        if model.sampling is not None:
            model.sampling.check(cfg.n_joints, cfg.n_moving)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{card_path(path)}: bad sampling calibration ({e})") from None


def load_model(path: str | Path) -> tuple[MotionFill, dict[str, Any]]:
    """Load a model file and its card; the model is in eval mode on the CPU, its inference passes traced
    on first use (:meth:`.transformer.QueryEncoderDecoder.trace_inference`, :class:`.tracing.TracedMethod`)."""
    from training.inbetween.model import MotionFill

    path, card, cfg = _checked_card(path)
    state = _weights(path, "torch")
    model = MotionFill(cfg)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        why = " ".join(line.strip() for line in str(e).splitlines()[1:3])  # the tensors missing, unexpected or sized
        raise CheckpointError(f"{path}: weights do not match the card's config ({why[:400]})") from None
    _with_sampling(model, card, cfg, path)
    model.eval()
    if cfg.variant == "query":
        model.core.trace_on_first_use = True  # one window and a sampling step run traced (eager if they cannot)
        model.traced_queries.on_first_use = model.traced_head.on_first_use = True  # and the arithmetic around them
        model.traced_window.on_first_use = True  # and a window's whole pass, and a sampling step's
        model.traced_step.on_first_use = True
    return model, card


def load_numpy_model(path: str | Path) -> tuple[NumpyMotionFill, dict[str, Any]]:
    """Load a query-variant model file for inference without torch (:mod:`.numpy_model`), with the same checks."""
    from training.inbetween.numpy_model import NumpyMotionFill

    path, card, cfg = _checked_card(path)
    if cfg.variant != "query":
        raise CheckpointError(f"{path}: the numpy runtime runs the query variant only; this model is {cfg.variant!r}")
    weights = _weights(path)  # its errors name the file
    try:
        model = NumpyMotionFill(cfg, weights)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    _with_sampling(model, card, cfg, path)
    return model, card
