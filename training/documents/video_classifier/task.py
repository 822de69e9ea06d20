"""``anyfill train video-classifier``: the (2+1)D CNN + attention video classifier and its ablations.

Default data: stick-figure renderings of the real Bandai capture, labelled by content class (walk, run,
bow, punch, ...; validation = the fixed test split's files). ``data=DIR`` reads a folder of class
folders of video files (HMDB51 layout) instead. Named configs give one run per row of the three
ablation tables (attention depth, CNN depth, cross- versus self-attention); after training,
``results.json`` in the run folder holds train loss, validation loss and accuracy and the CNN and
attention parameter counts, the columns of those tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from training.documents import video_data
from training.documents.video_classifier.config import VideoClassifierTaskConfig, check_settings
from training.documents.video_classifier.model import VideoClassifier, VideoClassifierConfig
from training.train import Task


class ClassifierModule(L.LightningModule):
    def __init__(self, cfg: VideoClassifierTaskConfig, n_classes: int, in_channels: int = 1) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = VideoClassifier(VideoClassifierConfig(
            n_classes=n_classes, in_channels=in_channels, width=cfg.width, blocks=cfg.blocks, head=cfg.head,
            n_queries=cfg.n_queries, n_cross=cfg.n_cross, n_self=cfg.n_self, dim=cfg.attn_dim, nheads=cfg.nheads,
            head_dim=cfg.head_dim, cross_heads=cfg.cross_heads, ffn_mult=cfg.ffn_mult, geglu=cfg.geglu,
            dropout=cfg.dropout,
        ))
        self.last: dict[str, float] = {}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.model(x)
        self.log("val/loss", F.cross_entropy(logits, y), prog_bar=True, batch_size=len(y))
        self.log("val/acc", (logits.argmax(-1) == y).float().mean(), prog_bar=True, batch_size=len(y))

    def on_validation_epoch_end(self) -> None:
        self.last = {k: float(v) for k, v in self.trainer.callback_metrics.items()}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


class ClassifierData(L.LightningDataModule):
    def __init__(self, cfg: VideoClassifierTaskConfig) -> None:
        super().__init__()
        self.cfg = cfg
        spec = video_data.VideoSpec(source=cfg.data, frames=cfg.frames, size=cfg.size, stride=cfg.stride,
                                    max_files=cfg.max_files, root=cfg.data_root)
        self.train_set, self.val_set, self.classes = video_data.make_datasets(spec)
        if cfg.overfit > 0:
            clips = video_data.class_by_class(self.train_set, cfg.overfit)  # several classes: a check that counts
            self.train_set = self.val_set = Subset(self.train_set, clips)

    def _loader(self, ds: Any, shuffle: bool) -> DataLoader:
        w = self.cfg.num_workers
        return DataLoader(ds, batch_size=min(self.cfg.batch_size, len(ds)), shuffle=shuffle, drop_last=shuffle,
                          num_workers=w, persistent_workers=w > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, False)


def build(cfg: VideoClassifierTaskConfig) -> tuple[ClassifierModule, ClassifierData]:
    data = ClassifierData(cfg)
    return ClassifierModule(cfg, len(data.classes), int(data.train_set[0][0].shape[0])), data


def after_fit(cfg: VideoClassifierTaskConfig, module: ClassifierModule, trainer: Any, run_dir: Path) -> None:
    """``results.json``: the ablation tables' columns for this run."""
    m = trainer.callback_metrics
    get = lambda k: float(m[k]) if k in m else None  # noqa: E731
    result = {
        "blocks": cfg.blocks, "head": cfg.head, "n_queries": cfg.n_queries, "n_cross": cfg.n_cross,
        "n_self": cfg.n_self, "seed": trainer_seed(run_dir), "steps": int(trainer.global_step),
        "epochs": int(trainer.current_epoch),
        "train_loss": get("train/loss_epoch"), "val_loss": get("val/loss"), "val_acc": get("val/acc"),
        "params": module.model.param_counts(),
    }
    (Path(run_dir) / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"video-classifier: val acc {result['val_acc']}, val loss {result['val_loss']}, "
          f"params {result['params']} -> {Path(run_dir) / 'results.json'}")


def trainer_seed(run_dir: Path) -> int | None:
    """The training seed of a run, from the ``config.json`` the shared plumbing writes."""
    f = Path(run_dir) / "config.json"
    return json.loads(f.read_text()).get("trainer", {}).get("seed") if f.is_file() else None


# one named config per row of the document's three ablation tables ("8 CNN blocks + 1 Cross Attention +
# 6 Self Attention" is blocks 8, n_cross 1, n_self 6); the 8-block model with 1 cross + 1 self is a row of
# all three tables, trained once. Written out (a literal, so that 'anyfill train video-classifier --help'
# lists them without importing torch).
_NAMED: dict[str, dict[str, Any]] = {
    "baseline": {"head": "pool", "blocks": 8},  # R(2+1)D with global pooling, no attention
    # attention depth: 8 CNN blocks + 1 cross + {1, 2, 6} self
    "attn-depth-1": {"head": "cross", "blocks": 8, "n_cross": 1, "n_self": 1},
    "attn-depth-2": {"head": "cross", "blocks": 8, "n_cross": 1, "n_self": 2},
    "attn-depth-6": {"head": "cross", "blocks": 8, "n_cross": 1, "n_self": 6},
    # CNN depth: 7 + 1C + 1S, 6 + 1C + 6S, 4 + 1C + 6S, 4 + 2C + 12S
    "cnn-blocks-7": {"head": "cross", "blocks": 7, "n_cross": 1, "n_self": 1},
    "cnn-blocks-6": {"head": "cross", "blocks": 6, "n_cross": 1, "n_self": 6},
    "cnn-blocks-4": {"head": "cross", "blocks": 4, "n_cross": 1, "n_self": 6},
    "cnn-blocks-4-2c": {"head": "cross", "blocks": 4, "n_cross": 2, "n_self": 6},
    # cross versus self: 8 + 1C, 8 + 1S
    "cross-only": {"head": "cross", "blocks": 8, "n_cross": 1, "n_self": 0},
    "self-only": {"head": "self", "blocks": 8, "n_self": 1},
    # the document's sizes (R(2+1)D-18 at width 64, 16 frames of 112 x 112, 512-wide attention); add a row's
    # settings (blocks=, n_cross=, n_self=, head=) on the command line. Not run here: no GPU.
    "document": {"width": 64, "size": 112, "frames": 16, "stride": 1},
    # the smoke test: overfit 4 clips of 4 classes (accuracy 1.0 in about 15 s on a 2-core CPU; its clips were
    # once 8 windows of one file, one class, which a constant answer scored 1.0)
    "tiny": {"max_files": 8, "size": 32, "frames": 8, "width": 8, "overfit": 4, "batch_size": 4, "num_workers": 0,
             "n_queries": 8, "lr": 3e-3, "dropout": 0.0, "trainer.max_epochs": 60},
}

TASK = Task(
    name="video-classifier",
    config_cls=VideoClassifierTaskConfig,
    build=build,
    named_configs=_NAMED,
    default_trainer={"max_epochs": 10, "log_every_n_steps": 10},
    after_fit=after_fit,
    results=("results.json",),
    check=check_settings,
)
