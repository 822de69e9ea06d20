"""``anyfill train`` where things go wrong: a diverged run exports nothing, an export whose card cannot be read
is never replaced, checkpoints damaged inside their tensor data are set aside, one run per run folder, Ctrl-C
saves the steps since the last checkpoint, --fresh keeps the old config, config files named in every error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import torch

from training.train import RunInUse, lock_run_dir, main, resume_checkpoint

TINY = ["d_model=32", "n_enc_layers=1", "n_dec_layers=1", "steps_per_epoch=5", "val_windows=8", "batch_size=4",
        "trainer.threads=1", "trainer.progress=false"]


def _args(run: Path, data_root: Path, *extra: str) -> list[str]:
    return ["anyorder", *TINY, "skeleton=hand", f"data_root={data_root}", "--run-dir", str(run), *extra]


# --- 1. export ---------------------------------------------------------------------------------------------

def test_an_export_whose_card_cannot_be_read_is_never_replaced(tmp_path, capsys):
    from training.inbetween.export import export_path

    cfg = types.SimpleNamespace(skeleton="hand", variant="query")
    path = tmp_path / "export" / "hand-query.safetensors"
    path.parent.mkdir()
    path.write_bytes(b"weights")
    assert export_path(cfg, tmp_path, 7).name == "hand-query-step7.safetensors"  # no card at all
    assert "unknown step count" in capsys.readouterr().err
    card = {"format": "anyfill-model/1", "training": {"steps": "ten"}}
    path.with_suffix(".json").write_text(json.dumps(card))
    assert export_path(cfg, tmp_path, 7).name == "hand-query-step7.safetensors"
    assert "hand-query-step7.safetensors" in capsys.readouterr().err
    card["training"]["steps"] = 5  # a known, smaller step count: replaced
    path.with_suffix(".json").write_text(json.dumps(card))
    assert export_path(cfg, tmp_path, 7) == path
    card["training"]["steps"] = 9
    path.with_suffix(".json").write_text(json.dumps(card))
    assert export_path(cfg, tmp_path, 7).name == "hand-query-step7.safetensors"


def test_a_model_with_nan_weights_is_not_exported(tmp_path):
    from training.train import check_finite

    model = torch.nn.Linear(2, 2)
    check_finite(model, tmp_path)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="weight holds NaN|NaN or infinite values \\(weight\\)"):
        check_finite(model, tmp_path)


# --- 2. checkpoints damaged inside their tensor data ----------------------------------------------------------

def _ckpt(path: Path, step: int) -> Path:
    torch.save({"global_step": step, "state_dict": {"w": torch.ones(20000)}, "optimizer_states": []}, path)
    return path


@pytest.mark.parametrize("damage", ["zip header", "nan data"])
def test_a_checkpoint_damaged_inside_its_tensor_data_is_set_aside(tmp_path, damage, capsys):
    old, last = _ckpt(tmp_path / "step00000002.ckpt", 2), _ckpt(tmp_path / "last.ckpt", 4)
    data = bytearray(last.read_bytes())
    if damage == "zip header":  # the local-file header of the tensor's data: fails only when the data is read
        at = data.index(b"PK\x03\x04", data.index(b"data.pkl") + 1)
        data[at:at + 4] = b"XXXX"
    else:  # 0xff bytes inside the tensor data: loads, as NaN
        at = len(data) // 2
        data[at:at + 20000] = b"\xff" * 20000
    last.write_bytes(bytes(data))
    steps: dict[Path, int] = {}
    assert resume_checkpoint(tmp_path, steps) == old and steps == {old: 2}
    assert (tmp_path / "last.ckpt.unreadable").is_file() and not last.exists()
    assert "unreadable checkpoint" in capsys.readouterr().err


# --- 3. one run per run folder --------------------------------------------------------------------------------

def test_a_second_run_in_the_same_folder_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    held = lock_run_dir(run)
    try:
        t0 = time.time()
        with pytest.raises(RunInUse, match=f"{run} is in use by another run \\(pid {os.getpid()}\\)"):
            main(["anyorder", *TINY, "--run-dir", str(run)])
        assert time.time() - t0 < 30
    finally:
        held.close()
    lock_run_dir(run).close()  # the lock goes with its holder


# --- 6. config files ------------------------------------------------------------------------------------------

def test_config_files_apply_in_order_and_errors_name_the_file(tmp_path, capsys):
    from anyfill.cli import main as cli

    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text("d_model = 48\nlr = 0.002\n")
    b.write_text("d_model = 96\n")
    assert cli(["train", "anyorder", "--config", str(a), "--config", str(b), "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "d_model = 96" in out and "lr = 0.002" in out
    for name, text in [("list.json", "[1, 2]"), ("bad.toml", "d_model = = 3"), ("bad.json", "{oops"),
                       ("arr.toml", "")]:
        f = tmp_path / name
        f.write_text(text)
        rc = cli(["train", "anyorder", "--config", str(f), "--print-config"])
        err = capsys.readouterr().err
        if name == "arr.toml":  # an empty file is an empty table: no settings
            assert rc == 0
            continue
        assert rc == 2 and str(f) in err and "Traceback" not in err, err


# --- 1, 5, 6 in real tiny runs --------------------------------------------------------------------------------

@pytest.mark.slow  # three real training runs: about 30 s
@pytest.mark.data
def test_a_diverged_run_exports_nothing_and_fresh_keeps_the_old_config(tmp_path, data_root, capsys):
    from anyfill.cli import main as cli

    run = tmp_path / "run"
    export = run / "export" / "hand-query.safetensors"
    assert main(_args(run, data_root, "trainer.max_steps=2")) == 0
    exported, config = export.read_bytes(), (run / "config.json").read_text()
    # a run folder's config.json that is garbage: the error names it
    (run / "config.json").write_text("garbage")
    assert cli(["train", *_args(run, data_root, "trainer.max_steps=3")]) == 2
    assert f"{run / 'config.json'}: not a run's config.json" in capsys.readouterr().err
    (run / "config.json").write_text(config)
    # started over, diverging to NaN: nothing exported (status 2), the checkpoints kept, the old run's
    # checkpoints and config.json set aside together
    assert cli(["train", *_args(run, data_root, "trainer.max_steps=3", "lr=1e30", "warmup_steps=0",
                                 "trainer.gradient_clip_val=0", "--fresh")]) == 2
    err = capsys.readouterr().err
    assert "NaN or infinite" in err and "nothing was written" in err, err
    assert export.read_bytes() == exported and not list(export.parent.glob("*-step*"))
    assert (run / "checkpoints" / "last.ckpt").is_file()
    aside = next(run.glob("checkpoints-before-*"))
    assert (aside / "config.json").read_text() == config and (aside / "last.ckpt").is_file()


# --- 4. Ctrl-C ------------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.data
def test_ctrl_c_saves_the_steps_since_the_last_checkpoint(tmp_path, data_root):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "anyfill.cli", "train",
           *_args(run, data_root, "steps_per_epoch=100000", "trainer.checkpoint_every_minutes=0.02")]
    log = tmp_path / "train.log"
    timed = run / "checkpoints" / "timed.ckpt"
    with log.open("wb") as out:
        # as from a terminal: a job started in the background of a non-interactive shell (CI) inherits SIGINT
        # ignored, and Python then installs no Ctrl-C handler at all
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, OMP_NUM_THREADS="1"),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.time() + 240
            while time.time() < deadline and proc.poll() is None and not timed.is_file():
                time.sleep(0.2)
            assert timed.is_file(), log.read_text()
            time.sleep(1.5)  # steps past the timed checkpoint
            proc.send_signal(signal.SIGINT)
            rc = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert rc == 130 and "anyfill: interrupted" in text, text
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    timed_step = torch.load(timed, map_location="cpu", weights_only=False)["global_step"]
    assert last["global_step"] > timed_step, (last["global_step"], timed_step)
    assert f"saved {run / 'checkpoints' / 'last.ckpt'}" in text and not list(run.glob("checkpoints/*.tmp"))


# the command, with a second Ctrl-C during the save of last.ckpt and a third while Python exits (where a
# KeyboardInterrupt is printed as a traceback, "Exception ignored in atexit callback")
_MORE_CTRL_C = """
import atexit, os, signal, sys, time
import lightning.pytorch as pl

