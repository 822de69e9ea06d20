"""Bad settings of ``anyfill bench inbetween|keys`` and ``anyfill train anyorder`` are refused before any work
starts: exit status 2 and one line naming the option or setting and its valid values, never a traceback. No
benchmark or training runs here: the work itself is replaced by a function that fails the test if reached."""

from __future__ import annotations

import typing

import numpy as np
import pytest
from cli_support import refused

from anyfill.cli import main as cli
from training.bench import inbetween, keys
from training.inbetween.config import MAX_CONTEXT, MIN_LENGTH, AnyOrderTrainConfig, check_settings
from training.motion import files


@pytest.fixture()
def no_work(monkeypatch):
    """Benchmarks and training that fail the test if they start."""

    def started(*args, **kwargs):
        raise AssertionError("the work started before the settings were checked")

    monkeypatch.setattr(inbetween, "run", started)
    monkeypatch.setattr(keys, "run", started)
    monkeypatch.setattr("training.train.fit", started)


# --- anyfill bench inbetween / keys -------------------------------------------------------------------------------

BENCH = ["bench", "inbetween", "--skeleton", "body", "--method", "interp"]
KEYS = ["bench", "keys", "--skeleton", "hand", "--method", "interp"]


def test_the_gap_range_comes_from_the_protocol() -> None:
    assert inbetween.MAX_GAP == inbetween.WINDOW - inbetween.N_CONTEXT - 1 == 54
    assert len(inbetween.protocol_known(inbetween.MAX_GAP)) == inbetween.WINDOW  # the longest gap fills the window
    inbetween.check_gaps([1, inbetween.MAX_GAP])
    for bad in (0, -5, inbetween.MAX_GAP + 1):
        with pytest.raises(ValueError, match=f"from 1 to {inbetween.MAX_GAP}"):
            inbetween.check_gaps([5, bad])


@pytest.mark.parametrize("gap", ["-5", "0", "55"])
def test_bench_inbetween_refuses_a_gap_the_window_does_not_hold(gap, capsys, no_work) -> None:
    refused([*BENCH, "--gaps", "5", gap], capsys, "--gaps", "from 1 to 54", "65-frame window", f"got {gap}")


def test_the_key_spacing_range_comes_from_the_window() -> None:
    known, frames = keys.keyed_every(inbetween.WINDOW - 1)  # keys at the first and the last frame
    assert known.sum() == 2 and len(frames) == inbetween.WINDOW - 2
    for bad in (1, inbetween.WINDOW, 0):
        with pytest.raises(ValueError, match=f"from 2 .* to {inbetween.WINDOW - 1}"):
            keys.keyed_every(bad)


@pytest.mark.parametrize("every", ["65", "1", "-3"])
def test_bench_keys_refuses_a_spacing_the_window_does_not_hold(every, capsys, no_work) -> None:
    refused([*KEYS, "--every", "5", every], capsys, "--every", "from 2", "to 64", f"got {every}")


@pytest.mark.parametrize("base", [BENCH, KEYS])
def test_bench_refuses_a_json_output_that_cannot_be_written(base, tmp_path, capsys, no_work) -> None:
    refused([*base, "--json", str(tmp_path)], capsys, "--json", str(tmp_path), "is a folder")
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "result.json"
    refused([*base, "--json", str(out)], capsys, "--json", "is a file, not a folder")


def test_a_json_output_in_a_folder_yet_to_be_made_is_fine(tmp_path) -> None:
    files.check_output(tmp_path / "new" / "deeper" / "result.json")
    files.check_output(tmp_path / "result.json")


@pytest.mark.parametrize("base", [BENCH, KEYS])
def test_bench_resolves_the_baseline_and_method_before_scoring(base, capsys, no_work) -> None:
    refused([*base, "--baseline", "nosuch"], capsys, "--baseline nosuch", "unknown method", "interp")
    refused([*base[:-1], "nosuch"], capsys, "--method nosuch", "unknown method")


def test_bench_refuses_a_model_of_another_skeleton_before_scoring(capsys, no_work) -> None:
    refused([*BENCH[:-1], "hand"], capsys, "--method hand", "hand skeleton, not body")


def test_bench_inbetween_record_needs_a_model(capsys, no_work) -> None:
    refused([*BENCH, "--record"], capsys, "--record", "interp is a baseline")


@pytest.mark.parametrize("base", [BENCH, KEYS])
def test_bench_refuses_missing_data_and_bad_perturbations(base, tmp_path, capsys, no_work) -> None:
    refused([*base, "--data", str(tmp_path / "nosuch.bvh")], capsys, "--data", "nosuch.bvh")
    refused([*base, "--perturb-conventions", "200"], capsys, "--perturb-conventions", "[0, 180]", "200")
    refused([*base, "--perturb-conventions", "10", "--perturb-seed", "-1"], capsys, "--perturb-seed", ">= 0")


