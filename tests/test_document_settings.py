"""Bad settings of the documents' models (lift, pixels, perceiver-ae, video-classifier and the STCFormer family) and
of ``anyfill bench prediction`` are refused before any work starts: exit status 2 and one line naming the setting
and its valid values, never a traceback, NumPy's words or a run that silently trains nonsense. No training runs here:
``--print-config`` resolves the settings as training does, and the work itself fails the test if reached."""

from __future__ import annotations

import subprocess
import sys

import pytest
from cli_support import refused

from anyfill.cli import main as cli
from training import tasks  # noqa: F401 - registers the built-in models
from training.train import get_task, resolve_configs

FAMILY = ("sttformer", "stcformer", "stcformer-ar", "convstgat", "stacformer")
MODELS = ("lift", "pixels", "perceiver-ae", "video-classifier", *FAMILY)


@pytest.fixture()
def no_work(monkeypatch):
    """Training and the prediction benchmark fail the test if they start."""

    def started(*args, **kwargs):
        raise AssertionError("the work started before the settings were checked")

    monkeypatch.setattr("training.train.fit", started)
    monkeypatch.setattr("training.documents.stcformer.bench.run", started)


# (model, settings, what the one line says): each says the setting's name and what is valid
REFUSED = [
    ("lift", "hidden=-5", "hidden must be a whole number >= 1, got -5"),
    ("lift", "blocks=-1", "blocks must be a whole number >= 0"),
    ("lift", "dropout=1", "dropout must be in [0, 1), got 1.0"),
    ("lift", "lr=0", "lr must be a finite number > 0"),
    ("lift", "beta2=1", "beta2 must be in [0, 1)"),
    ("lift", "lr_step_size=0", "lr_step_size must be a whole number >= 1"),
    ("lift", "lr_step_interval=batch", "lr_step_interval must be 'epoch' or 'step', got 'batch'"),
    ("lift", "lr_gamma=0", "lr_gamma must be a finite number > 0"),
    ("lift", "batch_size=0", "batch_size must be a whole number >= 1"),
    ("lift", "frame_stride=0", "frame_stride must be a whole number >= 1"),
    ("lift", "cameras_per_pose=0", "cameras_per_pose must be a whole number >= 1, got 0"),
    ("lift", "test_cameras_per_pose=-1", "test_cameras_per_pose must be a whole number >= 1"),
    ("lift", "data_seed=-1", "data_seed must be a whole number >= 0"),
    ("lift", "val_every=0", "val_every must be a whole number >= 2"),
    ("lift", "val_every=1", "val_every must be a whole number >= 2 (1 would make every training file validation"),
    ("lift", "max_files=-2", "max_files must be a whole number >= 0 (0: every file), got -2"),
    ("pixels", "variant=pairs", "variant must be 'query' or 'triples'"),
    ("pixels", "d_model=0", "d_model must be a whole number >= 1"),
    ("pixels", "n_heads=0", "n_heads must be a whole number >= 1"),
    ("pixels", "n_heads=3", "n_heads must divide d_model=64"),
    ("pixels", "n_layers=0", "n_layers must be a whole number >= 1"),
    ("pixels", "dropout=-0.1", "dropout must be in [0, 1)"),
    ("pixels", "lr=-1", "lr must be a finite number > 0"),
    ("pixels", "weight_decay=-1", "weight_decay must be a finite number >= 0"),
    ("pixels", "batch_size=0", "batch_size must be a whole number >= 1"),
    ("pixels", "--named tiny batch_size=100", "batch_size must be at most the 64 training images"),
    ("pixels", "max_targets=-1", "max_targets must be a whole number >= 0"),
    ("pixels", "max_train=-5", "max_train must be a whole number >= 0 (0: every training image), got -5"),
    ("pixels", "val_images=0", "val_images must be a whole number from 1 to 8999"),
    ("pixels", "val_images=9000", "val_images must be a whole number from 1 to 8999"),
    ("perceiver-ae", "data=no/such/folder", "data must be mnist, sticks or a folder", "no/such/folder"),
    ("perceiver-ae", "frame_size=16", "frame_size must be at least 28 pixels a side with data=mnist"),
    ("perceiver-ae", "frame_size=0", "frame_size must be one whole number >= 1 (a square) or two"),
    (
        "perceiver-ae",
        "--named tiny patch_hwd=40,8,2",
        "frame_size must be at least patch_hwd's patch size 40x8, got 32x32",
    ),
    ("perceiver-ae", "num_frames=-1", "num_frames must be a whole number >= 0"),
    ("perceiver-ae", "num_frames=5", "num_frames must be 0 or >= present + future + (exposures - 1) x window_inc"),
    ("perceiver-ae", "batch_size=0", "batch_size must be a whole number >= 1"),
    ("perceiver-ae", "num_workers=-1", "num_workers must be a whole number >= 0"),
    ("perceiver-ae", "num_prefetch=0", "num_prefetch must be a whole number >= 1"),
    ("perceiver-ae", "overfit=-1", "overfit must be a whole number >= 0"),
    ("perceiver-ae", "n_train=0", "n_train must be a whole number >= 1"),
    ("perceiver-ae", "n_val=0", "n_val must be a whole number >= 1"),
    ("perceiver-ae", "patch_hwd=0,8,2", "patch_hwd must be 3 whole numbers >= 1", "(0, 8, 2)"),
    ("perceiver-ae", "patch_hwd=8,8", "patch_hwd must be 3 whole numbers >= 1"),
    ("perceiver-ae", "latent_dims=0,128", "latent_dims must be 2 whole numbers >= 1"),
    ("perceiver-ae", "nheads=0", "nheads must be a whole number >= 1, got 0"),
    ("perceiver-ae", "keydim=0", "keydim must be a whole number >= 1"),
    ("perceiver-ae", "mhadropout=1", "mhadropout must be in [0, 1)"),
    ("perceiver-ae", "n_enc_blocks=0", "n_enc_blocks must be a whole number >= 1"),
    ("perceiver-ae", "n_latent_blocks=-1", "n_latent_blocks must be a whole number >= 0"),
    ("perceiver-ae", "n_dec_blocks=0", "n_dec_blocks must be a whole number >= 1"),
    ("perceiver-ae", "k_mu_space=0,8", "k_mu_space must be 2 whole numbers >= 1"),
    ("perceiver-ae", "k_mu_time=4", "k_mu_time must be 2 whole numbers >= 1"),
    ("perceiver-ae", "present=1", "present must be a whole number >= 2 (the patch depth"),
    ("perceiver-ae", "future=0", "future must be a whole number >= 2"),
    ("perceiver-ae", "future_selection_probability=1.5", "future_selection_probability must be in [0, 1]"),
    ("perceiver-ae", "alpha=-0.5", "alpha must be in [0, 1]"),
    ("perceiver-ae", "p_droptoken=0", "p_droptoken must be a share in (0, 1]"),
    ("perceiver-ae", "exposures=0", "exposures must be a whole number >= 1"),
    ("perceiver-ae", "window_inc=-1", "window_inc must be a whole number >= 0"),
    ("perceiver-ae", "blind_iters=2", "blind_iters must be < exposures=2"),
    ("perceiver-ae", "lr=0", "lr must be a finite number > 0"),
    ("perceiver-ae", "num_iters=-1", "num_iters must be a whole number >= 0"),
    ("perceiver-ae", "ckpt_period=-1", "ckpt_period must be a whole number >= 0"),
    ("perceiver-ae", "seed=-1", "seed must be a whole number >= 0"),
    ("perceiver-ae", "profile_steps=-1", "profile_steps must be a whole number >= 0"),
    ("video-classifier", "data=no/such/folder", "data must be mnist, sticks or a folder"),
    ("video-classifier", "data=mnist size=16", "size must be at least 28 pixels a side with data=mnist"),
    ("video-classifier", "frames=0", "frames must be a whole number >= 1, got 0"),
    ("video-classifier", "size=0", "size must be a whole number >= 1, got 0"),
    ("video-classifier", "stride=0", "stride must be a whole number >= 1, got 0"),
    ("video-classifier", "max_files=-1", "max_files must be a whole number >= 0"),
    ("video-classifier", "overfit=-1", "overfit must be a whole number >= 0"),
    ("video-classifier", "batch_size=0", "batch_size must be a whole number >= 1"),
    ("video-classifier", "num_workers=-1", "num_workers must be a whole number >= 0"),
    ("video-classifier", "width=-8", "width must be a whole number >= 1, got -8"),
    ("video-classifier", "blocks=0", "blocks must be a whole number from 1 to 8"),
    ("video-classifier", "blocks=9", "blocks must be a whole number from 1 to 8", "got 9"),
    ("video-classifier", "head=lstm", "head must be one of 'pool', 'cross', 'self'"),
    ("video-classifier", "n_queries=0", "n_queries must be a whole number >= 1, got 0"),
    ("video-classifier", "n_cross=0", "n_cross must be a whole number >= 1"),
    ("video-classifier", "n_self=-1", "n_self must be a whole number >= 0"),
    ("video-classifier", "head=self n_self=0", "n_self must be a whole number >= 1 (the self head"),
    ("video-classifier", "attn_dim=-1", "attn_dim must be a whole number >= 0"),
    ("video-classifier", "nheads=0", "nheads must be a whole number >= 1"),
    ("video-classifier", "head_dim=-1", "head_dim must be a whole number >= 0"),
    ("video-classifier", "cross_heads=0", "cross_heads must be a whole number >= 1"),
    ("video-classifier", "ffn_mult=0", "ffn_mult must be a whole number >= 1"),
    ("video-classifier", "dropout=1", "dropout must be in [0, 1)"),
    ("video-classifier", "lr=0", "lr must be a finite number > 0"),
    ("video-classifier", "blocks=2", "size=64 and frames=16 with blocks=2 give a 16x32x32 feature map", "head=pool"),
    ("sttformer", "tuple_len=3", "tuple_len must divide n_in=10", "one of 1, 2, 5, 10; got 3"),
    ("sttformer", "in_features=2", "in_features must be 3"),
    ("stacformer", "tuple_len=0", "tuple_len must be a whole number >= 1"),
    ("stacformer", "encoder_blocks=-1", "encoder_blocks must be a whole number >= 0"),
    ("stcformer", "decoder_blocks=-1", "decoder_blocks must be a whole number >= 0"),
    ("stcformer", "heads=3", "2 x heads must divide hidden=32", "one of 1, 2, 4, 8, 16; got 3"),
    ("stcformer-ar", "heads=32", "2 x heads must divide hidden=32"),
    ("convstgat", "heads=3", "heads must divide hidden=32", "one of 1, 2, 4, 8, 16, 32; got 3"),
    ("convstgat", "kernel_t=4", "kernel_t must be an odd whole number >= 1"),
    ("convstgat", "skeleton=hand", "skeleton must be 'body'"),
]
# every model of the STCFormer family shares these settings
REFUSED += [
    (model, setting, says)
    for model in FAMILY
    for setting, says in [
        ("hidden=-5", "hidden must be a whole number >= 1, got -5"),
        ("n_in=0", "n_in must be a whole number >= 1"),
        ("n_out=0", "n_out must be a whole number >= 1, got 0"),
        ("n_joints=17", "n_joints must be 22 (the Bandai body's joints"),
        ("blocks=0", "blocks must be a whole number >= 1"),
        ("mlp_ratio=0" if model != "convstgat" else "kernel_t=0", "must be"),
        ("dropout=1", "dropout must be in [0, 1)"),
        ("expand_kernel=2", "expand_kernel must be an odd whole number >= 1"),
        ("lr=0", "lr must be a finite number > 0"),
        ("weight_decay=-1", "weight_decay must be a finite number >= 0"),
        ("lr_decay=0", "lr_decay must be a finite number > 0 (1: no decay)"),
        ("batch_size=0", "batch_size must be a whole number >= 1"),
        ("train_stride=0", "train_stride must be a whole number >= 1, got 0"),
        ("eval_stride=0", "eval_stride must be a whole number >= 1"),
        ("val_every=1", "val_every must be 0 (no validation files) or a whole number >= 2"),
        ("val_every=-1", "val_every must be 0 (no validation files) or a whole number >= 2"),
        ("data_fraction=1.5", "data_fraction must be a share in (0, 1], got 1.5"),
        ("data_fraction=-0.1", "data_fraction must be a share in (0, 1], got -0.1"),
        ("data_fraction=0", "data_fraction must be a share in (0, 1]"),
        ("max_files=-2", "max_files must be a whole number >= 0 (0: every file), got -2"),
        ("flag_weight=-1", "flag_weight must be a finite number >= 0"),
        ("score_train_windows=-1", "score_train_windows must be a whole number >= 0"),
    ]
]


