"""``anyfill train anyorder --skeleton hand|body [--variant query|triples]``: the thesis model on motion.

Lightning plumbing around :class:`~training.inbetween.model.MotionFill`: batches of random windows
from the training split with random known/target patterns, the losses of :mod:`training.inbetween.losses`,
validation on held-out training files, and, at the end, the export of :mod:`training.inbetween.export`
(calibrated by :mod:`training.inbetween.calibrate` with ``calibrate=true``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from training.inbetween.config import AnyOrderConfig, AnyOrderTrainConfig, MotionConfig, check_settings
from training.inbetween.datasets import MaskMix, RigConventions, WindowSampler, feature_stats, load_clips
from training.inbetween.export import export
from training.inbetween.features import top_joint
from training.inbetween.losses import angular_mse, gaussian_nll, masked_mean, von_mises_nll
from training.inbetween.model import MotionFill
from training.motion.skeleton import get_schema
from training.motion.torch_rotations import (
    cos_angle_between,
    forward_kinematics,
    global_rotations,
    quat_distance_sq,
    sixd_to_matrix,
)
from training.train import Task

# the model settings :func:`~training.inbetween.calibrate.calibrate` chooses after training (not weights)
CALIBRATION = ("rot_scale", "pos_scale", "motion_gate", "gap_gate_rot", "gap_gate_pos", "kappa_offset")


def build_model(cfg: AnyOrderTrainConfig) -> MotionFill:
    schema = get_schema(cfg.skeleton)
    core = AnyOrderConfig(
        d_model=cfg.d_model, n_heads=cfg.n_heads, n_enc_layers=cfg.n_enc_layers,
        n_dec_layers=cfg.n_dec_layers, dropout=cfg.dropout,
    )
    model = MotionFill(MotionConfig(cfg.skeleton, schema.n_joints, len(schema.moving), cfg.variant, cfg.length, core,
                                    features=cfg.features, key_gate=cfg.key_gate))
    if cfg.init_from:
        from training.inbetween.checkpoint import load_model

        source, _ = load_model(cfg.init_from)
        same_core = dataclasses.replace(source.cfg.core, dropout=core.dropout)  # dropout may change
        # a calibrated file (a shipped model) starts as trained: its calibration is settings, not weights; and a
        # run may teach it to correct another curve (features are settings too; load_state_dict checks shapes)
        uncalibrated = {f: getattr(model.cfg, f) for f in CALIBRATION}
        if dataclasses.replace(source.cfg, core=same_core, features=model.cfg.features, **uncalibrated) != model.cfg:
            raise ValueError(f"init_from={cfg.init_from}: its model config differs from this run's")
        model.load_state_dict(source.state_dict())
    return model


def frame_order(rng: np.random.Generator, known: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Random triples order per window: frames with known cells first, then target frames, then the
    rest, each group shuffled."""
    n, t = known.shape[:2]
    group = np.where(known.any(-1), 0, np.where(target.any(-1), 1, 2))
    key = group * 2.0 + rng.random((n, t))
    return np.argsort(key, axis=1)


class _Batches(IterableDataset):
    """An epoch of random training batches. Each stream (a DDP rank's data-loader worker) draws its own
    windows from ``(seed, epoch, stream)``, so ranks and workers never repeat each other's batches and a
    resumed run sees the data it would have seen; one stream alone keeps the ``(seed, epoch)`` draw of
    runs made before there were workers."""

    def __init__(self, sampler: WindowSampler, batch_size: int, steps: int, seed: int, variant: str,
                 rank: int = 0, world_size: int = 1):
        self.sampler, self.batch_size, self.steps, self.seed, self.variant = sampler, batch_size, steps, seed, variant
        self.rank, self.world_size = rank, world_size
        self.epoch = 0  # set by the training loop before each epoch's iterator (workers get a copy then)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        stream, streams = self.rank * workers + worker, self.world_size * workers
        key = [self.seed, self.epoch] if streams == 1 else [self.seed, self.epoch, stream]
        rng = np.random.default_rng(key)
        # this rank's steps, dealt out to its workers (the loader interleaves them back in turn)
        for _ in range(self.steps // workers + (worker < self.steps % workers)):
            b = self.sampler.batch(rng, self.batch_size)
            if self.variant == "triples":
                b["order"] = frame_order(rng, b["known"], b["target"])
            yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()}


