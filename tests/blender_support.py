"""Shared by the extension's tests (``tests/test_addon_*.py``): the real ``bpy`` with isolated user
resources, the built extension installed and enabled in it, a real backend process (``anyfill serve`` on a
free 127.0.0.1 port with small untrained models), shortened real BVH files and scene helpers."""

from __future__ import annotations

import atexit
import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXT_MODULE = "bl_ext.user_default.anyfill"
_state: dict = {}


def import_bpy():
    """The real Blender module, with its user resources (prefs, extensions) in a temporary folder."""
    if "bpy" not in sys.modules:
        os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="anyfill-blender-user-"))
    try:
        import bpy
    except (ImportError, OSError) as e:
        pytest.skip(f"the real Blender module (pip install bpy==5.0.1, CPython 3.11) cannot be imported: {e}")
    return bpy


def build_zip(out_dir: Path) -> Path:
    from anyfill.build_addon import build

    return build(ROOT, out_dir)


def install_extension(bpy):
    """Build, install and enable the extension (once per session); return its package module."""
    if EXT_MODULE in sys.modules and bpy.context.preferences.addons.get(EXT_MODULE):
        return sys.modules[EXT_MODULE]
    z = build_zip(Path(tempfile.mkdtemp(prefix="anyfill-dist-")))
    result = bpy.ops.extensions.package_install_files(filepath=str(z), repo="user_default", enable_on_install=True)
    assert result == {"FINISHED"}, result
    assert bpy.context.preferences.addons.get(EXT_MODULE), "the extension did not enable"
    return sys.modules[EXT_MODULE]


def clean_scene(bpy) -> None:
    """Remove every object, armature and action (keeps the extension and the preferences)."""
    for ob in list(bpy.data.objects):
        bpy.data.objects.remove(ob)
    for coll in (bpy.data.armatures, bpy.data.actions):
        for item in list(coll):
            coll.remove(item)
    scene = bpy.context.scene
    scene.use_preview_range = False
    scene.render.fps, scene.render.fps_base = 30, 1.0


def short_bvh(src: Path, frames: int, step: int = 1, start: int = 0) -> Path:
    """A copy of a real BVH file cut to ``frames`` frames (every ``step``-th from ``start``)."""
    from training.motion import bvh

    key = (str(src), frames, step, start)
    if key not in _state:
        b = bvh.read(src)
        b = dataclasses.replace(b, motion=b.motion[start::step][:frames], frame_time=b.frame_time * step)
        out = Path(tempfile.mkdtemp(prefix="anyfill-bvh-")) / src.name
        bvh.write(b, out)
        _state[key] = out
    return _state[key]


def import_bvh(bpy, path: Path, rotate_mode: str = "NATIVE"):
    """Import with Blender's own importer (frames from 1, BVH frame 0 is skipped by the importer)."""
    assert bpy.ops.import_anim.bvh(filepath=str(path), rotate_mode=rotate_mode, update_scene_fps=False,
                                   update_scene_duration=True) == {"FINISHED"}
    arm = bpy.context.view_layer.objects.active
    assert arm.type == "ARMATURE"
    return arm


# --- the backend ----------------------------------------------------------------------------------------------


def rolled_copy(bpy, ref, seed: int, bend: tuple[float, float], tail_length: float | None = None):
    """A second armature with ``ref``'s joint positions and hierarchy but random bone rolls and tails bent
    away from the bone direction (by a lerp factor drawn from ``bend``), each tail ``tail_length`` from its
    head (default: the bone's own length). Leaves Blender in object mode."""
    import random

    arm = bpy.data.armatures.new("Rolled")
    rolled = bpy.data.objects.new("Rolled", arm)
    bpy.context.scene.collection.objects.link(rolled)
    bpy.context.view_layer.objects.active = rolled
    bpy.ops.object.mode_set(mode="EDIT")
    rng = random.Random(seed)
    for b in ref.data.bones:
        eb = arm.edit_bones.new(b.name)
        eb.head = b.head_local
        d = b.tail_local - b.head_local
        length = d.length if tail_length is None else tail_length
        dn = d.normalized()
        eb.tail = b.head_local + length * dn.lerp(dn.orthogonal().normalized(), rng.uniform(*bend)).normalized()
        eb.roll = rng.uniform(-3.0, 3.0)
    for b in ref.data.bones:
        if b.parent:
            arm.edit_bones[b.name].parent = arm.edit_bones[b.parent.name]
    bpy.ops.object.mode_set(mode="OBJECT")
    return rolled


