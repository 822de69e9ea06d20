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
    """The run's export, or a file beside it when the export there holds a model of more steps (a run
    started over with --fresh): an export is never replaced by an earlier step's model unannounced."""
    path = run_dir / "export" / f"{cfg.skeleton}-{cfg.variant}.safetensors"
    if path.is_file():
        try:
            before = int(read_card(path).get("training", {}).get("steps", 0))
        except (CheckpointError, TypeError, ValueError):
            before = 0
        if before > steps:
            beside = path.with_name(f"{path.stem}-step{steps}{path.suffix}")
            print(f"anyfill train: {path} holds a model of step {before}, more than this run's {steps}: "
                  f"exporting to {beside.name} beside it instead (delete the old export to replace it)",
                  file=sys.stderr)
            return beside
    return path


def export(cfg: Any, module: Any, trainer: Any, run_dir: Path) -> None:
    """After fit (``Task.after_fit``): ``cfg`` the run's ``AnyOrderTrainConfig``, ``module`` its ``AnyOrderModule``.
    The card carries the training data's rest offsets and joint habits (what clients retarget rigs with)."""
    path = export_path(cfg, run_dir, int(trainer.global_step))
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


def recalibrate(path: str | Path, out: str | Path, data_root: str | None = None) -> dict:
    """Calibrate a trained model file again with the calibration of this code, on the validation batches of the
    run that trained it (its card's config), starting from the model as trained (the card's earlier
    calibration undone), and write it to ``out`` with the new calibration in its card. Returns it."""
    from training.inbetween.checkpoint import load_model
    from training.inbetween.features import FeatureSpec
    from training.inbetween.task import AnyOrderData, AnyOrderModule, AnyOrderTrainConfig

    model, card = load_model(path)
    training = dict(card.get("training", {}))
    if "config" not in training:
        raise CheckpointError(f"{path}: its card holds no training config, so its run's validation data are unknown")
    c = dict(training["config"])
    c["features"] = FeatureSpec(**c["features"]) if isinstance(c.get("features"), dict) else FeatureSpec()
    if data_root is not None:
        c["data_root"] = data_root
    cfg = AnyOrderTrainConfig(**c)
    before = training.get("calibration", {})
    model.cfg = dataclasses.replace(model.cfg, rot_scale=(), pos_scale=1.0, motion_gate=0.0, gap_gate_rot=0.0,
                                    gap_gate_pos=0.0,
                                    kappa_offset=model.cfg.kappa_offset - float(before.get("kappa_shift", 0.0)))
    module = AnyOrderModule(cfg)
    module.model = model
    val, every = AnyOrderData(cfg).validation_batches()
    calibration = calibrate(module, val, every)
    schema = card["schema"]
    save_model(module.model, out, metrics=card.get("metrics"), rest_offsets=schema.get("rest_offsets"),
               conventions=schema.get("conventions"), training={**training, "calibration": calibration,
                         "recalibrated": f"python -m training.inbetween.export --recalibrate {path} {out}"})
    return calibration


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m training.inbetween.export",
                                description="calibrate a trained motion model again (see recalibrate)")
    p.add_argument("--recalibrate", nargs=2, metavar=("MODEL", "OUT"), required=True)
    p.add_argument("--data-root", metavar="DIR")
    a = p.parse_args()
    print(json.dumps(recalibrate(*a.recalibrate, a.data_root), indent=1))
