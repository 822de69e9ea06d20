"""``anyfill train pixels``: the any-order 4-colour MNIST model of the thesis (chapter 4), either variant.

Training images are the first 9,000 of the MNIST test set minus the last ``val_images`` of them
(validation); the 4 colours are k-means centres learned on the training pixels and stored with the
model. Every step draws a fresh random order per image:

* ``query``: a number k of known cells, uniform in 0..783, shared by the batch; the first k cells of
  each image's random order are known and the others are targets (at most ``max_targets`` of them).
* ``triples``: the whole random order, teacher-forced; step i predicts cell i from cells 0..i-1.

Either way the mean cross-entropy per target is an unbiased estimate of the negative log-likelihood per
pixel averaged over random orders, in nats: the logged ``val/nll``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from training.documents import mnist
from training.documents.pixels.model import PixelAnyOrder, PixelConfig
from training.train import Task


@dataclass
class PixelTaskConfig:
    variant: str = "query"  # query | triples
    d_model: int = 64  # the transformer's width
    n_heads: int = 4  # attention heads
    n_layers: int = 2  # encoder and decoder depth (query); causal depth (triples)
    independent: bool = True  # query variant: each query sees the known cells only (false: queries also see each other)
    dropout: float = 0.0  # dropout inside the transformer
    lr: float = 1e-3  # AdamW's learning rate
    weight_decay: float = 0.01  # AdamW's weight decay
    batch_size: int = 32  # images per batch
    max_targets: int = 0  # query variant: > 0 scores at most this many random targets per image
    max_train: int = 0  # > 0: train on this many images only (quick runs and tests)
    val_images: int = 500  # the last of the 9,000 training images, for validation
    data_root: str | None = None  # folder holding mnist/; none: ../shared/data

    def model_config(self) -> PixelConfig:
        core = dataclasses.replace(PixelConfig().core, d_model=self.d_model, n_heads=self.n_heads,
                                   n_enc_layers=self.n_layers, n_dec_layers=self.n_layers, dropout=self.dropout)
        return PixelConfig(variant=self.variant, independent=self.independent, core=core)


def quantised_splits(cfg: PixelTaskConfig) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The k-means centres (learned on the training pixels, validation excluded) and the colour indices
    (N, 784) of the train, val and test images."""
    train, _ = mnist.load("train", cfg.data_root)
    test, _ = mnist.load("test", cfg.data_root)
    fit_on, val = train[: len(train) - cfg.val_images], train[len(train) - cfg.val_images :]
    centres = mnist.kmeans_1d(fit_on)
    if cfg.max_train > 0:
        fit_on = fit_on[: cfg.max_train]
    sets = {k: mnist.quantise(v, centres).reshape(len(v), -1) for k, v in
            (("train", fit_on), ("val", val), ("test", test))}
    return centres, sets


def order_loss(model: PixelAnyOrder, colours: torch.Tensor, gen: torch.Generator | None = None,
               max_targets: int = 0) -> torch.Tensor:
    """Mean cross-entropy (nats) of target cells under fresh random orders of a batch (B, N)."""
    b, n = colours.shape
    colours = colours.long()
    order = torch.rand(b, n, generator=gen).to(colours.device).argsort(dim=1)
    if model.cfg.variant == "triples":
        logits = model.triples_logits(order, colours.gather(1, order))
        return F.cross_entropy(logits.flatten(0, 1), colours.gather(1, order).flatten())
    k = int(torch.randint(0, n, (1,), generator=gen))
    known, targets = order[:, :k], order[:, k:]
    if 0 < max_targets < targets.shape[1]:
        targets = targets[:, :max_targets]  # the order is random, so these are random targets
    logits = model.query_logits(known, colours.gather(1, known), targets)
    return F.cross_entropy(logits.flatten(0, 1), colours.gather(1, targets).flatten())


class PixelModule(L.LightningModule):
    def __init__(self, cfg: PixelTaskConfig, centres: np.ndarray) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = PixelAnyOrder(cfg.model_config())
        self.register_buffer("centres", torch.as_tensor(centres, dtype=torch.float64))

    def training_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = order_loss(self.model, batch[0], max_targets=self.cfg.max_targets)
        self.log("train/nll", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor], batch_idx: int) -> None:
        gen = torch.Generator().manual_seed(batch_idx)  # the same orders at every validation
        self.log("val/nll", order_loss(self.model, batch[0], gen), prog_bar=True, batch_size=len(batch[0]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


class PixelData(L.LightningDataModule):
    def __init__(self, cfg: PixelTaskConfig, sets: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.cfg = cfg
        self.sets = sets

    def train_dataloader(self) -> DataLoader:
        data = TensorDataset(torch.from_numpy(self.sets["train"]).long())
        return DataLoader(data, batch_size=self.cfg.batch_size, shuffle=True, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.from_numpy(self.sets["val"]).long()), batch_size=100)


def build(cfg: PixelTaskConfig) -> tuple[PixelModule, PixelData]:
    centres, sets = quantised_splits(cfg)
    return PixelModule(cfg, centres), PixelData(cfg, sets)


def load_run(
    run_dir: str | Path, checkpoint: str | Path | None = None
) -> tuple[PixelAnyOrder, np.ndarray, PixelTaskConfig]:
    """The trained model, its colour centres and its config from a run folder of ``anyfill train pixels``."""
    run_dir = Path(run_dir)
    snapshot = json.loads((run_dir / "config.json").read_text())
    if snapshot.get("model") != "pixels":
        raise ValueError(f"{run_dir} is a run of {snapshot.get('model')!r}, not of the pixel model")
    # runs from before the independent decoder existed trained queries that see each other
    cfg = PixelTaskConfig(**{"independent": False, **snapshot["config"]})
    ckpt = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model = PixelAnyOrder(cfg.model_config())
    model.load_state_dict({k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")})
    return model.eval(), state["centres"].numpy(), cfg


TASK = Task(
    name="pixels",
    config_cls=PixelTaskConfig,
    build=build,
    named_configs={
        "query": {"variant": "query"},
        "triples": {"variant": "triples"},
        "tiny": {"max_train": 64, "val_images": 32, "d_model": 32, "n_layers": 1, "trainer.max_epochs": 1},
    },
    default_trainer={"max_epochs": 20, "gradient_clip_val": 1.0, "log_every_n_steps": 20},
)
