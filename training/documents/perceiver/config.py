"""The settings of ``anyfill train perceiver-ae`` and their check, in a module without torch: ``--print-config``
imports only this one to refuse a bad setting as training would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.checks import at_least, boolean, whole, wholes, within
from training.documents.video_checks import check_source, frame_sides


@dataclass
class PerceiverTaskConfig:
    """Settings of ``anyfill train perceiver-ae``; names follow the update's command-line options."""

    # data
    data: str = "mnist"  # mnist (moving MNIST), sticks (Bandai stick figures) or a folder of class folders
    data_root: str | None = None  # folder holding the data sets; none: ../shared/data
    num_frames: int = 0  # frames per clip; 0: present + future + (exposures - 1) * window_inc
    frame_size: tuple[int, int] = (64, 64)  # frame height, width (pixels); one number: a square
    batch_size: int = 16  # clips per batch
    num_workers: int = 1  # data loader processes
    num_prefetch: int = 4  # batches each loader worker keeps ready
    overfit: int = 0  # > 0: train (and validate) on the first N clips only
    n_train: int = 10000  # moving MNIST clips per epoch
    n_val: int = 256  # moving MNIST validation clips (from the MNIST test digits)
    # model
    patch_hwd: tuple[int, int, int] = (8, 8, 2)  # patch height, width and depth (frames)
    latent_dims: tuple[int, int] = (64, 128)  # number of latents, their width
    nheads: int = 4  # attention heads
    keydim: int = 32  # key width per head
    mhadropout: float = 0.0  # attention dropout
    n_enc_blocks: int = 1  # cross-attention encoder blocks (tokens into latents)
    n_latent_blocks: int = 2  # latent self-attention blocks
    distinct_latent: bool = False  # False: one latent block applied n_latent_blocks times; True: distinct blocks
    n_dec_blocks: int = 1  # decoder blocks (queries read the latents)
    k_mu_space: tuple[int, int] = (8, 8)  # Fourier bands, max resolution (patches) per spatial axis
    k_mu_time: tuple[int, int] = (4, 8)  # Fourier bands, max resolution (patch steps) in time
    # objective
    present: int = 8  # frames seen per exposure
    future: int = 4  # frames after the window to predict
    future_selection_probability: float = 0.5  # chance that each future patch is queried in training
    alpha: float = 0.5  # loss = alpha * present + (1 - alpha) * future (the update's: 1 -> only present)
    p_droptoken: float = 0.5  # expected fraction of input tokens kept per exposure (the update's meaning)
    no_re_droptoken: bool = False  # True: the same tokens are dropped at every exposure of a clip
    exposures: int = 2  # re-exposures per clip (the latent carries over)
    window_inc: int = 2  # frames the window moves between exposures
    blind_iters: int = 1  # first exposures whose loss is not counted
    # optimisation and loop (num_iters / ckpt_period set the trainer; 0 leaves trainer.* as given)
    lr: float = 1e-3  # AdamW's learning rate (the update's default)
    weight_decay: float = 0.01  # AdamW's weight decay
    num_iters: int = 0  # > 0: train this many steps instead of trainer.max_epochs
    ckpt_period: int = 0  # > 0: a checkpoint every this many steps
    cpu_only: bool = False  # train on the CPU even where a GPU is visible
    one_gpu: bool = False  # use the first GPU only
    seed: int = 0  # data seed (moving MNIST generation); the training seed is trainer.seed
    profile_steps: int = 3  # after training, profile this many steps into tb/profile (0: no trace)

    def model_config(self, channels: int = 1) -> Any:
        """The network's :class:`PerceiverAEConfig` (imported here: this module stays free of torch)."""
        from training.documents.perceiver.model import PerceiverAEConfig

        return PerceiverAEConfig(
            channels=channels,
            patch_hwd=tuple(self.patch_hwd),
            n_latents=self.latent_dims[0],
            dim=self.latent_dims[1],
            nheads=self.nheads,
            keydim=self.keydim,
            mhadropout=self.mhadropout,
            n_enc_blocks=self.n_enc_blocks,
            n_latent_blocks=self.n_latent_blocks,
            distinct_latent=self.distinct_latent,
            n_dec_blocks=self.n_dec_blocks,
            k_space=self.k_mu_space[0],
            mu_space=self.k_mu_space[1],
            k_time=self.k_mu_time[0],
            mu_time=self.k_mu_time[1],
        )

    def hw(self) -> tuple[int, int]:
        """Frame (height, width)."""
        return frame_sides(self, "frame_size")

    def clip_frames(self) -> int:
        return self.num_frames or self.present + self.future + (self.exposures - 1) * self.window_inc

    def check(self) -> None:
        """:func:`check_settings` of this config (the module checks it again when it is built)."""
        check_settings(self)


