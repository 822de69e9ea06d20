"""Training runs that stop and go on (real tiny runs on the real capture): unreadable checkpoints stop a
rerun instead of silently starting over, an export is never replaced by an earlier step's model, a run
killed mid-epoch resumes from its timed checkpoint, progress lines without a terminal, settings checked
when they are given."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
import torch

from training.train import UnreadableCheckpoints, main


def _args(run: Path, data_root: Path, *extra: str) -> list[str]:
    return ["anyorder", "--named", "tiny", "skeleton=hand", "fps=30", "val_windows=8", "batch_size=4",
            f"data_root={data_root}", "trainer.threads=1", "trainer.progress=false", "--run-dir", str(run), *extra]


def _step(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=False)["global_step"]


@pytest.mark.slow
@pytest.mark.data
def test_unreadable_checkpoints_stop_the_rerun_and_the_export_is_kept(tmp_path, data_root, capsys):
    run = tmp_path / "run"
    ckpts, export = run / "checkpoints", run / "export" / "hand-query.safetensors"
    assert main(_args(run, data_root, "trainer.max_steps=3")) == 0
    exported = export.read_bytes()
    # every checkpoint truncated: the rerun stops, naming each file and --fresh, and writes nothing
    names = sorted(p.name for p in ckpts.iterdir())
    for p in ckpts.iterdir():
        p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(UnreadableCheckpoints) as e:
        main(_args(run, data_root, "trainer.max_steps=5"))
    assert all(str(ckpts / n) in str(e.value) for n in names) and "--fresh" in str(e.value)
    assert sorted(p.name for p in ckpts.iterdir()) == names  # no last-v1.ckpt, nothing renamed
    assert export.read_bytes() == exported
    # started over on purpose: the old checkpoints are moved aside, and the export of step 3 stays; the new
    # model of 2 steps goes beside it, said so
    capsys.readouterr()
    assert main(_args(run, data_root, "trainer.max_steps=2", "--fresh")) == 0
    err = capsys.readouterr().err
    assert "moved to" in err and "step 3" in err and "hand-query-step2.safetensors" in err, err
    assert export.read_bytes() == exported and (export.parent / "hand-query-step2.safetensors").is_file()
    assert _step(ckpts / "last.ckpt") == 2
    assert len(list(run.glob("checkpoints-before-*/*.ckpt"))) == len(names)
    assert len(list(run.glob("checkpoints-before-*/tb/events.*"))) == 1  # the old run's TensorBoard logs went too
    assert len(list(run.glob("tb/events.*"))) == 1
    # only the newest file unreadable (killed while writing): resume from the one before, the bad file set
    # aside and named, never a last-v1.ckpt
    (ckpts / "last.ckpt").write_bytes(b"\x00" * 100)
    assert main(_args(run, data_root, "trainer.max_steps=4")) == 0
    err = capsys.readouterr().err
    assert "unreadable checkpoint" in err and "last.ckpt.unreadable" in err and "(step 2)" in err, err
    assert _step(ckpts / "last.ckpt") == 4 and not list(ckpts.glob("last-v*.ckpt"))


@pytest.mark.slow
@pytest.mark.data
def test_a_run_resumed_from_a_step_checkpoint_keeps_the_newest_two(tmp_path, data_root, capsys):
    """The step checkpoint a run resumed from (its last.ckpt unreadable) is kept until two newer ones are
    written, then goes as any other: the newest two stepNNNNNNNN.ckpt remain (Lightning kept it for good)."""
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    epochs = ["steps_per_epoch=2", "trainer.checkpoint_every_minutes=0"]
    assert main(_args(run, data_root, *epochs, "trainer.max_epochs=2")) == 0
    assert sorted(p.name for p in ckpts.glob("step*.ckpt")) == ["step00000002.ckpt", "step00000004.ckpt"]
    (ckpts / "last.ckpt").write_bytes(b"\x00" * 100)  # killed while writing it
    capsys.readouterr()
    assert main(_args(run, data_root, *epochs, "trainer.max_epochs=3")) == 0
    assert f"resuming from {ckpts / 'step00000004.ckpt'} (step 4)" in capsys.readouterr().err
    assert sorted(p.name for p in ckpts.glob("step*.ckpt")) == ["step00000004.ckpt", "step00000006.ckpt"]
    (ckpts / "last.ckpt").unlink()
    assert main(_args(run, data_root, *epochs, "trainer.max_epochs=5")) == 0
    assert f"resuming from {ckpts / 'step00000006.ckpt'} (step 6)" in capsys.readouterr().err
    assert sorted(p.name for p in ckpts.glob("step*.ckpt")) == ["step00000008.ckpt", "step00000010.ckpt"]
    assert _step(ckpts / "last.ckpt") == 10


@pytest.mark.slow
@pytest.mark.data
def test_a_run_killed_mid_epoch_resumes_from_its_timed_checkpoint(tmp_path, data_root):
    """A checkpoint every few seconds within an epoch (trainer.checkpoint_every_minutes): a run killed
    (SIGKILL) in its first, long epoch resumes past step 0, from a checkpoint younger than the interval plus
    a step; its output is not a terminal, so it prints progress lines instead of a bar."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "anyfill.cli", "train", *_args(run, data_root, "steps_per_epoch=100000",
           "trainer.checkpoint_every_minutes=0.03")]
    cmd[cmd.index("trainer.progress=false")] = "trainer.progress=true"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    log = tmp_path / "train.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            timed = run / "checkpoints" / "timed.ckpt"
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None:
                if timed.is_file() and time.time() - timed.stat().st_mtime > 1.0 and "steps/s" in log.read_text():
                    break
                time.sleep(0.2)
            assert timed.is_file(), log.read_text()
            killed_at = time.time()
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "anyfill train: epoch 0 step" in text and "steps/s" in text, text
    assert "it/s]" not in text  # no progress bar
    age = killed_at - timed.stat().st_mtime
    assert age < 0.03 * 60 + 5, age
    saved = _step(timed)
    assert saved > 0 and not (run / "checkpoints" / "last.ckpt").exists()
    r = subprocess.run([*cmd[:-1], "trainer.checkpoint_every_minutes=0", f"trainer.max_steps={saved + 2}"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming from {timed} (step {saved})" in r.stderr, r.stderr
    assert _step(run / "checkpoints" / "last.ckpt") == saved + 2


@pytest.mark.parametrize(("setting", "says"), [
    ("skeleton=hnd", "skeleton must be 'hand' or 'body', got 'hnd'"),
    ("variant=pairs", "variant must be 'query' or 'triples'"),
    ("frame=sideways", "frame must be one of"),
    ("trainer.checkpoint_every_minutes=-1", "checkpoint_every_minutes must be >= 0"),
])
def test_settings_are_checked_when_given(setting, says, capsys):
    from anyfill.cli import main as cli

    t0 = time.time()
    assert cli(["train", "anyorder", setting, "--print-config"]) == 2
    assert says in capsys.readouterr().err
    assert cli(["train", "anyorder", "skeleton=body", "--print-config"]) == 0
    assert tomllib.loads(capsys.readouterr().out)["skeleton"] == "body"
    assert time.time() - t0 < 60


@pytest.mark.slow
@pytest.mark.data
def test_a_run_folder_is_checked_before_it_is_touched_and_restored_with_its_own_settings(tmp_path, data_root):
    """A folder whose checkpoints cannot be checked against the command (no config.json; a run of another model) is
    refused, its files as they were (config.json was rewritten first, then the load failed: the original command
    could no longer resume it); --restore-from goes on with the run's own settings; a run with no step or epoch
    limit (max_time ends it) trains (its schedule's length was infinite: OverflowError)."""
    run = tmp_path / "run"
    assert main(_args(run, data_root, "trainer.max_steps=2")) == 0
    cfg = run / "config.json"
    saved = cfg.read_text()
    cfg.unlink()
    with pytest.raises(ValueError, match="holds checkpoints but no config.json"):
        main(_args(run, data_root, "d_model=32", "trainer.max_steps=3"))
    assert not cfg.exists()
    cfg.write_text(saved.replace('"model": "anyorder"', '"model": "pixels"'))
    with pytest.raises(ValueError, match="holds a run of the model 'pixels', not 'anyorder'"):
        main(_args(run, data_root, "trainer.max_steps=3"))
    assert '"pixels"' in cfg.read_text()
    cfg.write_text(saved)
    assert main(["anyorder", "--restore-from", str(run), "trainer.max_steps=3"]) == 0
    assert _step(run / "checkpoints" / "last.ckpt") == 3
    endless = tmp_path / "endless"
    assert main(_args(endless, data_root, "trainer.max_epochs=-1", "trainer.max_time=00:00:00:02")) == 0
    assert _step(endless / "checkpoints" / "last.ckpt") > 0


@pytest.mark.slow
@pytest.mark.data
def test_a_finished_run_run_again_keeps_its_export_and_its_validation_scores(tmp_path, data_root, capsys):
    """Run again with the command that finished it, a run resumes at its last step, trains nothing and has no
    validation scores of its own: its export, which holds that very model, is kept with its card (the card's
    validation scores were wiped, its command replaced)."""
    run = tmp_path / "run"
    export = run / "export" / "hand-query.safetensors"
    settings = ("steps_per_epoch=3", "trainer.max_epochs=1")  # an epoch's end: validated
    assert main(_args(run, data_root, *settings)) == 0
    card = export.with_suffix(".json").read_text()
    assert json.loads(card)["training"]["val"]
    capsys.readouterr()
    assert main(_args(run, data_root, *settings)) == 0
    assert "already holds this run's model of step 3: kept as it is" in capsys.readouterr().out
    assert export.with_suffix(".json").read_text() == card
