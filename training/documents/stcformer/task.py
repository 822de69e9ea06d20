"""``anyfill train sttformer|stcformer|stcformer-ar|convstgat|stacformer``: the STCFormer report's models.

10 observed frames of 3D joint positions -> the next 25 (see :mod:`training.documents.stcformer.data`).
Default configs are the report's starting settings (batch 256, Adam with AMSGrad, weight decay 1e-5,
2 blocks, 1 head, hidden 32); the named config ``best`` holds the settings that scored best. Loss: MPJPE
(mean per-joint Euclidean distance); the autoregressive model adds an L2 term on its start flags and is
validated and tested without teacher forcing. After training, the run folder gets ``test_metrics.json``
(test-split A-MPJPE and per-horizon MPJPE, parameters, training time).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from training.documents.stcformer import data as pdata
from training.documents.stcformer.convstgat import ConvSTGAT, ConvSTGATConfig
from training.documents.stcformer.criss_cross import count_parameters
from training.documents.stcformer.stacformer import STACFormer, STACFormerConfig
from training.documents.stcformer.stcformer import STCFormer, STCFormerConfig
from training.documents.stcformer.sttformer import STTFormer, STTFormerConfig
from training.train import Task

M_PER_MM = 1e-3  # the networks see metres: values of order 1


@dataclass
class TrainSettings:
    """Optimisation and data settings shared by the family (the report's starting point)."""

    lr: float = 1e-3  # Adam's learning rate
    weight_decay: float = 1e-5  # Adam's weight decay
    amsgrad: bool = True  # use the AMSGrad variant of Adam
    lr_decay: float = 1.0  # multiplied into the learning rate after every epoch
    batch_size: int = 256  # windows per batch
    train_stride: int = 2  # frames between training windows
    eval_stride: int = 5  # frames between validation / test windows
    val_every: int = 10  # every 10th training file (sorted) is validation data
    max_files: int = 0  # 0: every file of the split (a positive count: smoke runs and tests)
    data_root: str = ""  # folder with splits.json ("" = the default ../shared/data)
    flag_weight: float = 1.0  # autoregressive model: weight of the L2 loss on the start flags


@dataclass
class STTFormerTaskConfig(TrainSettings, STTFormerConfig):
    pass


@dataclass
class STCFormerTaskConfig(TrainSettings, STCFormerConfig):
    pass


@dataclass
class STCFormerARTaskConfig(TrainSettings, STCFormerConfig):
    autoregressive: bool = True  # STCFormer-AR: frame by frame with start flags


@dataclass
class ConvSTGATTaskConfig(TrainSettings, ConvSTGATConfig):
    pass


@dataclass
class STACFormerTaskConfig(TrainSettings, STACFormerConfig):
    pass


# model name -> (torch module, its config dataclass, the task's config dataclass)
MODELS: dict[str, tuple[type, type, type]] = {
    "sttformer": (STTFormer, STTFormerConfig, STTFormerTaskConfig),
    "stcformer": (STCFormer, STCFormerConfig, STCFormerTaskConfig),
    "stcformer-ar": (STCFormer, STCFormerConfig, STCFormerARTaskConfig),
    "convstgat": (ConvSTGAT, ConvSTGATConfig, ConvSTGATTaskConfig),
    "stacformer": (STACFormer, STACFormerConfig, STACFormerTaskConfig),
}


def build_model(name: str, cfg: Any) -> torch.nn.Module:
    """The torch module of ``name`` from a task config (or a dict of settings, as in config.json)."""
    model_cls, model_cfg_cls, task_cfg_cls = MODELS[name]
    if isinstance(cfg, dict):
        known = {f.name for f in dataclasses.fields(task_cfg_cls)}
        cfg = task_cfg_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in known})
    keys = {f.name for f in dataclasses.fields(model_cfg_cls)}
    return model_cls(model_cfg_cls(**{k: getattr(cfg, k) for k in keys}))


def is_autoregressive(model: torch.nn.Module) -> bool:
    return bool(getattr(getattr(model, "cfg", None), "autoregressive", False))