def make_models(folder: Path) -> dict[str, Path]:
    """Small untrained models (fast), or the shipped ones when ``ANYFILL_TEST_SHIPPED_MODELS=1`` (for the
    quality figures of docs/blender.md), or any model file per skeleton with ``ANYFILL_TEST_MODELS=hand=PATH,...``
    (a candidate measured in Blender before it ships)."""
    import torch

    from training.inbetween.checkpoint import resolve_path

    if os.environ.get("ANYFILL_TEST_SHIPPED_MODELS") == "1" or os.environ.get("ANYFILL_TEST_MODELS"):
        chosen = dict(item.split("=", 1) for item in os.environ.get("ANYFILL_TEST_MODELS", "").split(",") if item)
        return {name: resolve_path(chosen.get(name, name)) for name in ("hand", "body")}

    from training.inbetween.checkpoint import read_card, save_model
    from training.inbetween.config import AnyOrderTrainConfig
    from training.inbetween.task import build_model

    torch.manual_seed(0)
    out = {}
    for name in ("hand", "body"):
        cfg = AnyOrderTrainConfig(skeleton=name, variant="query", d_model=32, n_heads=2, n_enc_layers=1,
                                  n_dec_layers=1, dropout=0.0)
        # the shipped card's joint habits, so the extension matches foreign rigs as it does with real models
        habits = read_card(resolve_path(name)).get("schema", {}).get("conventions")
        out[name] = save_model(build_model(cfg), folder / f"{name}.safetensors", conventions=habits)
    return out


@dataclasses.dataclass
class Backend:
    url: str
    token: str
    process: subprocess.Popen
    config_home: Path


def start_backend() -> Backend:
    """``anyfill serve --port 0`` in a subprocess with its own config folder (token); once per session. The
    test process's ``XDG_CONFIG_HOME`` points at the same folder, so the extension finds the token itself."""
    if "backend" in _state:
        return _state["backend"]
    tmp = Path(tempfile.mkdtemp(prefix="anyfill-backend-"))
    models = make_models(tmp)
    config = tmp / "config"
    env = dict(os.environ, XDG_CONFIG_HOME=str(config), OMP_NUM_THREADS="1")
    env.pop("ANYFILL_TOKEN_FILE", None)
    from training.bench.rig import serve, stop_server

    args = ["--threads", "1", "--workers", "1"]
    for name, path in models.items():
        args += ["--model", f"{name}={path}"]
    proc, url = serve(args, env, tmp / "serve.log")
    os.environ["XDG_CONFIG_HOME"] = str(config)
    os.environ.pop("ANYFILL_TOKEN_FILE", None)
    token = (config / "anyfill" / "token").read_text().strip()

    atexit.register(stop_server, proc)
    _state["backend"] = Backend(url, token, proc, config)
    return _state["backend"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pose_matrices(bpy, ob, rig, frames):
    """Blender's own armature-space pose matrices (F, N, 4, 4) of ``ob`` at the frames, in ``rig``'s bone order."""
    import numpy as np

    out = np.empty((len(frames), len(rig.names), 4, 4))
    for i, f in enumerate(frames):
        bpy.context.scene.frame_set(int(f))
        for b, name in enumerate(rig.names):
            out[i, b] = np.array(ob.pose.bones[name].matrix)
    return out


def transfer_pose(bpy, ext, src, dst, r_src, r_dst, frames, key: bool = True) -> None:
    """Pose ``dst`` like ``src`` through the model space (rig -> model -> rig with the extension's retargeting)
    at the frames, keying every mapped bone of ``dst`` in quaternion mode (and the moving joints' location)."""
    import numpy as np

    pose = pose_matrices(bpy, src, r_src.rig, frames)
    local, trans = r_src.model_locals(pose)
    basis = np.broadcast_to(np.eye(4), (len(frames), len(r_dst.rig.names), 4, 4)).copy()
    write = np.ones((len(frames), len(r_dst.model.joints)), dtype=bool)
    new = r_dst.solve_basis(local, trans, basis, write)
    for i, f in enumerate(frames):
        for j, b in r_dst.bone_of.items():
            pb = dst.pose.bones[r_dst.rig.names[b]]
            pb.rotation_mode = "QUATERNION"
            m = new[i, b]
            pb.rotation_quaternion = ext.retarget.matrix_to_quat(ext.retarget.orthonormal(m[:3, :3])).tolist()
            if key:
                pb.keyframe_insert("rotation_quaternion", frame=f)
            if r_dst.model.moving[j] and not r_dst.rig.connected[b]:
                pb.location = m[:3, 3].tolist()
                if key:
                    pb.keyframe_insert("location", frame=f)
