"""``anyfill train lift``: the CS764 LiftModel (2D joints -> 3D joints) on Bandai poses seen by virtual cameras.

The defaults are the report's network (30 -> 1024 -> 45, two residual blocks, dropout 0.5) and Adam's
betas (0.5, 0.999), but a gentler schedule than the report's: learning rate 1e-3, batch 256, StepLR x0.8
per epoch, 10 epochs. The named config ``report`` is the report's own schedule (batch 32, learning rate
0.1, StepLR(200, 0.3) stepped every iteration, 5 epochs). The loss is MPJPE in millimetres. After
training, the model is scored on the test split's files (MPJPE and Procrustes-aligned MPJPE) and the
result is written to ``test_metrics.json`` in the run folder. Data: :mod:`training.documents.lift.data`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.documents.lift import data as lift_data
from training.documents.lift.config import LiftTaskConfig, check_settings
from training.documents.lift.metrics import mpjpe, pa_mpjpe
from training.documents.lift.model import LiftModel
from training.train import Task

METRICS_FILE = "test_metrics.json"


def mpjpe_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance per joint, in the units of the data (mm): the report's loss and metric."""
    return (pred - gt).norm(dim=-1).mean()


def lift_set(cfg: LiftTaskConfig, split: str) -> lift_data.LiftSet:
    test = split == "test"
    return lift_data.build(
        split, frame_stride=1 if test else cfg.frame_stride,
        cameras_per_pose=cfg.test_cameras_per_pose if test else cfg.cameras_per_pose,
        seed=cfg.data_seed, val_every=cfg.val_every, max_files=cfg.max_files, root=cfg.data_root,
    )


@torch.no_grad()
def predict(model: LiftModel, x2d: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """3D predictions (N, 15, 3) in mm of a model in eval mode."""
    was_training = model.training
    model.eval()
    out = [model(torch.from_numpy(x2d[i : i + batch_size])).numpy() for i in range(0, len(x2d), batch_size)]
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, *x2d.shape[1:-1], 3), np.float32)


def evaluate(model: LiftModel, data: lift_data.LiftSet) -> dict[str, Any]:
    """MPJPE, Procrustes-aligned MPJPE (mm) and per-joint MPJPE of a model on a set of samples."""
    pred = predict(model, data.x2d).astype(np.float64)
    gt = data.y3d.astype(np.float64)
    per_joint = np.linalg.norm(pred - gt, axis=-1).mean(axis=0)
    return {
        "mpjpe_mm": mpjpe(pred, gt),
        "pa_mpjpe_mm": pa_mpjpe(pred, gt) if np.isfinite(pred).all() else float("nan"),
        "per_joint_mm": dict(zip(lift_data.LIFT_JOINTS, per_joint.tolist(), strict=True)),
        "n_samples": len(gt),
    }


class LiftModule(L.LightningModule):
    def __init__(self, cfg: LiftTaskConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = LiftModel(cfg.model_config())
        self._val_pred: list[torch.Tensor] = []
        self._val_gt: list[torch.Tensor] = []

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = mpjpe_loss(self.model(x), y)
        self.log("train/mpjpe_mm", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        pred = self.model(x)
        self.log("val/mpjpe_mm", mpjpe_loss(pred, y), prog_bar=True)
        self._val_pred.append(pred.detach().cpu())
        self._val_gt.append(y.cpu())

    def on_validation_epoch_end(self) -> None:
        if not self._val_pred:
            return
        pred = torch.cat(self._val_pred).double().numpy()
        gt = torch.cat(self._val_gt).double().numpy()
        self._val_pred.clear()
        self._val_gt.clear()
        if np.isfinite(pred).all():
            self.log("val/pa_mpjpe_mm", pa_mpjpe(pred, gt))

    def configure_optimizers(self) -> dict[str, Any]:
        if self.cfg.lr_step_interval not in ("epoch", "step"):
            raise ValueError(f"lr_step_interval must be 'epoch' or 'step', got {self.cfg.lr_step_interval!r}")
        opt = torch.optim.Adam(self.parameters(), lr=self.cfg.lr, betas=(self.cfg.beta1, self.cfg.beta2))
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=self.cfg.lr_step_size, gamma=self.cfg.lr_gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": self.cfg.lr_step_interval}}


def _tensors(data: lift_data.LiftSet) -> TensorDataset:
    return TensorDataset(torch.from_numpy(data.x2d), torch.from_numpy(data.y3d))


class LiftData(L.LightningDataModule):
    """Train and validation samples; built once, in :func:`build`, because the model's normalisation
    needs the training statistics before the first step."""

    def __init__(self, cfg: LiftTaskConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_set = lift_set(cfg, "train")
        self.val_set = lift_set(cfg, "val")

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_tensors(self.train_set), batch_size=self.cfg.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(_tensors(self.val_set), batch_size=4096)


def build(cfg: LiftTaskConfig) -> tuple[LiftModule, LiftData]:
    data = LiftData(cfg)
    module = LiftModule(cfg)
    module.model.set_normalisation(torch.from_numpy(data.train_set.x2d), torch.from_numpy(data.train_set.y3d))
    return module, data


def after_fit(cfg: LiftTaskConfig, module: LiftModule, trainer: Any, run_dir: Path) -> None:
    """Score the trained model on the test split's files and write ``test_metrics.json``."""
    result = evaluate(module.model.cpu(), lift_set(cfg, "test"))
    result["epochs"] = int(trainer.current_epoch)
    result["steps"] = int(trainer.global_step)
    (Path(run_dir) / METRICS_FILE).write_text(json.dumps(result, indent=2) + "\n")
    print(f"lift test: MPJPE {result['mpjpe_mm']:.1f} mm, PA-MPJPE {result['pa_mpjpe_mm']:.1f} mm "
          f"on {result['n_samples']} samples -> {Path(run_dir) / METRICS_FILE}")


TASK = Task(
    name="lift",
    config_cls=LiftTaskConfig,
    build=build,
    named_configs={
        # a run of a few minutes on a 2-core CPU (what the sweep in docs/lift.md uses per run)
        "quick": {"trainer.max_epochs": 2},
        # a smoke test: a handful of files, one epoch
        "tiny": {"max_files": 4, "hidden": 256, "trainer.max_epochs": 1},
        # the CS764 report's schedule: batch 32, Adam lr 0.1 with betas (0.5, 0.999), StepLR(200, 0.3) stepped
        # every iteration (its loss is flat from epoch 1: by then the rate is 0.1 * 0.3^9), 5 epochs
        "report": {"batch_size": 32, "lr": 0.1, "beta1": 0.5, "beta2": 0.999, "lr_step_size": 200,
                   "lr_step_interval": "step", "lr_gamma": 0.3, "trainer.max_epochs": 5},
    },
    default_trainer={"max_epochs": 10},
    after_fit=after_fit,
    results=(METRICS_FILE,),
    check=check_settings,
)
