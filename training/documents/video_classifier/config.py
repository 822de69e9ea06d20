"""The settings of ``anyfill train video-classifier`` and their check, in a module without torch:
``--print-config`` imports only this one to refuse a bad setting as training would."""

from __future__ import annotations

from dataclasses import dataclass

from training.checks import at_least, boolean, is_whole, one_of, whole, within
from training.documents.video_checks import check_source

MAX_BLOCKS = 8  # R(2+1)D-18's basic blocks (model.R2Plus1DBackbone keeps the first ``blocks``)
MAX_POSITIONS = 16  # the attention heads' position embeddings per axis (model.VideoClassifierConfig.max_positions)


@dataclass
class VideoClassifierTaskConfig:
    # data
    data: str = "sticks"  # sticks, mnist (no labels: only for smoke tests) or a folder of class folders
    data_root: str | None = None  # folder holding the data sets; none: ../shared/data
    frames: int = 16  # frames per clip
    size: int = 64  # frames are resized to this square size (pixels)
    stride: int = 2  # take every stride-th frame of the capture / video
    max_files: int = 0  # sticks: > 0 uses this many files per split (quick runs)
    overfit: int = 0  # > 0: train and validate on N clips only, class by class (a clip of each class in turn)
    batch_size: int = 16  # clips per batch
    num_workers: int = 1  # data loader processes
    # model
    width: int = 16  # channels of the first (2+1)D block
    blocks: int = 8  # (2+1)D convolution blocks
    head: str = "cross"  # pool, cross (learned queries) or self (attention over all tokens)
    n_queries: int = 128  # cross head: learned queries
    n_cross: int = 1  # cross head: cross-attention groups (each 1 cross-attention + n_self self-attention)
    n_self: int = 1  # self-attention layers per cross-attention (cross head), or in all (self head)
    attn_dim: int = 0  # attention width; 0: 8 x width, the full CNN's output channels (the document's 512)
    nheads: int = 8  # self-attention heads
    head_dim: int = 0  # width of a head; 0: attn_dim // nheads (64 at the document's sizes)
    cross_heads: int = 1  # cross-attention heads
    ffn_mult: int = 4  # feed-forward width / attention width
    geglu: bool = True  # GEGLU feed-forward (Perceiver's); false: GELU
    dropout: float = 0.1  # dropout in the head
    # optimiser
    lr: float = 1e-3  # AdamW's learning rate
    weight_decay: float = 1e-4  # AdamW's weight decay


def check_settings(cfg: VideoClassifierTaskConfig) -> None:
    """Refuse, before any clip is read, the settings that would fail later (a traceback from torch or NumPy) or
    silently train something else than asked, naming the setting and its valid values."""
    _check_data(cfg)
    _check_model(cfg)
    at_least(cfg, "lr", strict=True)
    at_least(cfg, "weight_decay")


def _check_data(cfg: VideoClassifierTaskConfig) -> None:
    """The clips: where they come from, how many frames, how large, how many at a time."""
    whole(cfg, "size", 1)
    check_source(cfg, "size", (cfg.size, cfg.size))
    for name in ("frames", "stride", "batch_size"):
        whole(cfg, name, 1)
    whole(cfg, "max_files", 0, " (0: every file)")
    whole(cfg, "overfit", 0, " (0: every clip)")
    whole(cfg, "num_workers", 0, " (0: clips read in the training process)")


def _check_model(cfg: VideoClassifierTaskConfig) -> None:
    """The CNN (the first ``blocks`` of R(2+1)D-18's 8) and the attention head's sizes."""
    whole(cfg, "width", 1)
    if not is_whole(cfg.blocks) or not 1 <= cfg.blocks <= MAX_BLOCKS:
        raise ValueError(
            f"blocks must be a whole number from 1 to {MAX_BLOCKS} (the first blocks of R(2+1)D-18's "
            f"{MAX_BLOCKS}; the document's rows keep 8, 7, 6 or 4), got {cfg.blocks!r}"
        )
    one_of(cfg, "head", ("pool", "cross", "self"))
    for name in ("n_queries", "n_cross", "nheads", "cross_heads", "ffn_mult"):
        whole(cfg, name, 1)
    whole(
        cfg,
        "n_self",
        1 if cfg.head == "self" else 0,
        " (the self head is its self-attention layers)" if cfg.head == "self" else " (0: cross-attention only)",
    )
    whole(cfg, "attn_dim", 0, " (0: 8 x width)")
    whole(cfg, "head_dim", 0, " (0: attn_dim // nheads)")
    boolean(cfg, "geglu")
    within(cfg, "dropout", 0, 1, open_high=True)
    if cfg.head != "pool":
        t, side = feature_map(cfg.frames, cfg.size, cfg.blocks)
        if max(t, side) > MAX_POSITIONS:
            raise ValueError(
                f"size={cfg.size} and frames={cfg.frames} with blocks={cfg.blocks} give a {t}x{side}x{side} "
                f"feature map; the {cfg.head} head's position embeddings cover at most {MAX_POSITIONS} "
                "per axis: a smaller size, fewer frames, more blocks or head=pool"
            )


def feature_map(frames: int, size: int, blocks: int) -> tuple[int, int]:
    """(time, side) of the CNN's feature map: the stem halves the side, blocks 3, 5 and 7 (those kept) halve
    time and side (each stride-2 convolution rounds up)."""
    t, side = frames, -(-size // 2)
    for _ in range(sum(1 for i in (2, 4, 6) if i < blocks)):
        t, side = -(-t // 2), -(-side // 2)
    return t, side
