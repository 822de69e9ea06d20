"""``anyfill train perceiver-ae`` (also ``perceiver``): the Perceiver predictive-coding video autoencoder.

One training step takes a clip, slides a window of ``present`` frames over it ``exposures`` times
(``window_inc`` frames each time), and at every exposure encodes the window's patches (after droptoken)
into the latent carried over from the previous exposure, then decodes the present patches and a random
subset of the next ``future`` frames' patches. Loss per exposure, as the update defines ``alpha`` (1: only
the present, 0: only the future): ``alpha * present MSE + (1 - alpha) * future MSE``; the first
``blind_iters`` exposures only warm the latent up and are not counted. Windows and frames that are not
a whole number of patches are cropped to the last whole patch (the update's token arithmetic).

The update's command-line options map onto this config and the shared plumbing of ``anyfill train``
(docs/perceiver.md has the full table): ``--num-iters`` and ``--ckpt-period`` are fields here that set the
trainer's step limit and checkpoint period; ``--cpu-only`` / ``--one-gpu`` hide GPUs before the trainer
starts; the output folder is ``--run-dir`` and re-running in it continues from the newest checkpoint
(what ``--restore-from`` did).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset

from training.documents import mnist, video_data
from training.documents.perceiver.config import PerceiverTaskConfig, check_settings
from training.documents.perceiver.model import (
    PerceiverAE,
    droptoken,
    patch_grid,
    patchify,
    unpatchify,
)
from training.train import Task


class PerceiverModule(L.LightningModule):
    def __init__(self, cfg: PerceiverTaskConfig, channels: int = 1) -> None:
        super().__init__()
        check_settings(cfg)
        self.cfg = cfg
        self.channels = channels
        self.model = PerceiverAE(cfg.model_config(channels))
        ph, pw, pd = cfg.patch_hwd
        h, w = cfg.hw()
        gh, gw = h // ph, w // pw
        tp, tf = cfg.present // pd, cfg.future // pd
        span = cfg.present + cfg.future  # frames; the future starts right after the present window
        self.register_buffer("pos_present", patch_grid(tp, gh, gw, 0, span, pd).unsqueeze(0), persistent=False)
        self.register_buffer("pos_future", patch_grid(tf, gh, gw, cfg.present, span, pd).unsqueeze(0),
                             persistent=False)
        self.history: list[dict[str, float]] = []

    # -- one exposure sequence --------------------------------------------------------------------------------
    def windows(self, video: torch.Tensor, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Patches of exposure ``e``'s present window and of its future, and of the copy-last-frame
        baseline's future (the window's last frame repeated)."""
        s = e * self.cfg.window_inc
        present = video[:, :, s : s + self.cfg.present]
        future = video[:, :, s + self.cfg.present : s + self.cfg.present + self.cfg.future]
        copy = present[:, :, -1:].expand_as(future)
        return tuple(patchify(v, self.cfg.patch_hwd) for v in (present, future, copy))

    def run(self, video: torch.Tensor, train: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, Any]]:
        """Loss, metrics and the last exposure's tensors of a batch of clips (B, C, T, H, W)."""
        cfg = self.cfg
        b = video.shape[0]
        n_tok = self.pos_present.shape[1]
        latent = None
        keep = None
        total = video.new_zeros(())
        sums = {"present_mse": 0.0, "future_mse": 0.0, "copy_last_mse": 0.0}
        counted = 0
        for e in range(cfg.exposures):
            cur, fut, copy = self.windows(video, e)
            if train and cfg.p_droptoken < 1 and (keep is None or not cfg.no_re_droptoken):
                keep = droptoken(n_tok, cfg.p_droptoken, b, device=video.device)
            if train and cfg.p_droptoken < 1:
                idx = keep.unsqueeze(-1)
                inp = cur.gather(1, idx.expand(-1, -1, cur.shape[-1]))
                pos = self.pos_present.expand(b, -1, -1).gather(1, idx.expand(-1, -1, 3))
            else:
                inp, pos = cur, self.pos_present
            z = self.model.encode(inp, pos, latent)
            latent = z
            if e < cfg.blind_iters:
                continue
            rec = self.model.decode(z, self.pos_present)
            present_mse = F.mse_loss(rec, cur)
            fpos, ftarget = self.pos_future, fut
            if train and cfg.future_selection_probability < 1.0:
                sel = torch.rand(fut.shape[1], device=video.device) < cfg.future_selection_probability
                sel[torch.randint(fut.shape[1], (1,), device=video.device)] = True
                fpos, ftarget = self.pos_future[:, sel], fut[:, sel]
            pred = self.model.decode(z, fpos)
            future_mse = F.mse_loss(pred, ftarget)
            total = total + cfg.alpha * present_mse + (1 - cfg.alpha) * future_mse
            counted += 1
            sums["present_mse"] += float(present_mse.detach())
            sums["future_mse"] += float(future_mse.detach())
            sums["copy_last_mse"] += float(F.mse_loss(copy, fut))
        metrics = {k: torch.tensor(v / counted) for k, v in sums.items()}
        return total / counted, metrics, {"latent": latent, "start": (cfg.exposures - 1) * cfg.window_inc}

    # -- Lightning hooks ------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.cfg.num_iters > 0:  # the update's --num-iters: a step budget instead of epochs
            self.trainer.fit_loop.epoch_loop.max_steps = self.cfg.num_iters
            self.trainer.fit_loop.max_epochs = -1

    def configure_callbacks(self) -> list:
        if self.cfg.ckpt_period <= 0:
            return []
        from lightning.pytorch.callbacks import ModelCheckpoint

        # replaces the plumbing's ModelCheckpoint (same folder and names), only the period differs
        return [ModelCheckpoint(
            dirpath=Path(self.trainer.default_root_dir) / "checkpoints", filename="step{step:08d}",
            auto_insert_metric_name=False, save_last=True, save_top_k=2, monitor="step", mode="max",
            every_n_train_steps=self.cfg.ckpt_period,
        )]

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss, m, _ = self.run(batch[0], train=True)
        self.log("train/loss", loss, prog_bar=True)
        for k, v in m.items():
            self.log(f"train/{k}", v)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        loss, m, extra = self.run(batch[0], train=False)
        self.log("val/loss", loss, prog_bar=True)
        for k, v in m.items():
            self.log(f"val/{k}", v, prog_bar=k == "future_mse")
        if batch_idx == 0:
            self._figure_batch = (batch[0][:4].detach(), extra)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The validation history goes into each checkpoint (plain numbers), so a resumed run's metrics.json
        still holds every step (it kept only the steps after the resume)."""
        checkpoint["history"] = [dict(h) for h in self.history]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.history = [dict(h) for h in checkpoint.get("history", [])]

    def on_validation_epoch_end(self) -> None:
        logged = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("val/")}
        if logged:
            self.history.append({"step": int(self.global_step), **logged})
        fig = getattr(self, "_figure_batch", None)
        if fig is not None and self.logger is not None and hasattr(self.logger, "experiment"):
            img = self.figure(fig[0], fig[1])
            self.logger.experiment.add_image("val/reconstruction", img[None], self.global_step, dataformats="CHW")

    @torch.no_grad()
    def figure(self, video: torch.Tensor, extra: dict[str, Any]) -> np.ndarray:
        """A uint8 grid: per clip three rows (truth, model, copy-last-frame) of present + future frames."""
        cfg, s = self.cfg, extra["start"]
        z = extra["latent"][: len(video)]
        ph, pw, pd = cfg.patch_hwd
        (h, w), tp, tf = cfg.hw(), cfg.present // pd * pd, cfg.future // pd * pd  # the frames the patches cover
        h, w = h // ph * ph, w // pw * pw
        rec = unpatchify(self.model.decode(z, self.pos_present), (self.channels, tp, h, w), cfg.patch_hwd)
        pred = unpatchify(self.model.decode(z, self.pos_future), (self.channels, tf, h, w), cfg.patch_hwd)
        present = video[:, :, s : s + tp, :h, :w]
        future = video[:, :, s + cfg.present : s + cfg.present + tf, :h, :w]
        truth = torch.cat([present, future], dim=2)
        model = torch.cat([rec, pred], dim=2)
        last = video[:, :, s + cfg.present - 1 : s + cfg.present, :h, :w]
        copy = torch.cat([present, last.expand_as(pred)], 2)
        rows = []
        for i in range(len(video)):
            for v in (truth, model, copy):
                rows.append(v[i].mean(0))  # (T, H, W), channels averaged
        tiles = torch.stack(rows).clamp(0, 1).mul(255).round().byte().cpu().numpy()
        return mnist.grid(tiles.reshape(-1, h, w), cols=tp + tf)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)


def make_data(cfg: PerceiverTaskConfig) -> tuple[Any, Any]:
    spec = video_data.VideoSpec(source=cfg.data, frames=cfg.clip_frames(), size=cfg.hw(), n_train=cfg.n_train,
                                n_val=cfg.n_val, seed=cfg.seed, root=cfg.data_root)
    train, val, _ = video_data.make_datasets(spec)
    if cfg.overfit > 0:
        train = val = Subset(train, range(min(cfg.overfit, len(train))))
    return train, val


class VideoData(L.LightningDataModule):
    """Loaders with worker processes and prefetching, so decoding/rendering overlaps the model's steps."""

    def __init__(self, cfg: PerceiverTaskConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.train_set, self.val_set = make_data(cfg)

    def _loader(self, ds: Any, shuffle: bool) -> DataLoader:
        w = self.cfg.num_workers
        return DataLoader(ds, batch_size=min(self.cfg.batch_size, len(ds)), shuffle=shuffle, drop_last=shuffle,
                          num_workers=w, prefetch_factor=self.cfg.num_prefetch if w > 0 else None,
                          persistent_workers=w > 0, pin_memory=torch.cuda.is_available())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


def build(cfg: PerceiverTaskConfig) -> tuple[PerceiverModule, VideoData]:
    # --cpu-only / --one-gpu: the trainer picks its accelerator after build(), from the visible devices
    if cfg.cpu_only:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif cfg.one_gpu and "CUDA_VISIBLE_DEVICES" not in os.environ:
        os.environ["CUDA_VISIBLE_DEVICES"] = "0"
    data = VideoData(cfg)
    channels = int(data.train_set[0][0].shape[0])
    return PerceiverModule(cfg, channels), data


def profile(module: PerceiverModule, video: torch.Tensor, steps: int, out: Path) -> None:
    """A torch.profiler trace of ``steps`` training steps (forward + backward) for TensorBoard's profile tab
    (``torch-tb-profiler``) or chrome://tracing: where the time of a step goes."""
    from torch.profiler import ProfilerActivity, schedule, tensorboard_trace_handler

    module.train()
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if video.is_cuda else [])
    with torch.profiler.profile(activities=acts, schedule=schedule(wait=0, warmup=1, active=steps),
                                on_trace_ready=tensorboard_trace_handler(str(out))) as prof:
        for _ in range(steps + 1):
            module.run(video, train=True)[0].backward()
            module.zero_grad(set_to_none=True)
            prof.step()
    module.eval()