# --- anyfill train anyorder ----------------------------------------------------------------------------------------

TRAIN_REFUSED = [
    ("n_heads=7", ["n_heads must divide d_model=192", "1, 2, 3, 4, 6, 8", "got 7"]),
    ("d_model=0", ["d_model must be a whole number >= 1"]),
    ("n_dec_layers=0", ["n_dec_layers must be a whole number >= 1"]),
    ("n_enc_layers=-1", ["n_enc_layers must be a whole number >= 0"]),
    ("batch_size=0", ["batch_size must be a whole number >= 1", "got 0"]),
    ("fps=", ["fps must be a non-empty list of finite numbers > 0"]),
    ("fps=30,0", ["fps must be a non-empty list of finite numbers > 0"]),
    ("speeds=-1", ["speeds must be a non-empty list of finite numbers > 0"]),
    ("lr=nan", ["lr must be a finite number > 0", "nan"]),
    ("lr=0", ["lr must be a finite number > 0"]),
    ("weight_decay=-0.1", ["weight_decay must be a finite number >= 0"]),
    ("dropout=2", ["dropout must be in [0, 1)", "got 2.0"]),
    ("dropout=1", ["dropout must be in [0, 1)"]),
    ("length=0", [f"length must be a whole number >= {MIN_LENGTH}", "got 0"]),
    (f"length={MIN_LENGTH - 1}", [f"length must be a whole number >= {MIN_LENGTH}"]),
    ("key_gate=-1", ["key_gate must be a finite number >= 0"]),
    ("base_velocity=-0.5", ["base_velocity must be a finite number >= 0"]),
    ("velocity_memory=inf", ["velocity_memory must be a finite number >= 0"]),
    ("warmup_steps=-1", ["warmup_steps must be a whole number >= 0"]),
    ("steps_per_epoch=0", ["steps_per_epoch must be a whole number >= 1"]),
    ("w_fk=-1", ["w_fk must be a finite number >= 0"]),
    ("w_l2q=nan", ["w_l2q must be a finite number >= 0"]),
    ("mix_pose=1.5", ["mix_pose must be a share in [0, 1]", "1.5"]),
    ("mix_every=-0.1", ["mix_every must be a share in [0, 1]"]),
    ("conventions_share=2", ["conventions_share must be in [0, 1]"]),
    ("twist_deg=nan", ["twist_deg must be in [0, 180] degrees"]),
    ("data_seed=-1", ["data_seed must be a whole number >= 0"]),
    ("val_windows=0", ["val_windows must be a whole number >= 1"]),
    ("num_workers=-1", ["num_workers must be a whole number >= 0"]),
    ("features=1", ["features is a group of settings", "base_velocity", "features='1'"]),
    ("trainer.precision=banana", ["trainer.precision must be one of Lightning's", "32-true", "bf16-mixed", "banana"]),
    ("trainer.precision=48", ["trainer.precision must be one of Lightning's"]),
    ("trainer.max_time=forever", ["trainer.max_time must be DD:HH:MM:SS", "forever"]),
    ("trainer.max_time=1:00:00", ["trainer.max_time must be DD:HH:MM:SS"]),
    ("trainer.max_epochs=-2", ["trainer.max_epochs must be a whole number >= -1"]),
    ("trainer.max_steps=-5", ["trainer.max_steps must be a whole number >= -1"]),
    ("trainer.seed=-1", ["trainer.seed must be a whole number in [0, 4294967295]"]),
    ("trainer.accelerator=gpus", ["trainer.accelerator must be one of auto, cpu, gpu"]),
    ("trainer.devices=0", ["trainer.devices must be auto, a count >= 1"]),
    ("trainer.devices=two", ["trainer.devices must be auto"]),
    ("trainer.num_nodes=0", ["trainer.num_nodes must be a whole number >= 1"]),
    ("trainer.threads=-1", ["trainer.threads must be a whole number >= 0"]),
    ("trainer.log_every_n_steps=-1", ["trainer.log_every_n_steps must be a whole number >= 0"]),
    ("trainer.val_every_n_epochs=0", ["trainer.val_every_n_epochs must be a whole number >= 1"]),
    ("trainer.gradient_clip_val=-1", ["trainer.gradient_clip_val must be a finite number >= 0"]),
]


@pytest.mark.parametrize(("setting", "says"), TRAIN_REFUSED, ids=[s for s, _ in TRAIN_REFUSED])
def test_train_print_config_refuses_a_bad_setting(setting, says, capsys) -> None:
    refused(["train", "anyorder", setting, "--print-config"], capsys, *says)


def test_train_refuses_all_zero_weights_and_shares(capsys) -> None:
    weights = [f"{w}=0" for w in ("w_von_mises", "w_angular", "w_position", "w_fk", "w_root")]
    refused(["train", "anyorder", *weights, "--print-config"], capsys, "at least one loss weight", "w_angular")
    mixes = [f"mix_{m}=0" for m in ("inbetween", "keyframes", "cells", "pose")]
    refused(["train", "anyorder", *mixes, "--print-config"], capsys, "at least one mask share", "mix_every")


