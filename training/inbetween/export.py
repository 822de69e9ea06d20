"""The end of a training run: the model of ``anyfill train anyorder`` written as safetensors + JSON card
(``run_dir/export``), calibrated first where the run asks for it."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from training.inbetween.calibrate import calibrate
from training.inbetween.checkpoint import save_model
from training.inbetween.datasets import rest_offsets


def export(cfg: Any, module: Any, trainer: Any, run_dir: Path) -> None:
    """After fit (``Task.after_fit``): ``cfg`` the run's ``AnyOrderTrainConfig``, ``module`` its ``AnyOrderModule``."""
    path = run_dir / "export" / f"{cfg.skeleton}-{cfg.variant}.safetensors"
    calibration = None
    if cfg.calibrate:
        dm = trainer.datamodule
        dm.setup("fit")
        calibration = calibrate(module, dm.val)
        print(f"calibrated: {calibration}")
    command = "anyfill train anyorder " + " ".join(sys.argv[3:] if len(sys.argv) > 3 else [])
    rest = rest_offsets(cfg.skeleton, cfg.data_root)
    save_model(module.model, path, rest_offsets=rest, training={
        "config": dataclasses.asdict(cfg),
        "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "command": command.strip(),
        "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")},
        **({"calibration": calibration} if calibration else {}),
    })
    print(f"exported {path}")
