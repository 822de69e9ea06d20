"""``anyfill sample pixels`` and ``anyfill bench pixels`` refuse bad arguments and bad checkpoints with one
line (exit status 2, naming the option or file) before any work, and leave no output behind; the sampler
itself refuses settings that would loop forever or fail deep inside."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_pixels import one_thread  # noqa: F401 (the one-torch-thread fixture, autouse, of the pixel tests)

from anyfill.cli import main
from training.documents.pixels import sampling as ps
from training.documents.pixels.model import PixelAnyOrder, PixelConfig
from training.documents.pixels.task import PixelModule, PixelTaskConfig, load_run
from training.inbetween.config import AnyOrderConfig

SMALL = {"variant": "query", "d_model": 16, "n_heads": 2, "n_layers": 1, "max_train": 64, "val_images": 32}


def _write_run(run: Path, **config) -> Path:
    """A run folder as ``anyfill train pixels`` leaves it (untrained weights: no data, no training)."""
    cfg = PixelTaskConfig(**{**SMALL, **config})
    torch.manual_seed(0)
    module = PixelModule(cfg, np.array([0.0, 80.0, 160.0, 250.0]))
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "pixels", "config": {**SMALL, **config}, "trainer": {}}))
    torch.save({"state_dict": module.state_dict(), "global_step": 2}, run / "checkpoints" / "last.ckpt")
    return run


@pytest.fixture()
def run(tmp_path) -> Path:
    return _write_run(tmp_path / "run")


def _refused(argv: list[str], capsys, *says: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anyfill: error: "), err
    assert "Traceback" not in err and "weights_only" not in err, err
    for s in says:
        assert s in err, (s, err)
    return err


def test_the_run_fixture_samples(run, tmp_path, capsys):
    """The folder the refusals below are made against is a good run: sampling from it works."""
    out = tmp_path / "g.png"
    assert main(["sample", "pixels", "--run", str(run), "--n", "2", "--per-step", "400", "-o", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a step fills at most the cells still unknown: per-step above the pixel count is one step
    assert main(["sample", "pixels", "--run", str(run), "--n", "1", "--per-step", "100000", "-o", str(out)]) == 0
    model, centres, _ = load_run(run)
    assert model.n_cells == 784 and centres.shape == (4,)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--per-step", "0"], ["--per-step", ">= 1", "got 0"]),
        (["--per-step", "-1"], ["--per-step", ">= 1", "got -1"]),
        (["--n", "0"], ["--n", "from 1 to 1024", "got 0"]),
        (["--n", "-3"], ["--n", "from 1 to 1024", "got -3"]),
        (["--n", "100000"], ["--n", "from 1 to 1024"]),
        (["--temperature", "0"], ["--temperature", "finite number from"]),
        (["--temperature", "-1"], ["--temperature", "got -1.0"]),
        (["--temperature", "nan"], ["--temperature", "got nan"]),
        (["--temperature", "inf"], ["--temperature", "got inf"]),
        (["--seed", "-1"], ["--seed", "from 0 to"]),
        (["--seed", str(2**64)], ["--seed", "from 0 to"]),
        (["--threads", "-2"], ["--threads", "from 0 to"]),
    ],
)
def test_sample_refuses_bad_arguments_before_loading(args, says, tmp_path, capsys):
    """Checked before anything is loaded: the run folder does not even exist."""
    out = tmp_path / "g.png"
    _refused(["sample", "pixels", "--run", str(tmp_path / "absent"), "-o", str(out), *args], capsys, *says)
    assert not out.exists()


def test_sample_refuses_a_folder_as_output(run, tmp_path, capsys):
    _refused(["sample", "pixels", "--run", str(run), "-o", str(tmp_path)], capsys, "-o/--out", "is a folder")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--per-step", "0"], ["--per-step", ">= 1"]),
        (["--images", "0"], ["--images", "from 1 to"]),
        (["--samples", "-1"], ["--samples", "from 0 to"]),
        (["--seed", "-5"], ["--seed", "from 0 to"]),
        (["--orders", ","], ["--orders", "no order given"]),
        (["--orders", "sideways"], ["--orders", "sideways"]),
    ],
)
def test_bench_refuses_bad_arguments_before_loading(args, says, tmp_path, capsys):
    out_dir, js = tmp_path / "bench", tmp_path / "b.json"
    _refused(["bench", "pixels", "--run", str(tmp_path / "absent"), "--out-dir", str(out_dir), "--json", str(js),
              *args], capsys, *says)
    assert not out_dir.exists() and not js.exists()


def _bad_checkpoints(run: Path, tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (checkpoint file, what the refusal says)."""
    good = run / "checkpoints" / "last.ckpt"
    truncated = tmp / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:5000])
    garbage = tmp / "garbage.ckpt"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    pickled = tmp / "pickled.ckpt"
    pickled.write_bytes(b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x8c\x06system\x93.")
    safetensors = tmp / "model.safetensors"
    safetensors.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    other_model = tmp / "anyorder.ckpt"  # another model's Lightning checkpoint: different weights
    torch.save({"state_dict": {"model.pose_head.weight": torch.zeros(3, 3)}, "global_step": 1}, other_model)
    bigger = _write_run(tmp / "bigger", d_model=32) / "checkpoints" / "last.ckpt"
    no_state = tmp / "no_state.ckpt"
    torch.save({"weights": {}}, no_state)
    return {
        "truncated": (truncated, "unreadable (truncated?"),
        "/dev/null": (Path("/dev/null"), "unreadable (truncated?"),
        "garbage": (garbage, "unreadable (truncated?"),
        "pickled code": (pickled, "unreadable (truncated?"),
        "safetensors": (safetensors, "not a pixels checkpoint"),
        "other model": (other_model, "not a pixels checkpoint"),
        "other size": (bigger, "another model size"),
        "no state_dict": (no_state, "not a pixels checkpoint"),
    }


def test_bad_checkpoints_are_refused_in_one_line(run, tmp_path, capsys, recwarn):
    out = tmp_path / "g.png"
    for name, (ckpt, says) in _bad_checkpoints(run, tmp_path).items():
        err = _refused(["sample", "pixels", "--run", str(run), "--checkpoint", str(ckpt), "--n", "2", "-o", str(out)],
                       capsys, str(ckpt), says)
        assert not out.exists(), name
        with pytest.raises(ValueError, match="truncated|not a pixels|another model size"):
            load_run(run, ckpt)
        assert err.count("\n") == 1, (name, err)
    # torch's warnings on odd pickles would print a second (and a third) line on stderr
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)], [str(w.message) for w in recwarn]