@pytest.mark.parametrize("setting", ["trainer.precision=64", "trainer.precision=32", "trainer.precision=bf16-mixed",
                                     "trainer.precision=16-mixed", "trainer.max_time=00:12:00:00",
                                     "trainer.devices=0,1", "trainer.devices=-1", "trainer.max_epochs=-1",
                                     f"length={MIN_LENGTH}", "n_heads=8", "dropout=0", "fps=30",
                                     "mix_every=1", "n_enc_layers=0", "twist_deg=180"])
def test_train_print_config_accepts_the_edges(setting, capsys) -> None:
    assert cli(["train", "anyorder", setting, "--print-config"]) == 0, capsys.readouterr().err


def test_a_real_run_is_refused_before_it_starts(tmp_path, capsys, no_work) -> None:
    """Not only --print-config: the training command refuses the same settings before its run folder is made."""
    refused(["train", "anyorder", "--named", "tiny", "n_heads=7", "--run-dir", str(tmp_path / "run")], capsys,
             "n_heads must divide d_model=64", "1, 2, 4, 8, 16, 32, 64")
    refused(["train", "anyorder", "trainer.max_time=forever", "--run-dir", str(tmp_path / "run")], capsys,
             "trainer.max_time")
    assert not (tmp_path / "run").exists()


def test_restore_from_refuses_what_is_not_a_run_of_the_model(tmp_path, capsys, no_work) -> None:
    """--restore-from's errors are usage errors like the others: status 2 and one line naming the folder."""
    missing, empty, garbage, other = (tmp_path / n for n in ("missing", "empty", "garbage", "other"))
    for d in (empty, garbage, other):
        d.mkdir()
    (garbage / "config.json").write_text("garbage")
    (other / "config.json").write_text('{"model": "pixels", "config": {}, "trainer": {}}')
    refused(["train", "anyorder", "--restore-from", str(missing)], capsys, f"--restore-from {missing}: no such folder")
    refused(["train", "anyorder", "--restore-from", str(empty)], capsys, f"--restore-from {empty}: no run there")
    refused(["train", "anyorder", "--restore-from", str(garbage)], capsys, "not a run's config.json")
    refused(["train", "anyorder", "--restore-from", str(other)], capsys,
             "a run of the model 'pixels', not 'anyorder'; give --restore-from the folder of a run of this model")
    refused(["train", "anyorder", "--restore-from", str(other), "--run-dir", str(empty)], capsys,
             "--run-dir (a new run) or --restore-from (an old one), not both")


def test_the_precisions_and_accelerators_are_lightnings() -> None:
    """What check_trainer accepts is what Lightning's Trainer accepts (read here, not in --print-config, which
    must not import Lightning)."""
    from lightning.fabric.plugins.precision import precision as lp
    from lightning.pytorch.accelerators import AcceleratorRegistry

    from training.train import ACCELERATORS, PRECISIONS

    lightning = {*typing.get_args(lp._PRECISION_INPUT_STR), *typing.get_args(lp._PRECISION_INPUT_STR_ALIAS),
                 *typing.get_args(lp._PRECISION_INPUT_INT)}
    assert set(PRECISIONS) == lightning
    assert set(ACCELERATORS) == {*AcceleratorRegistry.available_accelerators(), "auto", "gpu"}


def test_the_shortest_length_is_what_the_training_masks_need() -> None:
    from training.inbetween.datasets import MaskMix, sample_masks

    assert MIN_LENGTH == MAX_CONTEXT + 2
    mix = MaskMix(1.0, 0.0, 0.0, 0.0)  # the in-between pattern only: up to MAX_CONTEXT context frames
    known, target = sample_masks(np.random.default_rng(0), 400, MIN_LENGTH, 3, mix)
    assert target.any(axis=(1, 2)).all() and known[:, :MAX_CONTEXT].all(axis=(1, 2)).any()
    with pytest.raises(ValueError):
        sample_masks(np.random.default_rng(0), 400, MIN_LENGTH - 1, 3, mix)


def test_the_shipped_models_training_settings_pass() -> None:
    """The checks are not stricter than the settings the shipped models were trained with."""
    from training.inbetween.checkpoint import read_card, shipped_models_dir
    from training.inbetween.features import FeatureSpec

    for name in ("body", "hand"):
        c = dict(read_card(shipped_models_dir() / f"{name}.safetensors")["training"]["config"])
        c["features"] = FeatureSpec(**c["features"])
        c["fps"], c["speeds"] = tuple(c["fps"]), tuple(c["speeds"])
        check_settings(AnyOrderTrainConfig(**c))
    check_settings(AnyOrderTrainConfig())
