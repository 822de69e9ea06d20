"""The settings of the STCFormer report's models (``anyfill train sttformer|stcformer|stcformer-ar|convstgat|
stacformer``) and their check, in a module without torch or NumPy: each network's config, the optimisation and data
settings the family shares, and the task configs made of both. The networks (:mod:`.sttformer`, :mod:`.stcformer`,
:mod:`.convstgat`, :mod:`.stacformer`) take their configs from here, and ``anyfill train MODEL --print-config``
imports only this module to refuse a bad setting as training would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.checks import at_least, boolean, divides, is_whole, whole, within

N_JOINTS = 22  # the Bandai body's joints, the data's (training.motion.skeleton.BODY; tests check they agree)


@dataclass
class STTFormerConfig:
    n_in: int = 10  # observed frames
    n_out: int = 25  # predicted frames
    n_joints: int = 22  # joints per frame
    in_features: int = 3  # numbers per joint (x, y, z)
    hidden: int = 32  # embedding width
    blocks: int = 2  # tuple-attention blocks
    heads: int = 1  # attention heads
    tuple_len: int = 2  # frames per tuple; must divide n_in
    mlp_ratio: int = 2  # MLP width as a multiple of hidden
    dropout: float = 0.0  # dropout
    expand_kernel: int = 3  # kernel of the temporal convolution that expands n_in frames to n_out


@dataclass
class STCFormerConfig:
    n_in: int = 10  # observed frames
    n_out: int = 25  # predicted frames
    n_joints: int = 22  # joints per frame
    hidden: int = 32  # embedding width
    blocks: int = 2  # encoder blocks (and decoder blocks unless decoder_blocks is set)
    decoder_blocks: int = 0  # 0: same as blocks
    heads: int = 1  # attention heads
    mlp_ratio: int = 1  # MLP width as a multiple of hidden
    dropout: float = 0.0  # dropout
    expand_kernel: int = 3  # kernel of the temporal convolution that expands n_in frames to n_out
    autoregressive: bool = False  # frame by frame with start flags (STCFormer-AR), not all frames at once
    # block layout; the defaults give the report's parameter counts (23k at hidden 32); the wider layout
    # (decoder self-attention, output projections, MLP ratio 2, positional embeddings) has twice as many
    decoder_self_attention: bool = False  # decoder blocks: causal self- and cross-attention (false: cross only)
    out_proj: bool = False  # a linear output projection after each criss-cross attention
    positional: bool = False  # learned frame and joint embeddings added to the inputs


@dataclass
class ConvSTGATConfig:
    n_in: int = 10  # observed frames
    n_out: int = 25  # predicted frames
    n_joints: int = 22  # joints per frame
    hidden: int = 32  # embedding width
    blocks: int = 2  # graph-attention + temporal-convolution blocks
    heads: int = 1  # attention heads
    kernel_t: int = 3  # temporal convolution kernel
    dropout: float = 0.0  # dropout
    expand_kernel: int = 3  # kernel of the temporal convolution that expands n_in frames to n_out
    skeleton: str = "body"  # the graph: parents of the schema's joints


@dataclass
class STACFormerConfig:
    n_in: int = 10  # observed frames
    n_out: int = 25  # predicted frames
    n_joints: int = 22  # joints per frame
    hidden: int = 32  # embedding width
    encoder_blocks: int = 1  # tuple-attention (STT) encoder blocks
    blocks: int = 2  # decoder (STC) blocks
    heads: int = 1  # attention heads
    tuple_len: int = 2  # frames per tuple; must divide n_in
    mlp_ratio: int = 2  # MLP width as a multiple of hidden
    dropout: float = 0.0  # dropout
    expand_kernel: int = 3  # kernel of the temporal convolution that expands n_in frames to n_out


@dataclass
class TrainSettings:
    """Optimisation and data settings shared by the family (the report's starting point)."""

    lr: float = 1e-4  # Adam's learning rate (the report's starting runs: 1e-4)
    weight_decay: float = 1e-5  # Adam's weight decay
    amsgrad: bool = True  # use the AMSGrad variant of Adam
    lr_decay: float = 1.0  # multiplied into the learning rate after every epoch
    batch_size: int = 256  # windows per batch
    train_stride: int = 2  # frames between training windows
    eval_stride: int = 5  # frames between validation / test windows
    val_every: int = 10  # every 10th training file (sorted) is validation data
    data_fraction: float = 1.0  # share of training batches per epoch (fresh random ones) and of validation windows
    max_files: int = 0  # 0: every file of the split (a positive count: smoke runs and tests)
    data_root: str = ""  # folder with splits.json ("" = the default ../shared/data)
    flag_weight: float = 1.0  # autoregressive model: weight of the L2 loss on the start flags
    score_train_windows: int = 2000  # after training: training windows scored like the test (evenly spaced)


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


def check_settings(cfg: Any) -> None:
    """Refuse, before the capture is read, the settings of a model of the family that would fail later (a
    traceback from torch or NumPy) or silently train something else than asked, naming the setting."""
    _check_training(cfg)
    _check_network(cfg)


def _check_training(cfg: TrainSettings) -> None:
    """The optimiser and the windows (:class:`TrainSettings`, shared by the family)."""
    at_least(cfg, "lr", strict=True)
    at_least(cfg, "weight_decay")
    boolean(cfg, "amsgrad")
    at_least(cfg, "lr_decay", strict=True, meaning=" (1: no decay)")
    for name in ("batch_size", "train_stride", "eval_stride"):
        whole(cfg, name, 1)
    if not is_whole(cfg.val_every) or cfg.val_every < 0 or cfg.val_every == 1:
        raise ValueError("val_every must be 0 (no validation files) or a whole number >= 2 (1 would make every "
                         f"training file validation data), got {cfg.val_every!r}")
    within(cfg, "data_fraction", 0, 1, what="a share ", open_low=True)
    whole(cfg, "max_files", 0, " (0: every file)")
    at_least(cfg, "flag_weight", meaning=" (0: the start flags are not fitted)")
    whole(cfg, "score_train_windows", 0, " (0: every training window)")


def _check_network(cfg: Any) -> None:
    """The network's sizes, whichever model of the family (its own settings only where it has them)."""
    for name in ("n_in", "n_out", "hidden", "blocks", "heads", "mlp_ratio"):
        if hasattr(cfg, name):
            whole(cfg, name, 1)
    for name in ("decoder_blocks", "encoder_blocks"):
        if hasattr(cfg, name):
            whole(cfg, name, 0, " (0: as many as blocks)" if name == "decoder_blocks" else " (0: none)")
    if cfg.n_joints != N_JOINTS:
        raise ValueError(f"n_joints must be {N_JOINTS} (the Bandai body's joints: the data's), "
                         f"got {cfg.n_joints!r}")
    if getattr(cfg, "in_features", 3) != 3:
        raise ValueError(f"in_features must be 3 (x, y, z: the data's), got {cfg.in_features!r}")
    if getattr(cfg, "skeleton", "body") != "body":
        raise ValueError(f"skeleton must be 'body' (the data's graph), got {cfg.skeleton!r}")
    criss_cross = isinstance(cfg, (STCFormerConfig, STACFormerConfig))  # half the channels per direction
    divides(cfg, "heads", "hidden", 2 if criss_cross else 1, " (each head reads an equal share of the channels)")
    if hasattr(cfg, "tuple_len"):
        whole(cfg, "tuple_len", 1)
        divides(cfg, "tuple_len", "n_in", why=" (the observed frames are grouped in tuples)")
    within(cfg, "dropout", 0, 1, open_high=True)
    for name in ("expand_kernel", "kernel_t"):
        v = getattr(cfg, name, 1)
        if not is_whole(v) or v < 1 or v % 2 == 0:
            raise ValueError(f"{name} must be an odd whole number >= 1 (a centred convolution), got {v!r}")
    bools = ("autoregressive", "decoder_self_attention", "out_proj", "positional")
    boolean(cfg, *(name for name in bools if hasattr(cfg, name)))