save = pl.Trainer.save_checkpoint

def saving(trainer, path, *args, **kwargs):
    if str(path).endswith("last.ckpt.tmp"):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)
        atexit.register(lambda: (os.kill(os.getpid(), signal.SIGINT), time.sleep(0.5)))
    return save(trainer, path, *args, **kwargs)

pl.Trainer.save_checkpoint = saving
from anyfill.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.data
def test_more_ctrl_c_while_an_interrupted_run_ends_change_nothing(tmp_path, data_root):
    """Once the run is interrupted, more Ctrl-C (during the save of last.ckpt, while the process exits) end it as
    the first did: one message, status 130, no traceback, a whole last.ckpt and no partial file."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-c", _MORE_CTRL_C, "train",
           *_args(run, data_root, "steps_per_epoch=100000", "trainer.checkpoint_every_minutes=0.01")]
    timed = run / "checkpoints" / "timed.ckpt"
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and not timed.is_file():
            time.sleep(0.1)
        assert timed.is_file(), proc.communicate()[0]
        proc.send_signal(signal.SIGINT)
        text = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and text.count("anyfill: interrupted") == 1, text
    assert "Traceback" not in text and "KeyboardInterrupt:" not in text, text
    assert f"saved {run / 'checkpoints' / 'last.ckpt'}" in text
    assert torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] > 0
    assert sorted(p.name for p in run.glob("checkpoints/*")) == ["last.ckpt", "timed.ckpt"]


def test_ctrl_c_while_training_waits_for_the_step_under_way(tmp_path):
    """A Ctrl-C during a step stops the run at the step's end (the checkpoint then saved is never an optimizer
    step half applied); a second Ctrl-C stops it at once; the handler is Python's own again after the run."""
    from training.train import _run_callbacks

    _, on_interrupt = _run_callbacks(tmp_path)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # Python's own, as from a terminal
    try:
        on_interrupt.on_train_start(None, None)
        os.kill(os.getpid(), signal.SIGINT)  # mid-step: noted, not raised
        time.sleep(0.05)
        assert on_interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            on_interrupt.on_train_batch_end(None, None, None, None, 0)
        with pytest.raises(KeyboardInterrupt):  # a second one: at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
        on_interrupt.teardown(None, None, "fit")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        # a data loader's worker (a forked process) inherits the handler: there a Ctrl-C ends it at once, silently
        on_interrupt.requested = False
        on_interrupt.on_train_start(None, None)
        child = os.fork()
        if child == 0:  # the worker: exit 0 only if the Ctrl-C raised KeyboardInterrupt and nothing was noted
            try:
                on_interrupt._defer(signal.SIGINT, None)
            except KeyboardInterrupt:
                os._exit(0 if not on_interrupt.requested else 2)
            os._exit(1)
        assert os.waitpid(child, 0)[1] == 0 and not on_interrupt.requested
        on_interrupt.teardown(None, None, "fit")
    finally:
        signal.signal(signal.SIGINT, before)


