"""The settings of ``anyfill train lift`` and their check, in a module without torch or NumPy: ``anyfill train
lift --print-config`` imports only this one to refuse a bad setting as training would."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from training.checks import at_least, one_of, whole, within


@dataclass
class LiftTaskConfig:
    """Model, optimiser and data settings of ``anyfill train lift`` (network: the report's; schedule: ours,
    the report's is the named config ``report``)."""

    # the network (the report: 1024 wide, two residual blocks, dropout 0.5)
    hidden: int = 1024  # width of the network (the report: 1024)
    blocks: int = 2  # residual blocks (the report: 2)
    dropout: float = 0.5  # dropout in each block (the report: 0.5)
    # the optimiser (the report: Adam lr 0.1, betas (0.5, 0.999), StepLR(200, 0.3) per iteration, batch 32)
    lr: float = 1e-3  # Adam's learning rate (the report: 0.1)
    beta1: float = 0.5  # Adam's beta1 (the report: 0.5)
    beta2: float = 0.999  # Adam's beta2 (the report: 0.999)
    lr_step_size: int = 1  # StepLR: multiply the learning rate by lr_gamma every lr_step_size intervals
    lr_step_interval: str = "epoch"  # StepLR's interval: "epoch" or "step" (an optimiser step; the report's)
    lr_gamma: float = 0.8  # StepLR's factor (the report: 0.3 every 200 steps)
    batch_size: int = 256  # samples per batch (the report: 32)
    # the data (see lift_data): every frame_stride-th frame, each seen by cameras_per_pose random cameras
    frame_stride: int = 1  # training data: every frame_stride-th frame
    cameras_per_pose: int = 1  # training data: random virtual cameras per pose
    test_cameras_per_pose: int = 2  # test data: virtual cameras per pose (fixed by data_seed)
    data_seed: int = 0  # seeds the virtual cameras; independent of the training seed so the test set is fixed
    val_every: int = 10  # every val_every-th training file is validation data
    max_files: int = 0  # > 0: at most this many files per split (quick runs and tests)
    data_root: str | None = None  # folder holding splits.json; none: ../shared/data

    def model_config(self) -> Any:
        """The network's :class:`LiftConfig` (imported here: this module stays free of torch)."""
        from training.documents.lift.data import LIFT_JOINTS
        from training.documents.lift.model import LiftConfig

        return LiftConfig(n_joints=len(LIFT_JOINTS), hidden=self.hidden, blocks=self.blocks, dropout=self.dropout)


def check_settings(cfg: LiftTaskConfig) -> None:
    """Refuse, before any data is read, the settings that would fail later (a traceback from torch or NumPy) or
    silently train something else than asked (negative counts), naming the setting and its valid values."""
    whole(cfg, "hidden", 1)
    whole(cfg, "blocks", 0, " (0: no residual block)")
    within(cfg, "dropout", 0, 1, open_high=True)
    at_least(cfg, "lr", strict=True)
    for name in ("beta1", "beta2"):
        within(cfg, name, 0, 1, meaning=" (Adam's)", open_high=True)
    whole(cfg, "lr_step_size", 1)
    one_of(cfg, "lr_step_interval", ("epoch", "step"))
    at_least(cfg, "lr_gamma", strict=True)
    whole(cfg, "batch_size", 1)
    for name in ("frame_stride", "cameras_per_pose", "test_cameras_per_pose"):
        whole(cfg, name, 1)
    whole(cfg, "data_seed", 0)
    whole(cfg, "val_every", 2, " (1 would make every training file validation data)")
    whole(cfg, "max_files", 0, " (0: every file)")
