"""The settings of ``anyfill train pixels`` and their check, in a module without torch: ``anyfill train pixels
--print-config`` imports only this one to refuse a bad setting as training would."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from training.checks import at_least, boolean, divides, is_whole, one_of, whole, within

N_IMAGES = 9000  # the training split's images (mnist.N_TRAIN; a test checks they agree): training and validation


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

    def model_config(self) -> Any:
        """The network's :class:`PixelConfig` (imported here: this module stays free of torch)."""
        from training.documents.pixels.model import PixelConfig

        core = dataclasses.replace(
            PixelConfig().core,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_enc_layers=self.n_layers,
            n_dec_layers=self.n_layers,
            dropout=self.dropout,
        )
        return PixelConfig(variant=self.variant, independent=self.independent, core=core)


def check_settings(cfg: PixelTaskConfig) -> None:
    """Refuse, before MNIST is read, the settings that would fail later with torch's or NumPy's words (or a
    training set with no whole batch) or silently train something else than asked, naming the setting."""
    one_of(cfg, "variant", ("query", "triples"))
    whole(cfg, "d_model", 1)
    whole(cfg, "n_heads", 1)
    divides(cfg, "n_heads", "d_model", why=" (each head reads d_model / n_heads channels)")
    whole(cfg, "n_layers", 1)
    boolean(cfg, "independent")
    within(cfg, "dropout", 0, 1, open_high=True)
    at_least(cfg, "lr", strict=True)
    at_least(cfg, "weight_decay")
    whole(cfg, "max_targets", 0, " (0: every target)")
    whole(cfg, "max_train", 0, " (0: every training image)")
    v = cfg.val_images
    if not is_whole(v) or not 1 <= v < N_IMAGES:
        raise ValueError(
            f"val_images must be a whole number from 1 to {N_IMAGES - 1} (the rest of the {N_IMAGES} "
            f"images train), got {v!r}"
        )
    whole(cfg, "batch_size", 1)
    train = min(cfg.max_train or N_IMAGES, N_IMAGES - cfg.val_images)
    if cfg.batch_size > train:
        raise ValueError(
            f"batch_size must be at most the {train} training images (batches are whole: a larger "
            f"one trains nothing), got {cfg.batch_size}"
        )