def test_bench_refuses_a_truncated_last_checkpoint(run, tmp_path, capsys):
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:5000])
    out_dir = tmp_path / "bench"
    _refused(["bench", "pixels", "--run", str(run), "--out-dir", str(out_dir)], capsys, str(last), "unreadable")
    assert not out_dir.exists()


def test_bad_run_configs_are_refused(tmp_path, capsys):
    run = _write_run(tmp_path / "run")
    (run / "config.json").write_text("{not json")
    _refused(["sample", "pixels", "--run", str(run), "-o", str(tmp_path / "g.png")], capsys, "config.json", "JSON")
    (run / "config.json").write_text(json.dumps({"model": "pixels", "config": {"no_such_setting": 1}}))
    _refused(["sample", "pixels", "--run", str(run), "-o", str(tmp_path / "g.png")], capsys, "config.json",
             "not a valid pixels config")
    _refused(["sample", "pixels", "--run", str(tmp_path / "absent"), "-o", str(tmp_path / "g.png")], capsys,
             "config.json", "No such file")
    assert not (tmp_path / "g.png").exists()


def _tiny() -> PixelAnyOrder:
    torch.manual_seed(0)
    core = AnyOrderConfig(d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=1, dropout=0.0, n_freqs=4,
                          min_period=0.5, max_period=2.0)
    return PixelAnyOrder(PixelConfig(side=4, core=core))


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"per_step": 0}, "per_step"),
        ({"per_step": -1}, "per_step"),
        ({"per_step": 1.5}, "per_step"),
        ({"n": 0}, "n "),
        ({"n": -3}, "n "),
        ({"n": None}, "n "),
        ({"temperature": 0.0}, "temperature"),
        ({"temperature": -1.0}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"temperature": math.inf}, "temperature"),
    ],
)
def test_run_order_refuses_settings_that_never_finish_or_fail_inside(kwargs, says):
    """The guard is in the sampler too, so no caller can loop forever on per_step 0."""
    model = _tiny()
    with pytest.raises(ValueError, match=says):
        ps.run_order(model, "raster", **{"n": 2, **kwargs})
    if "per_step" in kwargs:  # scoring and completion take the same loop
        truth = torch.zeros(1, 16, dtype=torch.long)
        with pytest.raises(ValueError, match="per_step"):
            ps.run_order(model, "lowest-entropy", image=truth, score=True, per_step=kwargs["per_step"])


def test_run_order_accepts_the_limits():
    model = _tiny()
    r = ps.run_order(model, "random", 1, per_step=10**9, temperature=1e-6)
    assert r.visited.shape == (1, 16)
    truth = torch.zeros(1, 16, dtype=torch.long)
    assert ps.run_order(model, "raster", image=truth, score=True, temperature=0.0).visited.shape == (1, 16)


@pytest.mark.data
@pytest.mark.slow
def test_a_run_that_anyfill_train_wrote_is_sampled_from(tmp_path, data_root, capsys):
    """A run folder as ``anyfill train pixels`` writes it, checkpoints and all (each carries the run's random
    state): ``anyfill sample pixels`` reads its weights. It refused every such checkpoint while NumPy's random
    state was kept as an array, which a weights-only load will not read."""
    run = tmp_path / "run"
    assert main(["train", "pixels", "--named", "tiny", f"data_root={data_root}", "trainer.threads=1",
                 "trainer.progress=false", "--run-dir", str(run)]) == 0
    capsys.readouterr()
    assert main(["sample", "pixels", "--run", str(run), "--n", "1", "-o", str(tmp_path / "g.png")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "g.png").stat().st_size > 0