def test_a_checkpoints_random_state_loads_where_only_weights_may_and_restores_every_generator(tmp_path):
    """The random state every run's checkpoints carry reads with ``torch.load(weights_only=True)``, as the benches
    load a run's checkpoints (NumPy's state as an array refused every one), and brings back torch's, NumPy's and
    Python's generators; a checkpoint of the earlier form (NumPy's tuple) still restores."""
    import random

    import numpy as np

    from training.train import _run_callbacks

    rng, _ = _run_callbacks(tmp_path)
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    np.random.standard_normal()  # a cached Gaussian in NumPy's state too
    checkpoint: dict = {}
    rng.on_save_checkpoint(None, None, checkpoint)
    torch.save(checkpoint, tmp_path / "c.ckpt")
    want = (torch.rand(3), np.random.standard_normal(3), random.random())
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)
    rng.on_load_checkpoint(None, None, loaded)
    got = (torch.rand(3), np.random.standard_normal(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    np.random.seed(3)
    np.random.standard_normal()
    loaded["anyfill_rng"]["numpy"] = np.random.get_state()
    rng.on_load_checkpoint(None, None, loaded)
    assert np.array_equal(np.random.standard_normal(3), want[1])


@pytest.mark.data
@pytest.mark.slow
def test_a_documents_model_that_diverges_writes_no_results(tmp_path, data_root, capsys):
    """Every model's run that diverges to NaN stops with status 2 and writes no results, as the in-betweening
    model's export does (the lift model reported 'MPJPE nan mm' with status 0)."""
    from anyfill.cli import main as cli

    run = tmp_path / "lift"
    assert cli(["train", "lift", "--named", "tiny", "lr=1e30", f"data_root={data_root}", "trainer.threads=1",
                "trainer.progress=false", "--run-dir", str(run)]) == 2
    assert "NaN or infinite" in capsys.readouterr().err
    assert not (run / "test_metrics.json").exists() and (run / "checkpoints").is_dir()