def _id(case: tuple) -> str:
    return f"{case[0]}:{case[1]}"


@pytest.mark.parametrize("case", REFUSED, ids=[_id(c) for c in REFUSED])
def test_print_config_refuses_a_bad_setting(case, capsys) -> None:
    model, settings, *says = case
    name = settings.split()[-1].split("=")[0]
    refused(["train", model, *settings.split(), "--print-config"], capsys, name, *says)


@pytest.mark.parametrize("model", MODELS)
def test_the_defaults_and_every_named_config_pass_the_models_check(model, capsys) -> None:
    """The checks are not stricter than the settings the models ship with."""
    task = get_task(model)
    assert task.check is not None, f"{model} has no check of its settings"
    for named in [None, *task.named_configs]:
        cfg, _ = resolve_configs(task, None, named, [])
        task.check(cfg)
        assert cli(["train", model, *(["--named", named] if named else []), "--print-config"]) == 0
        assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("model", "setting"),
    [
        ("lift", "hidden=-5"),
        ("pixels", "max_train=-5"),
        ("perceiver-ae", "nheads=0"),
        ("video-classifier", "width=-8"),
        ("stcformer", "n_out=0"),
    ],
)
def test_a_real_run_is_refused_before_it_starts(model, setting, tmp_path, capsys, no_work) -> None:
    """Not only --print-config: the training command refuses the same settings before its run folder is made."""
    refused(["train", model, setting, "--run-dir", str(tmp_path / "run")], capsys, setting.split("=")[0])
    assert not (tmp_path / "run").exists()