def check_settings(cfg: PerceiverTaskConfig) -> None:
    """Refuse, before any data is made, the settings that would fail later (a traceback from torch or NumPy),
    train on nothing or silently train something else than asked, naming the setting and its valid values."""
    _check_data(cfg)
    _check_model(cfg)
    _check_objective(cfg)
    at_least(cfg, "lr", strict=True)
    at_least(cfg, "weight_decay")
    whole(cfg, "num_iters", 0, " (0: trainer.max_epochs decides)")
    whole(cfg, "ckpt_period", 0, " (0: the trainer's checkpoints)")
    boolean(cfg, "cpu_only", "one_gpu")
    whole(cfg, "seed", 0)
    whole(cfg, "profile_steps", 0, " (0: no trace)")


def _check_data(cfg: PerceiverTaskConfig) -> None:
    """The clips: where they come from, how many and how large."""
    check_source(cfg, "frame_size", frame_sides(cfg, "frame_size"))
    whole(cfg, "num_frames", 0, " (0: present + future + (exposures - 1) x window_inc)")
    for name in ("batch_size", "num_prefetch", "n_train", "n_val"):
        whole(cfg, name, 1)
    whole(cfg, "num_workers", 0, " (0: clips made in the training process)")
    whole(cfg, "overfit", 0, " (0: every clip)")


def _check_model(cfg: PerceiverTaskConfig) -> None:
    """The network's sizes: every stack that reads or writes something has a layer; patches fit in a frame."""
    wholes(cfg, "patch_hwd", 3, 1, " (patch height, width and depth)")
    wholes(cfg, "latent_dims", 2, 1, " (latents, their width)")
    wholes(cfg, "k_mu_space", 2, 1, " (Fourier bands, resolution)")
    wholes(cfg, "k_mu_time", 2, 1, " (Fourier bands, resolution)")
    whole(cfg, "nheads", 1)
    whole(cfg, "keydim", 1)
    within(cfg, "mhadropout", 0, 1, open_high=True)
    whole(cfg, "n_enc_blocks", 1, " (the latents read the clip through them)")
    whole(cfg, "n_latent_blocks", 0, " (0: none)")
    boolean(cfg, "distinct_latent", "no_re_droptoken")
    whole(cfg, "n_dec_blocks", 1, " (the queries read the latents through them)")
    (ph, pw, _), (h, w) = cfg.patch_hwd, cfg.hw()
    if h < ph or w < pw:
        raise ValueError(f"frame_size must be at least patch_hwd's patch size {ph}x{pw}, got {h}x{w}")


def _check_objective(cfg: PerceiverTaskConfig) -> None:
    """Windows, exposures and the loss: each exposure's window and future lie in the clip, and one counts."""
    for name in ("present", "future"):
        whole(cfg, name, cfg.patch_hwd[2], " (the patch depth: the frames of one patch)")
    whole(cfg, "exposures", 1)
    whole(cfg, "window_inc", 0, " (0: every exposure sees the same window)")
    whole(cfg, "blind_iters", 0, " (0: every exposure counts)")
    if cfg.blind_iters >= cfg.exposures:
        raise ValueError(
            f"blind_iters must be < exposures={cfg.exposures} (some exposure must count), got {cfg.blind_iters}"
        )
    need = cfg.present + cfg.future + (cfg.exposures - 1) * cfg.window_inc
    if cfg.clip_frames() < need:
        raise ValueError(
            f"num_frames must be 0 or >= present + future + (exposures - 1) x window_inc = {need}, got {cfg.num_frames}"
        )
    within(cfg, "future_selection_probability", 0, 1)
    within(cfg, "alpha", 0, 1, meaning=" (1: only the present's loss, 0: only the future's)")
    within(cfg, "p_droptoken", 0, 1, what="a share ", meaning=" of the tokens kept", open_low=True)