def mpjpe(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean per-joint position error: the mean Euclidean distance over windows, frames and joints."""
    return (pred - gt).norm(dim=-1).mean()


@torch.no_grad()
def predict(model: torch.nn.Module, observed_mm: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Predictions (N, n_out, J, 3) in mm from observed frames (N, n_in, J, 3) in mm; the
    autoregressive model generates frame by frame (no teacher forcing)."""
    model.eval()
    outs = []
    for i in range(0, len(observed_mm), batch_size):
        x = torch.as_tensor(observed_mm[i : i + batch_size], dtype=torch.float32) * M_PER_MM
        outs.append((model(x) / M_PER_MM).numpy())
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


class MotionPredictionModule(L.LightningModule):
    def __init__(self, name: str, cfg: Any):
        super().__init__()
        self.name, self.cfg = name, cfg
        self.model = build_model(name, cfg)
        self.ar = is_autoregressive(self.model)
        self.train_seconds = 0.0
        self._batch_t0 = 0.0
        self._val_sum: torch.Tensor | None = None
        self._val_n = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> torch.Tensor:
        x, y = (b * M_PER_MM for b in batch)
        if self.ar:
            out = self.model(x, y)  # teacher forced, one causal pass
            pos_loss = mpjpe(out[..., :3], y)
            flag_loss = out[..., 3:].pow(2).mean()  # no predicted frame is a start frame: target [0, 0]
            loss = pos_loss + self.cfg.flag_weight * flag_loss
            self.log("train/flag_l2", flag_loss)
        else:
            pos_loss = loss = mpjpe(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/mpjpe_mm", pos_loss / M_PER_MM)
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sum, self._val_n = None, 0

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> None:
        x, y = (b * M_PER_MM for b in batch)
        pred = self.model(x)  # the autoregressive model generates on its own outputs here
        per_frame = (pred - y).norm(dim=-1).mean(dim=2).sum(dim=0) / M_PER_MM  # (n_out,) summed over windows
        self._val_sum = per_frame if self._val_sum is None else self._val_sum + per_frame
        self._val_n += x.shape[0]

    def on_validation_epoch_end(self) -> None:
        if self._val_sum is None:
            return
        scores = pdata.summarise((self._val_sum / self._val_n).cpu().numpy())
        self.log("val/a_mpjpe_mm", scores.pop("A-MPJPE"), prog_bar=True)
        for k, v in scores.items():
            self.log(f"val/mpjpe_{k}", v)

    def on_train_batch_start(self, _batch: Any, _idx: int) -> None:
        self._batch_t0 = time.perf_counter()

    def on_train_batch_end(self, _out: Any, _batch: Any, _idx: int) -> None:
        # per batch, so that every checkpoint (even one written mid-epoch) carries the time of its weights
        self.train_seconds += time.perf_counter() - self._batch_t0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["train_seconds"] = self.train_seconds

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))

    def configure_optimizers(self):
        opt = torch.optim.Adam(
            self.model.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay, amsgrad=self.cfg.amsgrad
        )
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=self.cfg.lr_decay)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}


class PredictionDataModule(L.LightningDataModule):
    """Windows of 10 + 25 frames: training and validation from the training split's files (disjoint
    files), the test split only in :func:`after_fit` and the benchmark."""

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.train_windows = self.val_windows = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_windows is not None:
            return
        c = self.cfg
        seqs = pdata.load_split("train", c.data_root or None, c.max_files or None)
        train, val = pdata.train_val_files(seqs, c.val_every)
        self.train_windows = pdata.cut_windows(train, c.train_stride, c.n_in, c.n_out)
        self.val_windows = pdata.cut_windows(val, c.eval_stride, c.n_in, c.n_out)

    def _loader(self, w: np.ndarray, shuffle: bool) -> DataLoader:
        t = torch.from_numpy(w)
        ds = TensorDataset(t[:, : self.cfg.n_in], t[:, self.cfg.n_in :])
        return DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_windows, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_windows, False)


def load_test_windows(cfg: Any) -> np.ndarray:
    """Test-split windows (N, n_in + n_out, J, 3) in mm."""
    return pdata.cut_windows(pdata.load_split("test", cfg.data_root or None), cfg.eval_stride, cfg.n_in, cfg.n_out)


def evaluate(model: torch.nn.Module, windows: np.ndarray, n_in: int = pdata.N_IN) -> dict[str, Any]:
    """Test scores of a model: A-MPJPE and per-horizon MPJPE (mm) and the inference time."""
    t0 = time.perf_counter()
    pred = predict(model, windows[:, :n_in])
    seconds = time.perf_counter() - t0
    per_frame = pdata.mpjpe_per_frame(pred, windows[:, n_in:])
    return {"windows": len(windows), **pdata.summarise(per_frame), "per_frame": per_frame.tolist(),
            "inference_s": seconds}


def after_fit(cfg: Any, module: MotionPredictionModule, trainer: L.Trainer, run_dir: Path) -> None:
    """Score the trained model on the test split and write ``test_metrics.json`` into the run folder."""
    result = evaluate(module.model, load_test_windows(cfg), cfg.n_in)
    result.update(
        model=module.name, parameters=count_parameters(module.model), train_seconds=module.train_seconds,
        epochs=trainer.current_epoch, steps=trainer.global_step,
    )
    (run_dir / "test_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{module.name}: test A-MPJPE {result['A-MPJPE']:.1f} mm ({result['windows']} windows), "
          f"{result['parameters']} parameters, trained {result['train_seconds']:.0f} s")


def _build(name: str):
    def build(cfg: Any) -> tuple[MotionPredictionModule, PredictionDataModule]:
        return MotionPredictionModule(name, cfg), PredictionDataModule(cfg)

    return build


# "best": the direction the report's tuning took (a wider model, two heads, a decaying learning rate);
# its exact tuned values are not in this repository, so these are a stand-in (see docs/motion_prediction.md).
# "cpu": what fits a few minutes on a shared 2-core machine (smaller batches, a fifth of the windows).
_NAMED: dict[str, dict[str, Any]] = {
    "best": {"hidden": 64, "heads": 2, "lr": 2e-3, "lr_decay": 0.9},
    "cpu": {"batch_size": 64, "train_stride": 5, "trainer.threads": 1},
}
_DEFAULT_TRAINER = {"max_epochs": 20, "gradient_clip_val": 1.0}

TASKS: dict[str, Task] = {
    name: Task(
        name=name,
        config_cls=task_cfg,
        build=_build(name),
        named_configs=_NAMED,
        default_trainer=_DEFAULT_TRAINER,
        after_fit=after_fit,
    )
    for name, (_, _, task_cfg) in MODELS.items()
}