def after_fit(cfg: PerceiverTaskConfig, module: PerceiverModule, trainer: Any, run_dir: Path) -> None:
    """Write the reconstruction/prediction figure, the validation history, and the arguments' summary."""
    run_dir = Path(run_dir)
    module = module.cpu().eval()
    val = make_data(cfg)[1]
    video = torch.stack([val[i][0] for i in range(min(4, len(val)))])
    with torch.no_grad():
        _, m, extra = module.run(video, train=False)
    mnist.write_png(run_dir / "prediction.png", mnist.grid(module.figure(video, extra)[None], cols=1, pad=0, scale=2))
    if cfg.profile_steps > 0:
        profile(module, video, cfg.profile_steps, run_dir / "tb" / "profile")
    result = {"steps": int(trainer.global_step), "figure_clips": {k: float(v) for k, v in m.items()},
              "history": module.history}
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"perceiver-ae: {result['steps']} steps; figure clips present {result['figure_clips']['present_mse']:.4f}, "
          f"future {result['figure_clips']['future_mse']:.4f}, copy-last {result['figure_clips']['copy_last_mse']:.4f}"
          f" -> {run_dir / 'prediction.png'}")


TASK = Task(
    name="perceiver-ae",
    config_cls=PerceiverTaskConfig,
    build=build,
    named_configs={
        # a few minutes on a 2-core CPU
        "cpu-small": {"frame_size": (64, 64), "latent_dims": (32, 96), "batch_size": 8, "lr": 1e-3,
                      "trainer.max_steps": 2700, "trainer.log_every_n_steps": 10, "n_train": 2400,
                      "trainer.max_epochs": -1},
        # the smoke test: overfit 2 clips
        "tiny": {"frame_size": (32, 32), "patch_hwd": (8, 8, 2), "latent_dims": (16, 64), "overfit": 2, "batch_size": 2,
                 "num_workers": 0, "trainer.max_steps": 50, "trainer.max_epochs": -1},
        "stick": {"data": "sticks", "frame_size": (64, 64), "num_frames": 16},
        # the update's defaults (its --help): patches 16,16,3, present 5, future 30, window step 5, 100 frames
        # a clip (14 exposures), latents 100 x 700, 3 encoder blocks, batch 10, lr 1e-3, alpha 0.7,
        # future-selection 0.1, droptoken keeps 0.5, Fourier 15,20 (space) and 64,200 (time), a checkpoint
        # every 50 of 200 iterations. The update gives no default frame size (120 x 180 is its token
        # arithmetic's) nor data we have (moving MNIST here); settings it does not list keep ours.
        "document": {"frame_size": (120, 180), "patch_hwd": (16, 16, 3), "batch_size": 10, "num_prefetch": 4,
                     "k_mu_space": (15, 20), "k_mu_time": (64, 200), "lr": 1e-3, "alpha": 0.7, "present": 5,
                     "future": 30, "future_selection_probability": 0.1, "window_inc": 5, "num_frames": 100,
                     "exposures": 14, "latent_dims": (100, 700), "n_enc_blocks": 3, "p_droptoken": 0.5,
                     "ckpt_period": 50, "num_iters": 200, "trainer.max_epochs": -1},
    },
    default_trainer={"max_epochs": 10, "log_every_n_steps": 20},
    after_fit=after_fit,
    results=("metrics.json", "prediction.png"),
    check=check_settings,
)
