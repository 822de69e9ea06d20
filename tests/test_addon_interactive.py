"""The extension's interactive paths in the real ``bpy``, against a real backend process.

Background mode has no event loop (``bpy.app.timers`` never fire, ``INVOKE_DEFAULT`` runs ``execute()``),
so the modal operators are driven here the way Blender's window manager drives them: the operator's own
``begin_modal`` and ``modal`` methods, fed TIMER and ESC events, with a window manager that records the
timers, progress and status text it is given. The backend tests start and stop a real ``anyfill serve``
from the preferences, as the Start/Stop Backend buttons do.
"""

from __future__ import annotations

import json
import math
import sys
import time
import urllib.request
from types import SimpleNamespace

import pytest
from blender_support import EXT_MODULE, free_port
from test_addon_fill import HAND, generated_frames, load_rig, own_keys, thin_keys

pytestmark = [pytest.mark.blender, pytest.mark.data, pytest.mark.slow]


class WindowManager:
    """The parts of ``bpy.types.WindowManager`` a modal operator uses, recording every call."""

    def __init__(self):
        self.timers: list = []
        self.handlers: list = []
        self.progress: list = []
        self.status: list = []

    def event_timer_add(self, time_step, window=None):
        timer = SimpleNamespace(time_step=time_step, window=window)
        self.timers.append(timer)
        return timer

    def event_timer_remove(self, timer):
        self.timers.remove(timer)

    def modal_handler_add(self, operator):
        self.handlers.append(operator)
        return True

    def progress_begin(self, lo, hi):
        self.progress.append(("begin", lo, hi))

    def progress_update(self, value):
        self.progress.append(("update", value))

    def progress_end(self):
        self.progress.append(("end",))


class Context:
    """``bpy.context`` with a window, a recording window manager and a workspace status bar."""

    def __init__(self, bpy, wm: WindowManager):
        self._ctx = bpy.context
        self.window = SimpleNamespace(name="window")
        self.window_manager = wm
        self.workspace = SimpleNamespace(status_text_set=wm.status.append)

    def __getattr__(self, name):
        return getattr(self._ctx, name)


def driven(ext, operator_cls):
    """A plain-Python instance running ``operator_cls``'s own code (Blender cannot instantiate operators
    outside an operator call); ``report`` collects the messages."""
    own = {k: v for k, v in vars(operator_cls).items() if not k.startswith("__") and k not in ("bl_rna",)}
    cls = type("Driven" + operator_cls.__name__, (ext.operators._FillBase,), own)
    op = cls()
    op.reports = []
    op.report = lambda level, message: op.reports.append((set(level), message))
    return op


def run_events(op, ctx, until, deadline_s=120.0):
    """Send TIMER events every 20 ms while the operator runs modal and ``until()`` is false."""
    deadline = time.time() + deadline_s
    result = {"RUNNING_MODAL"}
    while result == {"RUNNING_MODAL"} and not until():
        assert time.time() < deadline, "the modal operator did not finish"
        time.sleep(0.02)
        result = op.modal(ctx, SimpleNamespace(type="TIMER", value="NOTHING"))
    return result


def test_modal_fill_applies_the_answer_on_a_timer_event(bpy, ext, prefs, data_root):
    ob = load_rig(bpy, ext, data_root, HAND, frames=41, step=4)
    keep = {1, 11, 21, 31, 41}
    thin_keys(bpy, ob, keep)
    before = own_keys(ext, ob)
    wm = WindowManager()
    ctx = Context(bpy, wm)
    op = driven(ext, ext.operators.ANYFILL_OT_fill)
    assert op.begin_modal(ctx) == {"RUNNING_MODAL"}
    assert wm.handlers == [op] and len(wm.timers) == 1 and wm.progress[0] == ("begin", 0, 100)
    assert "Esc to cancel" in wm.status[-1]
    assert op.modal(ctx, SimpleNamespace(type="MOUSEMOVE", value="NOTHING")) == {"PASS_THROUGH"}
    op._worker.join(60)  # the answer is in; nothing is written until a timer event reaches the main thread
    assert not any(generated_frames(ext, ob).values())
    assert run_events(op, ctx, until=lambda: False) == {"FINISHED"}
    assert wm.timers == [] and wm.progress[-1] == ("end",) and wm.status[-1] is None
    assert op.reports and op.reports[-1][0] == {"INFO"} and "wrote" in op.reports[-1][1]
    targets = [float(f) for f in range(1, 42) if f not in keep]
    written = generated_frames(ext, ob)
    rot = [p for p in written if "rotation" in p[0]]
    assert rot and all(written[p] == targets for p in rot)
    assert own_keys(ext, ob) == before
    # the synchronous path (scripts, INVOKE_DEFAULT in background) writes the same keys
    def values():
        bag = ext.keys.channelbag(ob)
        return {p: [k.co[1] for k in bag.fcurves.find(p[0], index=p[1]).keyframe_points] for p in rot}

    modal_values = values()
    assert bpy.ops.anim.anyfill_fill() == {"FINISHED"}
    assert values() == modal_values


