"""The end of a training run: the model of ``anyfill train anyorder`` written as safetensors + JSON card
(``run_dir/export``), calibrated first where the run asks for it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from training.inbetween.calibrate import calibrate
from training.inbetween.checkpoint import CheckpointError, read_card, save_model
from training.inbetween.datasets import rest_offsets
from training.motion import conventions


def export_path(cfg: Any, run_dir: Path, steps: int) -> Path:
    """The run's export, or a file beside it (``NAME-stepN.safetensors``, said so) when the export there holds a
    model of more steps (a run started over with --fresh) or of an unknown count (its card missing or
    unreadable): an export is never replaced by an earlier step's model, nor by any model unannounced."""
    path = run_dir / "export" / f"{cfg.skeleton}-{cfg.variant}.safetensors"
    if path.is_file():
        try:
            before = int(read_card(path).get("training", {}).get("steps"))
            why = f"holds a model of step {before}, more than this run's {steps}" if before > steps else ""
        except CheckpointError as e:
            why = f"holds a model of an unknown step count ({e})"
        except (TypeError, ValueError, AttributeError):
            why = "holds a model of an unknown step count (its card gives no whole number of steps)"
        if why:
            beside = path.with_name(f"{path.stem}-step{steps}{path.suffix}")
            print(f"anyfill train: {path} {why}: exporting to {beside.name} beside it instead "
                  "(delete the old export to replace it)", file=sys.stderr)
            return beside
    return path


def holds_this_model(path: Path, model: Any, steps: int) -> bool:
    """Whether the export at ``path`` already holds ``model`` at ``steps``: the same step count and the same weights
    (a finished run run again, which trains nothing and has no validation scores of its own to write)."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if int(read_card(path).get("training", {}).get("steps")) != steps:
            return False
        saved = load_file(str(path))
    except (CheckpointError, SafetensorError, OSError, TypeError, ValueError, AttributeError):
        return False
    state = model.state_dict()
    return saved.keys() == state.keys() and all(torch.equal(saved[k], state[k].detach().cpu()) for k in state)


def export(cfg: Any, module: Any, trainer: Any, run_dir: Path) -> None:
    """After fit (``Task.after_fit``): ``cfg`` the run's ``AnyOrderTrainConfig``, ``module`` its ``AnyOrderModule``.
    The card carries the training data's rest offsets and joint habits (what clients retarget rigs with). An export
    that already holds this very model is kept as it is (its card's validation scores and command with it)."""
    path = export_path(cfg, run_dir, int(trainer.global_step))
    if path.is_file() and holds_this_model(path, module.model, int(trainer.global_step)):
        print(f"anyfill train: {path} already holds this run's model of step {int(trainer.global_step)}: kept as it is")
        return
    calibration = None
    if cfg.calibrate:
        dm = trainer.datamodule
        dm.setup("fit")
        calibration = calibrate(module, dm.val, dm.val_every)
        print(f"calibrated: {calibration}")
    command = "anyfill train anyorder " + " ".join(sys.argv[3:] if len(sys.argv) > 3 else [])
    rest = rest_offsets(cfg.skeleton, cfg.data_root)
    habits = conventions.from_training(cfg.skeleton, cfg.data_root)
    save_model(module.model, path, rest_offsets=rest, conventions=habits, training={
        "config": dataclasses.asdict(cfg),
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "command": command.strip(),
        "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        **({"calibration": calibration} if calibration else {}),
    })
    print(f"exported {path}")
