"""``anyfill train sttformer|stcformer|stcformer-ar|convstgat|stacformer``: the STCFormer report's models.

10 observed frames of 3D joint positions -> the next 25 (see :mod:`training.documents.stcformer.data`).
Default configs are the report's starting settings (batch 256, Adam with AMSGrad, learning rate 1e-4, no
scheduler, weight decay 1e-5, 2 blocks, 1 head, hidden 32, 50 epochs, no gradient clipping) on all the
data; the named configs ``start``, ``best``, ``best-full``, ``start-ar``, ``best-ar`` and ``best-ar-full``
are the report's runs (see ``_NAMED``). Loss: MPJPE (mean per-joint Euclidean distance); the
autoregressive model adds an L2 term on its start flags and is validated and tested without teacher
forcing. The weights of the best validation epoch are kept in ``best-val.pt``. After training, the run
folder gets ``test_metrics.json``: A-MPJPE and per-horizon MPJPE on the test split, A-MPJPE on the
validation and training windows (scored like the test), for the last and the best-validation weights.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from training.documents.stcformer import data as pdata
from training.documents.stcformer.config import (
    ConvSTGATConfig,
    ConvSTGATTaskConfig,
    STACFormerConfig,
    STACFormerTaskConfig,
    STCFormerARTaskConfig,
    STCFormerConfig,
    STCFormerTaskConfig,
    STTFormerConfig,
    STTFormerTaskConfig,
    check_settings,
)
from training.documents.stcformer.convstgat import ConvSTGAT
from training.documents.stcformer.criss_cross import count_parameters
from training.documents.stcformer.stacformer import STACFormer
from training.documents.stcformer.stcformer import STCFormer, target_flags
from training.documents.stcformer.sttformer import STTFormer
from training.train import Task

M_PER_MM = 1e-3  # the networks see metres: values of order 1
BEST_FILE = "best-val.pt"  # the weights of the best validation epoch, in the run folder


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


def flag_losses(pred_flags: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The autoregressive model's start-flag term: squared L2 distance of the predicted flags (B, T, J, 2)
    to the targets (one start frame per sequence: [0, 1] on the first predicted frame, [0, 0] on the other
    24), over all frames ("all", the loss term) and, for the class imbalance, the start frame and the rest."""
    err = (pred_flags - target_flags(y)).pow(2).sum(dim=-1)  # (B, T, J)
    return {"all": err.mean(), "start": err[:, 0].mean(), "other": err[:, 1:].mean()}


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
        self.best_val = float("inf")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _idx: int) -> torch.Tensor:
        x, y = (b * M_PER_MM for b in batch)
        if self.ar:
            out = self.model(x, y)  # teacher forced, one causal pass
            pos_loss = mpjpe(out[..., :3], y)
            flags = flag_losses(out[..., 3:], y)
            loss = pos_loss + self.cfg.flag_weight * flags["all"]
            for k, v in flags.items():
                self.log(f"train/flag_l2_{k}", v)
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
        a_mpjpe = scores.pop("A-MPJPE")
        self.log("val/a_mpjpe_mm", a_mpjpe, prog_bar=True)
        for k, v in scores.items():
            self.log(f"val/mpjpe_{k}", v)
        if not self.trainer.sanity_checking and a_mpjpe < self.best_val:
            self.best_val = a_mpjpe
            if self.trainer.is_global_zero:
                self._save_best(Path(self.trainer.default_root_dir) / BEST_FILE, a_mpjpe)

    def _save_best(self, path: Path, val: float) -> None:
        """The best validation epoch's weights, in the layout load_run reads (state_dict with "model.")."""
        state = {f"model.{k}": v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
        tmp = path.with_suffix(".tmp")
        torch.save({"state_dict": state, "epoch": self.current_epoch, "global_step": self.global_step,
                    "train_seconds": self.train_seconds, "val_a_mpjpe_mm": val}, tmp)
        tmp.replace(path)

    def on_train_batch_start(self, _batch: Any, _idx: int) -> None:
        self._batch_t0 = time.perf_counter()

    def on_train_batch_end(self, _out: Any, _batch: Any, _idx: int) -> None:
        # per batch, so that every checkpoint (even one written mid-epoch) carries the time of its weights
        self.train_seconds += time.perf_counter() - self._batch_t0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["train_seconds"] = self.train_seconds
        checkpoint["best_val"] = self.best_val

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.train_seconds = float(checkpoint.get("train_seconds", 0.0))
        self.best_val = float(checkpoint.get("best_val", float("inf")))

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
        self.val_windows = fraction_of(pdata.cut_windows(val, c.eval_stride, c.n_in, c.n_out), c.data_fraction)

    def _dataset(self, w: np.ndarray) -> TensorDataset:
        t = torch.from_numpy(w)
        return TensorDataset(t[:, : self.cfg.n_in], t[:, self.cfg.n_in :])

    def train_dataloader(self) -> DataLoader:
        ds = self._dataset(self.train_windows)
        if self.cfg.data_fraction >= 1.0:
            return DataLoader(ds, batch_size=self.cfg.batch_size, shuffle=True)
        # the report's "10 % of the batches": each epoch a fresh random share of the training windows
        n = max(self.cfg.batch_size, round(self.cfg.data_fraction * len(ds)))
        return DataLoader(ds, batch_size=self.cfg.batch_size, sampler=RandomSampler(ds, num_samples=min(n, len(ds))))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset(self.val_windows), batch_size=self.cfg.batch_size)