def job_state(url: str, token: str, job_id: str) -> str:
    req = urllib.request.Request(f"{url}/v1/jobs/{job_id}", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())["state"]


def test_escape_cancels_here_and_on_the_server(bpy, ext, prefs, backend, data_root):
    ob = load_rig(bpy, ext, data_root, HAND, frames=41, step=4)
    thin_keys(bpy, ob, {1, 41})
    before = own_keys(ext, ob), ext.curves.snapshot(ext.keys.channelbag(ob))
    s = bpy.context.scene.anyfill
    s.count, s.order, s.k, s.seed, s.temperature = 4, "lowest-entropy", 1, 0, 1.0  # thousands of steps
    wm = WindowManager()
    ctx = Context(bpy, wm)
    op = driven(ext, ext.operators.ANYFILL_OT_sample_variations)
    assert op.begin_modal(ctx) == {"RUNNING_MODAL"}
    assert run_events(op, ctx, until=lambda: op._worker.progress[0] > 0) == {"RUNNING_MODAL"}
    done, total = op._worker.progress
    assert 0 < done < total
    assert any(u[0] == "update" for u in wm.progress) and f"/{total} steps" in wm.status[-1]
    assert op.modal(ctx, SimpleNamespace(type="ESC", value="PRESS")) == {"CANCELLED"}
    assert wm.timers == [] and wm.progress[-1] == ("end",) and wm.status[-1] is None
    assert op.reports[-1][0] == {"WARNING"} and "nothing was written" in op.reports[-1][1]
    deadline = time.time() + 30
    while (state := job_state(backend.url, backend.token, op._plan.job_id)) != "cancelled":
        assert state in ("queued", "running"), f"the server job ended {state!r}, not cancelled"
        assert time.time() < deadline, "the server did not cancel the job"
        time.sleep(0.1)
    op._worker.join(30)
    assert not any(generated_frames(ext, ob).values())
    assert (own_keys(ext, ob), ext.curves.snapshot(ext.keys.channelbag(ob))) == before
    assert ob.anyfill.variation_count == 0


def wait_for(fn, seconds: float):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            return fn()
        except Exception:  # noqa: BLE001 - retried until the deadline
            time.sleep(0.25)
    return fn()