def test_print_config_of_the_documents_models_imports_no_torch() -> None:
    """Their checks live beside their configs in modules without torch, so --print-config stays fast (the STCFormer
    family's imported torch and Lightning: 4.5 s, now 0.13 s)."""
    code = (
        "import sys, contextlib, io\nfrom anyfill.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):\n"
        "    for m in ('lift', 'pixels', 'perceiver-ae', 'video-classifier',\n"
        "              'sttformer', 'stcformer', 'stcformer-ar', 'convstgat', 'stacformer'):\n"
        "        assert main(['train', m, '--print-config']) == 0, m\n"
        "        assert main(['train', m, 'batch_size=0', '--print-config']) == 2, m\n"
        "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]"


# --- what the checks assume of the models ---------------------------------------------------------------------


def test_the_checks_limits_are_the_models() -> None:
    from training.documents import mnist
    from training.documents.pixels.config import N_IMAGES
    from training.documents.stcformer import config as stcformer_config
    from training.documents.video_classifier import config as vc
    from training.documents.video_classifier.model import R2Plus1DBackbone, VideoClassifierConfig
    from training.motion.skeleton import BODY

    assert N_IMAGES == mnist.N_TRAIN
    assert BODY.n_joints == stcformer_config.N_JOINTS
    assert VideoClassifierConfig().max_positions == vc.MAX_POSITIONS
    R2Plus1DBackbone(1, 4, vc.MAX_BLOCKS)
    with pytest.raises(ValueError):
        R2Plus1DBackbone(1, 4, vc.MAX_BLOCKS + 1)


@pytest.mark.parametrize(("frames", "size", "blocks"), [(16, 64, 8), (8, 32, 5), (7, 33, 3), (16, 64, 2), (3, 9, 1)])
def test_the_feature_map_the_check_computes_is_the_cnns(frames, size, blocks) -> None:
    import torch

    from training.documents.video_classifier.config import feature_map
    from training.documents.video_classifier.model import R2Plus1DBackbone

    with torch.no_grad():
        f = R2Plus1DBackbone(1, 2, blocks).eval()(torch.zeros(1, 1, frames, size, size))
    assert feature_map(frames, size, blocks) == (f.shape[2], f.shape[3]) and f.shape[3] == f.shape[4]


# --- the video classifier's overfit clips ------------------------------------------------------------------------


def test_overfit_clips_are_taken_class_by_class() -> None:
    import torch

    from training.documents.video_data import class_by_class

    class Clips(torch.utils.data.Dataset):
        labels = [0, 0, 0, 0, 1, 1, 2, 2, 2]

        def __len__(self) -> int:
            return len(self.labels)

    assert class_by_class(Clips(), 3) == [0, 4, 6]
    assert class_by_class(Clips(), 5) == [0, 1, 4, 5, 6]
    assert class_by_class(torch.utils.data.Subset(Clips(), [4, 5, 0]), 2) == [0, 2]
    assert class_by_class(torch.utils.data.TensorDataset(torch.zeros(5)), 3) == [0, 1, 2]  # no labels: the first


def test_the_tiny_video_classifier_overfits_clips_of_several_classes(data_root) -> None:
    """The named config ``tiny`` overfits a few clips: they were the first windows of one file, all of one class,
    so a constant answer scored 1.0. Now each is of another class."""
    from training.documents.video_classifier.task import ClassifierData

    task = get_task("video-classifier")
    cfg, _ = resolve_configs(task, None, "tiny", [f"data_root={data_root}"])
    data = ClassifierData(cfg)
    labels = [data.train_set.dataset.labels[i] for i in data.train_set.indices]
    assert data.val_set is data.train_set and len(labels) == cfg.overfit == 4
    assert len(set(labels)) == 4


# --- anyfill bench prediction -------------------------------------------------------------------------------------

PREDICTION = ["bench", "prediction"]


@pytest.mark.parametrize(
    ("option", "says"),
    [
        (["--repeats", "0"], ["--repeats must be a whole number >= 1", "got 0"]),
        (["--stride", "-5"], ["--stride must be a whole number >= 1", "got -5"]),
        (["--stride", "0"], ["--stride must be a whole number >= 1"]),
        (["--threads", "-1"], ["--threads must be a whole number >= 0"]),
        (["--methods", "zero", "no/such/run"], ["--methods no/such/run: not zero or a run folder"]),
        (["--attention", "no/such/run"], ["--attention no/such/run: not a run folder"]),
        (["--data-root", "no/such/folder"], ["--data-root no/such/folder: no such folder"]),
    ],
)
def test_bench_prediction_refuses_bad_options_before_scoring(option, says, capsys, no_work) -> None:
    refused([*PREDICTION, *option], capsys, *says)


def test_bench_prediction_refuses_a_json_output_that_cannot_be_written(tmp_path, capsys, no_work) -> None:
    refused([*PREDICTION, "--json", str(tmp_path)], capsys, "--json", "is a folder")
