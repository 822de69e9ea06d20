"""A trained motion model calibrated again with this code's calibration (:mod:`.calibrate`), on the validation
takes of the run that trained it: ``python -m training.inbetween.recalibrate MODEL OUT``. For models trained
before a calibration step existed, without training them again."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from training.inbetween.calibrate import calibrate
from training.inbetween.checkpoint import CheckpointError, load_model, save_model
from training.inbetween.config import AnyOrderTrainConfig
from training.inbetween.task import AnyOrderData, AnyOrderModule


def recalibrate(path: str | Path, out: str | Path, data_root: str | None = None) -> dict:
    """Calibrate a trained model file again with the calibration of this code, on the validation batches of the
    run that trained it (its card's config), starting from the model as trained (the card's earlier
    calibration undone), and write it to ``out`` with the new calibration in its card. Returns it."""
    model, card = load_model(path)
    training = dict(card.get("training", {}))
    if "config" not in training:
        raise CheckpointError(f"{path}: its card holds no training config, so its run's validation data are unknown")
    # the run's settings as this code names them (cards of every age; the features are what the model reads)
    names = {f.name for f in dataclasses.fields(AnyOrderTrainConfig)}
    c = {k: v for k, v in training["config"].items() if k in names}
    c["features"] = model.cfg.features
    c["init_from"] = None  # the model is the file's own; where its run started from is history
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
                         "recalibrated": f"python -m training.inbetween.recalibrate {path} {out}"})
    return calibration


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m training.inbetween.recalibrate",
                                description="calibrate a trained motion model again (see recalibrate)")
    p.add_argument("model", metavar="MODEL", help="the trained model (.safetensors beside its card)")
    p.add_argument("out", metavar="OUT", help="where the calibrated model is written")
    p.add_argument("--data-root", metavar="DIR", help="folder holding splits.json (default: the run's)")
    a = p.parse_args()
    print(json.dumps(recalibrate(a.model, a.out, a.data_root), indent=1))