def test_preferences_start_and_stop_the_backend(bpy, ext, backend):
    """Start Backend runs ``anyfill serve`` with the preferences' Python on the URL's port; Stop Backend and
    disabling the extension each end it."""
    p = bpy.context.preferences.addons[EXT_MODULE].preferences
    saved = p.backend_url, p.python_executable
    port = free_port()
    p.backend_url, p.python_executable, p.token = f"http://127.0.0.1:{port}", sys.executable, ""
    client = ext.client.Client(p.backend_url, "")
    try:
        assert bpy.ops.anim.anyfill_stop_backend.poll() is False  # nothing started yet
        assert bpy.ops.anim.anyfill_start_backend() == {"FINISHED"}
        proc = ext.client.backend_process()
        assert proc is not None and proc.args[:3] == [sys.executable, "-m", "anyfill.cli"]
        health = wait_for(client.health, 120)
        assert health["status"] == "ok"
        assert {m["name"] for m in client.models()} >= {"hand", "body"}  # the shipped default models
        assert bpy.ops.anim.anyfill_check_backend() == {"FINISHED"}
        assert bpy.ops.anim.anyfill_start_backend() == {"FINISHED"}  # already running: the same process
        assert ext.client.backend_process() is proc
        assert bpy.ops.anim.anyfill_stop_backend() == {"FINISHED"}
        assert proc.wait(10) is not None and ext.client.backend_process() is None
        with pytest.raises(ext.client.BackendError, match="not reachable"):
            client.health()
        # a backend this Blender started ends with the extension
        assert bpy.ops.anim.anyfill_start_backend() == {"FINISHED"}
        proc = ext.client.backend_process()
        wait_for(client.health, 120)
        bpy.ops.preferences.addon_disable(module=EXT_MODULE)
        try:
            assert proc.wait(10) is not None
        finally:
            bpy.ops.preferences.addon_enable(module=EXT_MODULE)
        p = bpy.context.preferences.addons[EXT_MODULE].preferences
        # no interpreter set: a clear error, nothing started
        p.python_executable = ""
        with pytest.raises(RuntimeError, match="No Python executable"):
            bpy.ops.anim.anyfill_start_backend()
        assert ext.client.backend_process() is None
    finally:
        ext.client.stop_backend()
        p = bpy.context.preferences.addons[EXT_MODULE].preferences
        p.backend_url, p.python_executable = saved


def rigify_human(bpy):
    """A real generated Rigify rig (Blender's bundled Rigify: the Human metarig, then Generate Rig)."""
    from blender_support import clean_scene

    clean_scene(bpy)
    try:
        bpy.ops.preferences.addon_enable(module="rigify")
    except RuntimeError as e:
        pytest.skip(f"Blender's bundled Rigify cannot be enabled: {e}")
    bpy.ops.object.armature_human_metarig_add()
    assert bpy.ops.pose.rigify_generate() == {"FINISHED"}
    return next(o for o in bpy.data.objects if o.type == "ARMATURE" and o.name == "rig")


def test_generated_rigify_rig_maps_to_its_controls_and_fills_them(bpy, ext, prefs):
    """On a generated Rigify rig every body joint maps to a control bone an animator keys (FK controls,
    the torso, the finger controls), never to a constrained DEF-/ORG-/MCH- bone, and Fill keys those."""
    import re

    rig = rigify_human(bpy)
    bones = [b.name for b in rig.data.bones]
    mechanism = re.compile(r"^(DEF|ORG|MCH|VIS)-")
    body, family = ext.rig.auto_map(ext.rig.BODY_JOINTS, bones, "body")
    assert family == "Rigify" and set(body) == set(ext.rig.BODY_JOINTS)
    assert not [b for b in body.values() if mechanism.match(b)]
    assert body["Hips"] == "torso" and body["UpperArm_L"] == "upper_arm_fk.L" and body["Toes_R"] == "toe_fk.R"
    hand, family = ext.rig.auto_map(ext.rig.HAND_JOINTS, bones, "hand")
    assert family == "Rigify" and len(hand) == 16 and "THUMB_CMC_FE" not in hand  # 3-bone thumb
    assert hand["WRIST"] == "hand_fk.L" and hand["INDEX_MCP"] == "f_index.01.L"
    assert not [b for b in hand.values() if mechanism.match(b)]
    # key the body controls at frames 1 and 21 (a turn of the torso and a raised arm), fill 2..20; the limbs in FK:
    # Fill keys the FK controls and no IK control (limbs in IK: tests/test_addon_rigify_ik.py)
    for limb in ("upper_arm_parent.L", "upper_arm_parent.R", "thigh_parent.L", "thigh_parent.R"):
        rig.pose.bones[limb]["IK_FK"] = 1.0
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 21
    bpy.context.view_layer.objects.active = rig
    rig.select_set(True)
    for frame, angle in ((1, 0.0), (21, 0.6)):
        scene.frame_set(frame)
        for name in body.values():
            pb = rig.pose.bones[name]
            pb.rotation_mode = "QUATERNION"
            if name in ("torso", "upper_arm_fk.L"):
                pb.rotation_quaternion = (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))
            pb.keyframe_insert("rotation_quaternion", frame=frame)
        rig.pose.bones["torso"].keyframe_insert("location", frame=frame)
    rig.anyfill.model = "body"
    assert bpy.ops.anim.anyfill_fill() == {"FINISHED"}
    assert {m.joint: m.bone for m in rig.anyfill.joints if m.bone and m.part == "body"} == body
    assert {m.part for m in rig.anyfill.joints if m.bone} == {"body", "hand.L", "hand.R"}  # a full rig: both hands
    hands = {p: {m.joint: m.bone for m in rig.anyfill.joints if m.part == p and m.bone} for p in ("hand.L", "hand.R")}
    assert hands["hand.R"]["WRIST"] == "hand_fk.R" and hands["hand.R"]["INDEX_MCP"] == "f_index.01.R"
    written = {p for p, frames in generated_frames(ext, rig).items() if frames}
    written_bones = {p[0].split('"')[1] for p in written}
    assert written_bones == set(body.values())
    assert all(generated_frames(ext, rig)[p] == [float(f) for f in range(2, 21)] for p in written)
    # channels the fill made (bones the animator never keyed) sit in their bone's group, as Blender's own do
    groups = {(fc.data_path, fc.array_index): fc.group.name if fc.group else None
              for fc in ext.keys.channelbag(rig).fcurves}
    assert all(groups[p] == p[0].split('"')[1] for p in written)