def _starting_epoch(trainer) -> int:
    """The epoch the loop is about to run. On resume Lightning asks for the loader before it restores its
    loop state (its ``current_epoch`` still reads 0), so the checkpoint says which epoch comes next."""
    if trainer is None:
        return 0
    if trainer.ckpt_path and trainer.current_epoch == 0:
        ckpt = torch.load(trainer.ckpt_path, map_location="cpu", weights_only=False, mmap=True)
        done = ckpt.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
        # saved at an epoch's end its batches are all processed (the next epoch comes next); saved
        # mid-epoch (max_time, every n steps) that epoch is resumed
        if done.get("processed", 0) == done.get("started", 0):
            return int(done.get("processed", 0))
        return int(done.get("completed", 0))
    return trainer.current_epoch


def _fixed_batches(sampler: WindowSampler, cfg: AnyOrderTrainConfig, seed: int) -> list[dict[str, torch.Tensor]]:
    """``cfg.val_windows`` windows drawn once (seeded), in batches of ``cfg.batch_size``."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, cfg.val_windows, cfg.batch_size):
        b = sampler.batch(rng, min(cfg.batch_size, cfg.val_windows - start))
        if cfg.variant == "triples":
            b["order"] = frame_order(rng, b["known"], b["target"])
        out.append({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in b.items()})
    return out


def keyed_as_animators_do(skeleton: str) -> MaskMix:
    """The masks calibration scores the fill on besides the default mix (the gap gates are chosen on them
    alone): a body keyed every n frames; a hand as a full rig keys it, the wrist known on every frame (the
    arm gives it) and the fingers keyed every n frames or partly (``anyfill bench keys --wrist known``). A
    hand calibrated with its wrist in the gap keeps no correction on keyed fingers: the wrist's error there
    swamps theirs."""
    return MaskMix(0, 0, 0, 0, wrist=1) if skeleton == "hand" else MaskMix(0, 0, 0, 0, every=1)


class AnyOrderData(L.LightningDataModule):
    def __init__(self, cfg: AnyOrderTrainConfig):
        super().__init__()
        self.cfg = cfg
        self.stats: dict | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.stats is not None:
            return
        cfg = self.cfg
        mix = MaskMix(cfg.mix_inbetween, cfg.mix_keyframes, cfg.mix_cells, cfg.mix_pose, cfg.mix_every, cfg.mix_wrist)
        spec = cfg.features.for_skeleton(cfg.skeleton)  # what the model of this run reads of a window
        train_clips = load_clips(cfg.skeleton, "train", cfg.data_root, cfg.fps, speeds=cfg.speeds, reverse=cfg.reverse)
        conventions = RigConventions(cfg.twist_deg, cfg.hinge_deg, cfg.conventions_share)
        self.train_sampler = WindowSampler(train_clips, cfg.length, mix, spec=spec, conventions=conventions)
        self.stats = feature_stats(self.train_sampler, np.random.default_rng(cfg.data_seed))
        self.val, self.val_every = self.validation_batches()

    def validation_batches(self) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, torch.Tensor]]]:
        """The validation takes' windows, drawn once (seeded): with the default mix's masks (the logged
        validation) and keyed as the animator keys them (what calibration scores besides): every n frames, or for
        the hand, whose wrist a full rig's arm gives, with the wrist known on every frame (``MaskMix.wrist``)."""
        cfg = self.cfg
        spec = cfg.features.for_skeleton(cfg.skeleton)
        val_sampler = WindowSampler(load_clips(cfg.skeleton, "val", cfg.data_root, (30.0,)), cfg.length, spec=spec)
        every = WindowSampler(val_sampler.clips, cfg.length, keyed_as_animators_do(cfg.skeleton), spec=spec)
        return _fixed_batches(val_sampler, cfg, cfg.data_seed + 1), _fixed_batches(every, cfg, cfg.data_seed + 2)

    def train_dataloader(self):
        t = self.trainer
        rank, world = (t.global_rank, t.world_size) if t is not None else (0, 1)
        self.train_batches = _Batches(self.train_sampler, self.cfg.batch_size, self.cfg.steps_per_epoch,
                                      self.cfg.data_seed, self.cfg.variant, rank, world)
        self.train_batches.epoch = _starting_epoch(t)
        w = self.cfg.num_workers
        # workers are made anew for every epoch's iterator: that is how they learn the epoch (not persistent)
        return DataLoader(self.train_batches, batch_size=None, num_workers=w, persistent_workers=False,
                          prefetch_factor=4 if w > 0 else None, pin_memory=w > 0 and torch.cuda.is_available())

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=None, num_workers=0)