def fraction_of(windows: np.ndarray, fraction: float) -> np.ndarray:
    """An evenly spaced ``fraction`` of the windows (at least one): the same ones every epoch and run."""
    if fraction >= 1.0 or len(windows) == 0:
        return windows
    n = max(1, round(fraction * len(windows)))
    return windows[np.linspace(0, len(windows) - 1, n).round().astype(int)]


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


def split_windows(cfg: Any) -> dict[str, np.ndarray]:
    """The windows the report gives figures on: training (``score_train_windows`` of them, evenly spaced),
    validation (all of the validation files', every ``eval_stride`` frames) and test."""
    seqs = pdata.load_split("train", cfg.data_root or None, cfg.max_files or None)
    train, val = pdata.train_val_files(seqs, cfg.val_every)
    train_w = pdata.cut_windows(train, cfg.train_stride, cfg.n_in, cfg.n_out)
    if cfg.score_train_windows > 0:
        train_w = fraction_of(train_w, min(1.0, cfg.score_train_windows / max(1, len(train_w))))
    return {"train": train_w, "val": pdata.cut_windows(val, cfg.eval_stride, cfg.n_in, cfg.n_out),
            "test": load_test_windows(cfg)}


def load_best(name: str, cfg: Any, run_dir: Path) -> tuple[torch.nn.Module, dict] | None:
    """The best-validation weights of a run (``best-val.pt``) as a model, with their epoch and step."""
    path = Path(run_dir) / BEST_FILE
    if not path.is_file():
        return None
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(name, cfg)
    model.load_state_dict({k[len("model."):]: v for k, v in saved["state_dict"].items()})
    return model.eval(), {k: saved.get(k) for k in ("epoch", "global_step", "val_a_mpjpe_mm")}


def _a_mpjpe(model: torch.nn.Module, windows: np.ndarray, n_in: int) -> float | None:
    return evaluate(model, windows, n_in)["A-MPJPE"] if len(windows) else None


def after_fit(cfg: Any, module: MotionPredictionModule, trainer: L.Trainer, run_dir: Path) -> None:
    """Score the trained model (and its best-validation weights) on the training, validation and test
    windows and write ``test_metrics.json`` into the run folder: the test scores at the top level."""
    windows = split_windows(cfg)
    result = evaluate(module.model, windows["test"], cfg.n_in)
    result.update(
        model=module.name, parameters=count_parameters(module.model), train_seconds=module.train_seconds,
        epochs=trainer.current_epoch, steps=trainer.global_step,
        splits={"train": _a_mpjpe(module.model, windows["train"], cfg.n_in),
                "val": _a_mpjpe(module.model, windows["val"], cfg.n_in), "test": result["A-MPJPE"]},
        split_windows={s: len(w) for s, w in windows.items()},
    )
    best = load_best(module.name, cfg, run_dir)
    if best is not None:
        model, info = best
        scores = {s: _a_mpjpe(model, w, cfg.n_in) for s, w in windows.items()}
        result["best_val"] = {**info, "splits": scores}
    (run_dir / "test_metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    s = {k: "-" if v is None else f"{v:.1f}" for k, v in result["splits"].items()}
    print(f"{module.name}: A-MPJPE train {s['train']} / val {s['val']} / test {s['test']} mm "
          f"({result['windows']} test windows), {result['parameters']} parameters, "
          f"trained {result['train_seconds']:.0f} s")


def _build(name: str):
    def build(cfg: Any) -> tuple[MotionPredictionModule, PredictionDataModule]:
        return MotionPredictionModule(name, cfg), PredictionDataModule(cfg)

    return build


# The report's runs (its appendices A and B; the defaults are its starting settings on all the data):
# "start": classic-moon-16 / flowing-totem-106, 10 % of the batches; "start-ar" with the AR runs' 40 epochs.
# "best": comfy-cosmos-32, STCFormer's best (hidden 64, 1 head, lr 2e-3, no scheduler; 30 % of the
# batches, as its reference run 24); "best-full": faithful-glade-43, the same on all the data at lr 8e-4.
# "best-ar": kind-silence-112, STCFormer-AR's best (hidden 64 at the lr 1e-3 of run 107, 10 % of the
# batches, 40 epochs); "best-ar-full": generous-frog-153, the same on all the data.
# "cpu": what fits a few minutes on a shared 2-core machine (smaller batches, a fifth of the windows).
_NAMED: dict[str, dict[str, Any]] = {
    "start": {"data_fraction": 0.1},
    "start-ar": {"data_fraction": 0.1, "trainer.max_epochs": 40},
    "best": {"hidden": 64, "heads": 1, "lr": 2e-3, "lr_decay": 1.0, "data_fraction": 0.3},
    "best-full": {"hidden": 64, "heads": 1, "lr": 8e-4, "lr_decay": 1.0},
    "best-ar": {"hidden": 64, "heads": 1, "lr": 1e-3, "data_fraction": 0.1, "trainer.max_epochs": 40},
    "best-ar-full": {"hidden": 64, "heads": 1, "lr": 1e-3, "trainer.max_epochs": 40},
    "cpu": {"batch_size": 64, "train_stride": 5, "trainer.threads": 1},
}
_DEFAULT_TRAINER = {"max_epochs": 50}

TASKS: dict[str, Task] = {
    name: Task(
        name=name,
        config_cls=task_cfg,
        build=_build(name),
        named_configs=_NAMED,
        default_trainer=_DEFAULT_TRAINER,
        after_fit=after_fit,
        results=("test_metrics.json", BEST_FILE),  # the best weights too: --fresh moves them aside with the rest
        check=check_settings,
    )
    for name, (_, _, task_cfg) in MODELS.items()
}