def test_an_unkeyed_rigify_root_is_never_written_and_limbs_in_ik_are_named(bpy, ext, prefs):
    """Animators leave a generated Rigify rig's ``root`` control where it is: mapped to the body's joint_Root but
    never keyed, it is left out of the request as a rig without that joint is, and never written (it was filled on
    every frame, the animator's key frames too, and carried the whole body metres away). The generated rig's limbs
    start in IK (``IK_FK`` 0): keyed on their FK controls alone, they are read as Blender shows them and written
    through their IK controls too, and the report says so. Variations
    whose first one made a curve the rig did not have (a toe keyed on its quaternion's W alone) step through as
    any others."""
    rig = rigify_human(bpy)
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, 21
    scene.anyfill.range_mode, scene.anyfill.bones, scene.anyfill.count = "SCENE", "ALL", 2
    bpy.context.view_layer.objects.active = rig
    rig.select_set(True)
    body, _ = ext.rig.auto_map(ext.rig.BODY_JOINTS, [b.name for b in rig.data.bones], "body")
    assert body["joint_Root"] == "root"
    for frame, angle in ((1, 0.0), (21, 0.6)):
        scene.frame_set(frame)
        for name in body.values():
            if name == "root":  # never keyed
                continue
            pb = rig.pose.bones[name]
            pb.rotation_mode = "QUATERNION"
            if name in ("torso", "upper_arm_fk.L"):
                pb.rotation_quaternion = (math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2))
            pb.keyframe_insert("rotation_quaternion", index=0 if name == "toe_fk.L" else -1, frame=frame)
        rig.pose.bones["torso"].location = (0.0, 0.3 * angle, 0.0)
        rig.pose.bones["torso"].keyframe_insert("location", frame=frame)
    rig.anyfill.model = "body"
    assert bpy.ops.anim.anyfill_sample_variations() == {"FINISHED"}
    made = {(fc.data_path, fc.array_index) for fc in ext.keys.channelbag(rig).fcurves}
    assert ('pose.bones["toe_fk.L"].rotation_quaternion', 1) in made
    assert bpy.ops.anim.anyfill_step_variation() == {"FINISHED"}
    assert rig.anyfill.variation_index == 1
    op = driven(ext, ext.operators.ANYFILL_OT_fill)
    assert op.execute(bpy.context) == {"FINISHED"}
    level, message = op.reports[-1]
    assert "hand.L, hand.R, foot.L, foot.R in IK filled through their IK controls" in message, message
    assert "limbs in IK (" not in message, message  # every limb in IK is written through its IK controls
    assert not [fc for fc in ext.keys.channelbag(rig).fcurves if fc.data_path.startswith('pose.bones["root"]')]
    torso = {}
    for f in (1, 11, 21):
        scene.frame_set(f)
        torso[f] = (rig.matrix_world @ rig.pose.bones["torso"].head).copy()
    keyed = (torso[21] - torso[1]).length
    assert (torso[11] - (torso[1] + torso[21]) / 2).length < keyed + 0.1, (torso, keyed)
