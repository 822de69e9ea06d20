"""The numpy runtime (training/inbetween/numpy_model.py) against the torch model it mirrors: the same outputs from
the same shipped weights, the same checks on a bad file, and ``anyfill fill`` (and its sampling) without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from training.inbetween import fill as engine
from training.inbetween import sampling
from training.inbetween.checkpoint import CheckpointError, card_path, load_model, load_numpy_model, resolve_path
from training.inbetween.numpy_model import NumpyMotionFill
from training.motion import clip as clip_io
from training.motion.rotations import quat_angle

SHOTS = {"body": "bandai/dataset-1/dataset-1_dance-short_normal_001.bvh", "hand": "manipnet/teapot3/rightHand.bvh"}


def _batches(model, rot, trans, known, times) -> list[dict[str, np.ndarray]]:
    """The window batches a fill hands its model (one window, and a long shot's padded batch of pieces)."""
    seen: list[dict[str, np.ndarray]] = []
    engine.fill(_Recorder(model, seen), rot, trans, known, times)
    return seen


class _Recorder(NumpyMotionFill):
    """A numpy model that keeps every batch it is given."""

    def __init__(self, model: NumpyMotionFill, seen: list):
        self.__dict__.update(model.__dict__)
        self._seen = seen

    def __call__(self, b):
        self._seen.append({k: v.copy() for k, v in b.items()})
        return super().__call__(b)


@pytest.mark.data
@pytest.mark.parametrize("skeleton", ["body", "hand"])
def test_numpy_runtime_gives_the_torch_models_outputs(skeleton, data_root):
    torch.manual_seed(0)
    tm, _ = load_model(skeleton)
    nm, _ = load_numpy_model(skeleton)
    clip = clip_io.load(data_root / SHOTS[skeleton], skeleton)
    rng = np.random.default_rng(0)
    t, j = 400, clip.schema.n_joints
    known = np.zeros((1, t, j), dtype=bool)
    known[0, ::10] = True
    known[0, rng.choice(t, 40, replace=False), rng.integers(0, j, 40)] = True  # loose cells too
    known[0, 190:340, : j // 2] = False  # no whole pose keyed for 160 frames: overlapping windows
    args = (clip.rotations[None, :t], clip.translations[None, :t], known, (np.arange(t) / clip.fps)[None])
    batches = _batches(nm, *args) + _batches(nm, *(a[:, :60] for a in args))  # and one window alone
    assert len(batches) >= 3 and batches[0]["known"].shape[0] > 1 and batches[-1]["known"].shape[:2] == (1, 60)
    for b in batches:
        ref = engine._distributions(tm, b)
        out = nm(b)
        target = b["target"]
        # float32 arithmetic in another order: measured at most 7e-6, 3e-5, 3.4e-7 of the largest position, 2e-5
        assert np.abs(out["rot6d"] - ref["rot6d"])[target].max() < 2e-5
        assert np.abs(out["log_kappa"] - ref["log_kappa"])[target].max() < 1e-4
        moving = target[..., list(clip.schema.moving)]
        assert np.abs(out["pos"] - ref["pos"])[moving].max() < 2e-6 * max(1.0, float(np.abs(ref["pos"]).max()))
        assert np.abs(out["log_sigma"] - ref["log_sigma"])[moving].max() < 1e-4
    a, b = engine.fill(nm, *args), engine.fill(tm, *args)  # measured: 2.5e-4 degrees, 1.3e-4 cm
    assert np.degrees(quat_angle(a.rotations, b.rotations)).max() < 2e-3
    assert np.abs(a.translations - b.translations).max() < 1e-3
    assert np.abs(a.entropy - b.entropy).max() < 1e-4


@pytest.mark.parametrize(("skeleton", "key_velocity", "key_gate", "layers"),
                         [("hand", True, 0.1, (2, 3)), ("body", False, 0.0, (1, 2)), ("body", True, 0.0, (3, 1))])
def test_weight_shapes_are_the_torch_models(skeleton, key_velocity, key_gate, layers):
    """The numpy runtime's list of tensors is the torch model's state dict, name for name and shape for shape."""
    from training.inbetween.config import AnyOrderConfig, MotionConfig
    from training.inbetween.features import FeatureSpec
    from training.inbetween.model import MotionFill
    from training.inbetween.numpy_model import weight_shapes
    from training.motion.skeleton import get_schema

    schema = get_schema(skeleton)
    cfg = MotionConfig(skeleton=skeleton, n_joints=schema.n_joints, n_moving=len(schema.moving), key_gate=key_gate,
                       core=AnyOrderConfig(d_model=32, n_heads=2, n_enc_layers=layers[0], n_dec_layers=layers[1]),
                       features=FeatureSpec(key_velocity=key_velocity))
    state = MotionFill(cfg).state_dict()
    assert weight_shapes(cfg) == {k: tuple(v.shape) for k, v in state.items()}


def _copy_shipped(tmp_path, name="body"):
    src = resolve_path(name)
    dst = tmp_path / src.name
    shutil.copy(src, dst)
    shutil.copy(card_path(src), card_path(dst))
    return dst


def test_numpy_runtime_refuses_a_bad_file_as_the_torch_loader_does(tmp_path):
    path = _copy_shipped(tmp_path)
    state = load_file(str(path))
    for broken, expect in (
        ({k: v for k, v in state.items() if k != "core.decoder.1.cross.kv.weight"}, "missing core.decoder.1.cross.kv"),
        ({**state, "extra.weight": np.zeros(3, np.float32)}, "unexpected extra.weight"),
        ({**state, "out.bias": np.zeros(5, np.float32)}, "out.bias is (5,)"),
        ({**state, "out.bias": np.full_like(state["out.bias"], np.nan)}, "out.bias holds NaN"),
    ):
        save_file(broken, str(path))
        with pytest.raises(CheckpointError, match=expect.replace("(", r"\(").replace(")", r"\)")):
            load_numpy_model(path)
        with pytest.raises(CheckpointError):
            load_model(path)
    from safetensors.torch import save_file as save_torch

    save_torch({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in state.items()}, str(path))  # a half-size copy
    with pytest.raises(CheckpointError, match="unsupported tensor type for the numpy runtime"):
        load_numpy_model(path)
    assert load_model(path)[0].out.weight.dtype == torch.float32  # torch reads it into its float32 model
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt safetensors") as e:
        load_numpy_model(path)
    assert str(e.value).count(str(path)) == 1  # the file named once
    card = json.loads(card_path(path).read_text())
    card["config"]["variant"] = "triples"
    card_path(path).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="query variant only"):
        load_numpy_model(path)


@pytest.mark.parametrize("order", ["forward", "random"])
def test_numpy_runtime_samples_as_the_torch_model_does(order):
    """The same draws from the same seed: encode / decode give the torch model's distributions, so every variation
    follows the same path (orders that do not rank by the spreads, which float32 rounding could reorder)."""
    tm, _ = load_model("hand")
    nm, _ = load_numpy_model("hand")
    rng = np.random.default_rng(3)
    t, j = 14, nm.cfg.n_joints
    rot = rng.normal(size=(t, j, 4)) * 0.1 + np.array([0.0, 0.0, 0.0, 1.0])
    rot /= np.linalg.norm(rot, axis=-1, keepdims=True)
    trans = np.broadcast_to(rng.normal(size=(1, j, 3)), (t, j, 3)).copy()
    known = np.zeros((t, j), dtype=bool)
    known[:3] = known[-2:] = True
    known[7, :5] = True
    args = (rot, trans, known, np.arange(t) / 30.0)
    a = sampling.sample(nm, *args, order=order, k=3, seed=5, n=2, temperature=1.5)
    b = sampling.sample(tm, *args, order=order, k=3, seed=5, n=2, temperature=1.5)
    for x, y in zip(a, b, strict=True):
        assert np.degrees(quat_angle(x.rotations, y.rotations)).max() < 1e-2
        assert np.abs(x.translations - y.translations).max() < 1e-4
    assert np.degrees(quat_angle(a[0].rotations, a[1].rotations))[~known].mean() > 0.5  # the variations differ


@pytest.mark.data
@pytest.mark.parametrize("extra", [[], ["--sample", "2", "--k", "22"]], ids=["fill", "sample"])
def test_anyfill_fill_needs_neither_torch_nor_the_server(data_root, tmp_path, extra):
    src = data_root / SHOTS["body"]
    out = tmp_path / "out.bvh"
    argv = ["anyfill", "fill", str(src), "-o", str(out), "--keys", "0:40:10", "--frames", "0-40", "--threads", "1",
            "--no-progress", *extra]
    # what `pip install anyfill[fill]` lacks cannot be imported: the run proves the command needs none of it
    absent = {"torch", "lightning", "fastapi", "pydantic", "uvicorn", "starlette", "matplotlib"}
    code = ("import sys\n"
            "class Absent:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            f"        if name.partition('.')[0] in {absent!r}: raise ImportError(name + ' is not installed')\n"
            "sys.meta_path.insert(0, Absent())\n"
            f"from anyfill.cli import main\nsys.argv = {argv!r}\nsys.exit(main())\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    written = [tmp_path / "out-1.bvh", tmp_path / "out-2.bvh"] if extra else [out]
    assert all(p.is_file() for p in written)