class Truth(NamedTuple):
    """A batch's ground truth as the losses use it (:meth:`AnyOrderModule.truth`)."""

    rotations: torch.Tensor  # (B, T, J, 3, 3) local
    offsets: torch.Tensor  # (B, T, J, 3), the moving joints' zeroed
    positions: torch.Tensor  # (B, T, J, 3), root-relative
    scale: torch.Tensor  # (B, 1, 1) skeleton size


class AnyOrderModule(L.LightningModule):
    def __init__(self, cfg: AnyOrderTrainConfig):
        super().__init__()
        self.save_hyperparameters(dataclasses.asdict(cfg))
        self.cfg = cfg
        self.schema = get_schema(cfg.skeleton)
        self.model = build_model(cfg)
        self.moving = list(self.schema.moving)
        self.top = top_joint(self.schema)

    def on_fit_start(self) -> None:
        # the statistics are a deterministic function of the training data and data_seed, so setting
        # them again on resume gives the same buffers the checkpoint holds
        dm = self.trainer.datamodule
        if dm is not None and dm.stats is not None and not self.cfg.init_from:
            self.model.set_stats(dm.stats)

    def on_train_epoch_start(self) -> None:
        # the epoch's batches are drawn from (seed, epoch): the loop makes the epoch's iterator (and its
        # workers) after this hook, so they draw this epoch's windows, also after a resume
        batches = getattr(self.trainer.datamodule, "train_batches", None)
        if batches is not None:
            batches.epoch = self.current_epoch

    def losses(self, b: dict[str, torch.Tensor], weighted: bool = False) -> dict[str, torch.Tensor]:
        """The loss terms and their weighted total; ``weighted``: the fitting terms weigh each window by
        :meth:`window_weights` (training, with ``relative_floor``), else every target cell alike."""
        out = self.model(b)
        tmask = b["target"]
        r_pred = sixd_to_matrix(out["rot6d"])
        truth = self.truth(b)
        r_true, offs, p_true, scale = truth
        w = self.window_weights(b, truth) if weighted and self.cfg.relative_floor > 0 else None

        def fitted(mask: torch.Tensor) -> torch.Tensor:  # a cell mask, weighted by its window where asked
            return mask if w is None else mask.to(w.dtype) * w.view(-1, *[1] * (mask.dim() - 1))

        cos = cos_angle_between(r_pred, r_true)
        # the likelihoods train the spreads only: with the mean in them, shrinking spreads scale its
        # gradient by kappa (1 / sigma^2) and drown the terms that fit the mean
        vm = masked_mean(von_mises_nll(cos.detach(), out["log_kappa"]), tmask)
        ang = masked_mean(angular_mse(cos), fitted(tmask))
        # the top joint turns everything below it: its error is every joint's global error
        top_ang = masked_mean(angular_mse(cos[..., self.top]), fitted(tmask[..., self.top]))
        mt = tmask[..., self.moving]
        std = self.model.pos_std
        pos_nll = masked_mean(
            gaussian_nll(b["pos"] / std, out["pos"].detach() / std, out["log_sigma"] - torch.log(std)).sum(-1), mt
        )
        pos_err = masked_mean(((b["pos"] - out["pos"]) / std).norm(dim=-1), fitted(mt))
        # forward kinematics relative to the root: known cells keep their true rotation, as at fill time
        r_mix = torch.where(b["known"][..., None, None], r_true, r_pred)
        p_pred = forward_kinematics(r_mix, offs, self.schema.parents)
        fk = masked_mean(((p_pred - p_true).norm(dim=-1) / scale),
                         fitted(tmask.any(-1, keepdim=True).expand_as(tmask)))
        # L2Q as the benchmark scores it: a joint's global rotation carries its ancestors' errors, and each
        # frame's error is a norm over joints (not a sum of squares: large-error frames do not dominate)
        parents = self.schema.parents
        cos_g = cos_angle_between(global_rotations(r_mix, parents), global_rotations(r_true, parents))
        l2q = masked_mean(torch.sqrt(quat_distance_sq(cos_g).sum(-1) + 1e-8), fitted(tmask.any(-1)))
        c = self.cfg
        total = (c.w_von_mises * vm + c.w_angular * ang + c.w_position * pos_nll + c.w_fk * fk + c.w_root * pos_err
                 + c.w_top_angle * top_ang + c.w_l2q * l2q)
        angle = masked_mean(torch.rad2deg(torch.arccos(cos.clamp(-1 + 1e-7, 1 - 1e-7))), tmask)
        return {"loss": total, "von_mises": vm, "angular": ang, "top_angular": top_ang, "pos_nll": pos_nll, "fk": fk,
                "pos_err": pos_err, "l2q": l2q, "angle_deg": angle}

    def truth(self, b: dict[str, torch.Tensor]) -> Truth:
        """What the losses and window errors compare a fill with: the true local rotations as matrices, the
        bone offsets with the moving joints' zeroed (root-relative forward kinematics), the true positions so
        posed, and each window's skeleton size."""
        r_true = sixd_to_matrix(b["rot6d"])
        offs = b["offsets"].clone()
        offs[:, self.moving] = 0.0
        offs = offs[:, None].expand(-1, r_true.shape[1], -1, -1)
        p_true = forward_kinematics(r_true, offs, self.schema.parents)
        scale = b["offsets"].norm(dim=-1).mean(-1)[:, None, None].clamp(min=1e-6)
        return Truth(r_true, offs, p_true, scale)

    def window_weights(self, b: dict[str, torch.Tensor], truth: Truth) -> torch.Tensor:
        """(B,) weights, mean 1 over the windows with targets: ``1 / (e + relative_floor * mean(e))``, ``e``
        the curve's error in the window (the model's baseline, no network: mean over target frames of the
        joints' position error, root-relative plus the root's, in skeleton sizes, as L2P measures)."""
        frames = b["target"].any(-1)
        e = self.window_errors(b, b["base6d"], b["basepos"], truth)
        has = frames.any(1)
        if not has.any():  # nothing to fit: every window alike
            return torch.ones_like(e)
        w = 1.0 / (e + (self.cfg.relative_floor * e[has].mean()).clamp(min=1e-6))
        return (w / w[has].mean()).detach()

    def window_errors(self, b: dict[str, torch.Tensor], rot6d: torch.Tensor, pos: torch.Tensor,
                      truth: Truth | None = None) -> torch.Tensor:
        """(B,) each window's error of a fill (``rot6d``, moving ``pos``; known cells keep their truth): mean
        over target frames of the joints' position error, root-relative plus the moving joints', in skeleton
        sizes, as L2P measures. ``truth``: :meth:`truth` of ``b`` when the caller has it."""
        r_true, offs, p_true, scale = truth if truth is not None else self.truth(b)
        frames = b["target"].any(-1)
        r = torch.where(b["known"][..., None, None], r_true, sixd_to_matrix(rot6d))
        p = forward_kinematics(r, offs, self.schema.parents)
        err = (p - p_true).norm(dim=-1).mean(-1) + (pos - b["pos"]).norm(dim=-1).mean(-1)
        return (err / scale[..., 0] * frames).sum(1) / frames.sum(1).clamp(min=1)

    def training_step(self, batch, batch_idx):
        ls = self.losses(batch, weighted=True)
        self.log_dict({f"train/{k}": v for k, v in ls.items()}, prog_bar=False, batch_size=1)
        self.log("loss", ls["loss"], prog_bar=True, logger=False, batch_size=1)
        return ls["loss"]

    def validation_step(self, batch, batch_idx):
        ls = self.losses(batch)
        # under DDP each rank validates its share of the batches: the logged value is their mean
        self.log_dict({f"val/{k}": v for k, v in ls.items()}, prog_bar=False, batch_size=1, sync_dist=True)
        self.log("val_angle", ls["angle_deg"], prog_bar=True, logger=False, batch_size=1, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        estimate = self.trainer.estimated_stepping_batches  # infinite with no step or epoch limit (max_time ends it)
        total = max(int(estimate), 1) if math.isfinite(estimate) else None
        warm = self.cfg.warmup_steps if total is None else min(self.cfg.warmup_steps, total // 2)

        def schedule(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if total is None:  # a run of unknown length: no decay, the learning rate stays at its peak
                return 1.0
            progress = (step - warm) / max(total - warm, 1)
            return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _build(cfg: AnyOrderTrainConfig):
    check_settings(cfg)
    return AnyOrderModule(cfg), AnyOrderData(cfg)


TASK = Task(
    name="anyorder",
    config_cls=AnyOrderTrainConfig,
    build=_build,
    named_configs={
        "tiny": {"d_model": 64, "n_enc_layers": 1, "n_dec_layers": 1, "steps_per_epoch": 20, "val_windows": 64},
    },
    default_trainer={"max_epochs": 40, "gradient_clip_val": 1.0, "log_every_n_steps": 50},
    after_fit=export,
    check=check_settings,
)
