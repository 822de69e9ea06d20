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

import json
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from training.documents import mnist
from training.documents.pixels.config import PixelTaskConfig, check_settings
from training.documents.pixels.model import PixelAnyOrder
from training.train import Task


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
    """The trained model, its colour centres and its config from a run folder of ``anyfill train pixels``.
    A run folder or checkpoint that is not the pixel model's raises a one-line ValueError naming the file."""
    run_dir = Path(run_dir)
    config_file = run_dir / "config.json"
    try:
        snapshot = json.loads(config_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{config_file}: not a run's config.json (unreadable JSON: {e})") from None
    if not isinstance(snapshot, dict) or not isinstance(snapshot.get("config"), dict):
        raise ValueError(f"{config_file}: not a run's config.json (no 'config' settings)")
    if snapshot.get("model") != "pixels":
        raise ValueError(f"{run_dir} is a run of {snapshot.get('model')!r}, not of the pixel model")
    # runs from before the independent decoder existed trained queries that see each other
    try:
        cfg = PixelTaskConfig(**{"independent": False, **snapshot["config"]})
        model = PixelAnyOrder(cfg.model_config())
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{config_file}: not a valid pixels config ({_first_line(e)})") from None
    ckpt = Path(checkpoint) if checkpoint else run_dir / "checkpoints" / "last.ckpt"
    state = _checkpoint_state(ckpt)
    weights = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    if missing or set(weights) - set(expected) or "centres" not in state:
        what = (f"{len(missing)} of the pixel model's {len(expected)} weights missing" if missing
                else "unexpected weights" if set(weights) - set(expected) else "no colour centres")
        raise ValueError(f"{ckpt}: not a pixels checkpoint ({what}; 'anyfill train pixels' writes "
                         "RUN/checkpoints/*.ckpt)")
    for k, v in weights.items():
        if not isinstance(v, torch.Tensor) or v.shape != expected[k].shape:
            shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise ValueError(f"{ckpt}: a pixels checkpoint of another model size than {config_file} "
                             f"({k}: {shape} vs {tuple(expected[k].shape)})")
    centres = state["centres"]
    if not isinstance(centres, torch.Tensor) or centres.shape != (cfg.model_config().n_colours,):
        raise ValueError(f"{ckpt}: not a pixels checkpoint (its colour centres are not "
                         f"{cfg.model_config().n_colours} values)")
    model.load_state_dict(weights)
    return model.eval(), centres.numpy(), cfg


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _checkpoint_state(ckpt: Path) -> dict:
    """The ``state_dict`` of a Lightning checkpoint file, or a one-line ValueError naming the file. Missing
    files, folders and unreadable permissions stay OSErrors (the command line names the file for those)."""
    if ckpt.suffix == ".safetensors":
        raise ValueError(f"{ckpt}: not a pixels checkpoint (a .safetensors file; expected the .ckpt of "
                         "'anyfill train pixels')")
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles it then refuses: the error says enough
            warnings.simplefilter("ignore", UserWarning)
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as e:  # noqa: BLE001 - torch raises many kinds; none of its texts helps (some advise
        # weights_only=False, which would run the file's code)
        kind = "empty file" if _is_empty(ckpt) else type(e).__name__
        raise ValueError(f"{ckpt}: unreadable (truncated? not a checkpoint file? or one of an earlier anyfill, which "
                         f"saved NumPy's random state as an array): {kind}") from None
    state = saved.get("state_dict") if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{ckpt}: not a pixels checkpoint (no Lightning state_dict in it)")
    return state


def _is_empty(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return not f.read(1)
    except OSError:
        return False


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
    check=check_settings,
)
