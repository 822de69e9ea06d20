"""A foreign rig (Mixamo, from ../shared/data/foreign) filled as an animator would: Auto Map finds the body
and both hands, one Fill fills them all, the hands' wrists come from the body, no connected bone gets a
location, the animator's keys stay as they were, and Bones = Selected fills only the selected bones."""

from __future__ import annotations

import numpy as np
import pytest
from blender_support import clean_scene, import_bvh, short_bvh
from test_addon_fill import generated_frames, own_keys, run_fill, snapshot_all, thin_keys
from test_addon_hardening import report_of

pytestmark = [pytest.mark.blender, pytest.mark.data, pytest.mark.slow]

MIXAMO = "foreign/mixamo_walk-in-circle.bvh"
FRAMES = 41
EVERY = 10


def mixamo_rig(bpy, data_root):
    clean_scene(bpy)
    ob = import_bvh(bpy, short_bvh(data_root / MIXAMO, FRAMES))
    scene = bpy.context.scene
    scene.frame_start, scene.frame_end = 1, FRAMES
    scene.anyfill.range_mode, scene.anyfill.bones = "SCENE", "ALL"
    thin_keys(bpy, ob, set(range(1, FRAMES + 1, EVERY)))
    return ob


def written_bones(ext, ob) -> set[str]:
    return {p[0].split('"')[1] for p, frames in generated_frames(ext, ob).items() if frames}


def test_auto_map_finds_the_body_and_both_hands_and_one_fill_fills_them(bpy, ext, prefs, data_root):
    ob = mixamo_rig(bpy, data_root)
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    parts = {m.part for m in ob.anyfill.joints if m.bone}
    assert parts == {"body", "hand.L", "hand.R"}
    mapped = {(m.part, m.joint): m.bone for m in ob.anyfill.joints if m.bone}
    assert mapped[("hand.L", "WRIST")] == mapped[("body", "Hand_L")] == "mixamorig7:LeftHand"
    assert mapped[("hand.R", "INDEX_PIP_FE")] == "mixamorig7:RightHandIndex2"
    before = own_keys(ext, ob)
    hand = ob.data.bones["mixamorig7:LeftHand"]
    rest_gap = (hand.head_local - hand.parent.tail_local).length
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert own_keys(ext, ob) == before
    lines = ob.anyfill.last_match.split("\n")  # what the panel shows of the match, per part
    assert len(lines) == 3 and lines[0].startswith("body: the rig's rest, twists fitted to the keys, scale ")
    assert lines[1].startswith("hand.L: ") and lines[2].startswith("hand.R: ")
    # the hand data (ManipNet's rightHand.bvh and mirrored left hands) is, read in Blender's right-handed axes,
    # a left hand: the rig's left hand goes to the model as it is, its right hand mirrored
    assert not lines[1].endswith("mirrored") and lines[2].endswith(", mirrored")
    written = written_bones(ext, ob)
    fingers = {b for (part, _), b in mapped.items() if part.startswith("hand.")} - {
        mapped[("hand.L", "WRIST")], mapped[("hand.R", "WRIST")]}
    assert fingers <= written  # the hands' fingers, in the same Fill
    assert {b for (part, _), b in mapped.items() if part == "body"} <= written
    # a bone connected to its parent never gets a location; the hand stays on the forearm's tail
    for path, frames in generated_frames(ext, ob).items():
        bone = ob.data.bones[path[0].split('"')[1]]
        if path[0].endswith(".location") and frames:
            assert not bone.use_connect and bone.parent is None, path
    for f in range(1, FRAMES + 1, 3):
        bpy.context.scene.frame_set(f)
        pb = ob.pose.bones["mixamorig7:LeftHand"]
        gap = (pb.head - pb.parent.tail).length
        assert gap == pytest.approx(rest_gap, abs=1e-5)


def test_a_bone_mapped_in_two_parts_is_refused_but_the_wrist_is_the_bodys_hand(bpy, ext, prefs, data_root):
    """A finger bone mapped in both hands, or a hand's wrist on the forearm (the body's LowerArm_L), is refused by
    name before anything is written and flagged in the panel (it filled silently, one joint never written); a hand's
    wrist on the body's hand bone of its side is one bone by design."""
    from test_addon_hardening import Layout

    ob = mixamo_rig(bpy, data_root)
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    before = snapshot_all(ext, ob)
    row = next(m for m in ob.anyfill.joints if m.part == "hand.L" and m.joint == "INDEX_MCP")
    mine, row.bone = row.bone, "mixamorig7:RightHandIndex1"
    with pytest.raises(RuntimeError, match="The bone 'mixamorig7:RightHandIndex1' is mapped to two joints, "
                                           "hand.L INDEX_MCP and hand.R INDEX_MCP"):
        run_fill(bpy, ob)
    assert snapshot_all(ext, ob) == before
    drawn = {}
    for item in ob.anyfill.joints:  # the panel's mapping list
        layout = Layout()
        ext.panels.ANYFILL_UL_mapping.draw_item(None, bpy.context, layout, ob.anyfill, item, 0, None, "", 0)
        drawn[(item.part, item.joint)] = layout.drawn[0]
    assert drawn[("hand.L", "INDEX_MCP")] == ("hand.L INDEX_MCP (bone mapped twice)", "ERROR")
    assert drawn[("hand.R", "INDEX_MCP")] == ("hand.R INDEX_MCP (bone mapped twice)", "ERROR")
    assert drawn[("hand.L", "WRIST")] == ("hand.L WRIST", "CHECKMARK")
    row.bone = mine
    assert not ext.plan.mapped_twice(ob)  # the wrists on the body's hands: allowed
    assert run_fill(bpy, ob) == {"FINISHED"}


def test_a_rig_with_its_shins_unmapped_is_read_at_its_own_height(bpy, ext, prefs, data_root):
    """Shins left unmapped: the ankles hang from joints that hold the data's mean turn, not the rig's, so the floor is
    not read from them (the panel said 'read raised 23.2 m onto the model's floor'); the fill still runs."""
    ob = mixamo_rig(bpy, data_root)
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert "onto the model's floor" in ob.anyfill.last_match.split("\n")[0]  # mapped whole: read onto the floor
    for m in ob.anyfill.joints:
        if m.part == "body" and m.joint in ("LowerLeg_L", "LowerLeg_R"):
            m.bone = ""
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert "floor" not in ob.anyfill.last_match.split("\n")[0]


def test_bones_selected_fills_only_the_selected_bones(bpy, ext, prefs, data_root):
    """Selection lives on the pose bone in Blender 5.0 (on the bone before): Bones = Selected reads it there
    and fills only the selected mapped bones; the others condition the fill as they are."""
    ob = mixamo_rig(bpy, data_root)
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    chosen = {"mixamorig7:LeftArm", "mixamorig7:LeftForeArm"}
    for pb in ob.pose.bones:
        if hasattr(pb, "select"):
            pb.select = pb.name in chosen
        else:
            pb.bone.select = pb.name in chosen
    bpy.context.scene.anyfill.bones = "SELECTED"
    try:
        assert run_fill(bpy, ob) == {"FINISHED"}
        # the hand bone alone: the body fills it; the hand part says why it has nothing of its own to fill
        for pb in ob.pose.bones:
            (pb if hasattr(pb, "select") else pb.bone).select = pb.name == "mixamorig7:LeftHand"
        result, reports = report_of(bpy, ext, ext.operators.ANYFILL_OT_fill)
    finally:
        bpy.context.scene.anyfill.bones = "ALL"
    assert written_bones(ext, ob) == chosen | {"mixamorig7:LeftHand"} and result == {"FINISHED"}
    message = reports[-1][1]
    assert "Nothing to fill of the hand.L: its only selected bone, the wrist, is the body's hand bone" in message


def test_a_refill_with_a_partly_keyed_frame_gives_the_same_fill(bpy, ext, prefs, data_root):
    """The arms keyed alone on one frame between the whole poses, and one channel of a thigh on another: the rig's
    conventions (twists, the floor) are read from the whole poses only, and a bone keyed on some channels from the
    animator's curves, so a second Fill reads what the first did and writes the same keys. Read from every keyed
    frame, the legs on the arms' frame were the previous fill's keys: each refill moved the match (the floor lift
    1.27, 0.95, 0.58...) and the fill (up to 8 rig units), and the thigh's other channels there were the last fill's."""
    full = mixamo_rig(bpy, data_root)  # the whole rig keyed every 10 frames, then the arms alone on frame 16
    arms = [f"mixamorig7:{n}" for n in ("LeftArm", "LeftForeArm", "RightArm", "RightForeArm")]
    for fc in ext.keys.channelbag(full).fcurves:
        if fc.data_path.split('"')[1] in arms and fc.data_path.endswith("rotation_euler"):
            fc.keyframe_points.insert(16, fc.evaluate(16) + 0.2)
        # and one channel of the left thigh alone on frame 26: its other two there are its own curves, not the
        # last fill's keys
        if fc.data_path == 'pose.bones["mixamorig7:LeftUpLeg"].rotation_euler' and fc.array_index == 0:
            fc.keyframe_points.insert(26, fc.evaluate(26) + 0.2)
    bpy.context.view_layer.objects.active = full
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    model = ext.client.model_info(ext.client.Client(prefs.backend_url), "body")
    reads, poses = [], []
    for _ in range(3):
        reads.append(ext.plan.prepare(bpy.context, full, "fill", model, part="body"))
        assert run_fill(bpy, full) == {"FINISHED"}
        poses.append(world_heads(bpy, full, range(1, FRAMES + 1)))
    assert reads[0].retarget.lift == pytest.approx(reads[2].retarget.lift, abs=1e-9)
    first, last = reads[0].body["joints"], reads[2].body["joints"]  # the same request, to float rounding
    assert first.keys() == last.keys()
    for name, track in first.items():
        for key, cells in track.items():
            assert [c is None for c in cells] == [c is None for c in last[name][key]], (name, key)
            if key != "targets":
                known = [c for c in cells if c is not None]
                assert np.allclose(known, [c for c in last[name][key] if c is not None], rtol=0, atol=1e-12)
    worst = max(float(np.abs(np.subtract(poses[0], p)).max()) for p in poses[1:])
    assert worst < 1e-4, worst


def key_selection(ext, ob) -> dict:
    out = {}
    for fc in ext.keys.channelbag(ob).fcurves:
        flags = np.empty(3 * len(fc.keyframe_points), dtype=bool)
        for i, attr in enumerate(("select_control_point", "select_left_handle", "select_right_handle")):
            fc.keyframe_points.foreach_get(attr, flags[i::3])
        out[(fc.data_path, fc.array_index)] = flags.tolist()
    return out


@pytest.mark.parametrize("failure", ["refused", "cancelled"])
def test_a_hand_that_fails_after_the_body_was_written_leaves_the_rig_as_it_was(bpy, ext, prefs, data_root,
                                                                                monkeypatch, failure):
    """One Fill writes the body before it asks for each hand (a hand's wrist comes from the body's fill). When a
    hand's request fails or is cancelled, what the body's part wrote is taken back: the rig, refilled here over an
    earlier fill, is exactly as it was (keys, handles, key selection, the panel's record), as after any failed
    Fill. (The body's keys stayed written and only the hand's error was reported.) The record of the keys Anyfill
    wrote is put back with them: a key of the animator's changed since the earlier fill, the failed refill's body
    recorded other keys, and the next Fill took 18 of the earlier fill's poses for the animator's."""
    ob = mixamo_rig(bpy, data_root)
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    assert run_fill(bpy, ob) == {"FINISHED"}  # an earlier fill: the refill replaces its keys
    bag = ext.keys.channelbag(ob)
    arm = bag.fcurves.find('pose.bones["mixamorig7:LeftArm"].rotation_euler', index=0)
    next(k for k in arm.keyframe_points if k.co[0] == 11.0).co[1] += 0.3  # the refill writes other keys
    arm.update()
    for i, fc in enumerate(bag.fcurves):  # the animator's own key selection, which a refill's keys change
        for k in fc.keyframe_points:
            k.select_control_point = (i + round(k.co[0])) % 3 == 0
    before, selection, groups = snapshot_all(ext, ob), key_selection(ext, ob), {g.name for g in bag.groups}
    record = (ob.anyfill.last_keys, ob.anyfill.last_match, ob.anyfill.last_uncertainty)
    real, asked = ext.client.Client.fill, []

    def fill(client, body):
        asked.append(body)
        if len(asked) == 2:  # the first hand
            if failure == "cancelled":
                raise ext.client.Cancelled()
            raise ext.client.BackendError("The backend refused the request (HTTP 500): out of memory", 500)
        return real(client, body)

    monkeypatch.setattr(ext.client.Client, "fill", fill)
    result, reports = report_of(bpy, ext, ext.operators.ANYFILL_OT_fill)
    assert result == {"CANCELLED"} and len(asked) == 2
    assert reports[-1] == (({"WARNING"}, "Anyfill: cancelled; nothing was written") if failure == "cancelled" else
                           ({"ERROR"}, "The backend refused the request (HTTP 500): out of memory"))
    assert snapshot_all(ext, ob) == before
    assert key_selection(ext, ob) == selection and {g.name for g in bag.groups} == groups
    assert (ob.anyfill.last_keys, ob.anyfill.last_match, ob.anyfill.last_uncertainty) == record
    assert ext.provenance.adopt(ob, change=False) == []  # none of the earlier fill's keys taken for the animator's


def world_heads(bpy, ob, frames) -> list[float]:
    out = []
    for f in frames:
        bpy.context.scene.frame_set(f)
        for pb in ob.pose.bones:
            out.extend(ob.matrix_world @ pb.head)
    return out


FINGER_NAMES = {"Thumb": "Thb", "Index": "Idx", "Middle": "Mid", "Ring": "Rng", "Pinky": "Pnk"}


def custom_finger_name(bone: str) -> str:
    """A Mixamo finger bone's name as no Auto Map alias knows it (mixamorig7:LeftHandIndex1 -> Finger_Idx_1_L), other
    bones' names as they are."""
    import re

    m = re.fullmatch(r"mixamorig7:(Left|Right)Hand(Thumb|Index|Middle|Ring|Pinky)(\d)", bone)
    return f"Finger_{FINGER_NAMES[m[2]]}_{m[3]}_{m[1][0]}" if m else bone


class Drawn:
    """A stand-in for a UI layout that records the operators drawn, with the properties set on them."""

    def __init__(self, ops=None):
        self.ops = [] if ops is None else ops

    def operator(self, idname, **kw):
        from types import SimpleNamespace

        self.ops.append((idname, kw.get("text"), props := SimpleNamespace()))
        return props

    def row(self, align=False):
        return Drawn(self.ops)

    column = row

    def __getattr__(self, name):  # label, prop, template_list...: nothing to record
        return lambda *args, **kw: None


def panel_buttons(bpy, ext) -> list[tuple[str, str, dict]]:
    layout = Drawn()
    ext.panels._draw_mapping(layout, bpy.context)
    return [(idname, text, vars(props)) for idname, text, props in layout.ops if "part" in idname]


def test_a_hand_part_added_and_mapped_by_hand_fills_as_an_auto_mapped_hand(bpy, ext, prefs, data_root):
    """A body rig whose finger bones no alias recognises (Finger_Idx_1_L...): Auto Map finds the body alone. The Rig
    Mapping panel adds a left hand (a row per hand joint, its WRIST proposed on the body's hand bone of that side, the
    others to pick); once its bones are picked, Fill fills those fingers exactly as it fills the same rig's auto-mapped
    hand. Auto Map keeping the choices keeps the part; the panel removes it. (Such a rig could never have its fingers
    filled: no hand rows, and no way to add them.)"""
    ob = mixamo_rig(bpy, data_root)  # the reference: the rig as it comes, its hands auto-mapped
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    auto = {m.joint: custom_finger_name(m.bone) for m in ob.anyfill.joints if m.part == "hand.L"}
    assert run_fill(bpy, ob) == {"FINISHED"}
    fingers = {b for j, b in auto.items() if b and j != "WRIST"}

    def finger_keys(rig):
        return {(custom_finger_name(fc.data_path.split('"')[1]), fc.data_path.rsplit(".", 1)[1], fc.array_index): [
            (k.co[0], k.co[1]) for k in fc.keyframe_points if k.type == "GENERATED"]
            for fc in ext.keys.channelbag(rig).fcurves if custom_finger_name(fc.data_path.split('"')[1]) in fingers}

    reference = finger_keys(ob)
    assert len(fingers) == 15 and all(reference.values())

    ob = mixamo_rig(bpy, data_root)
    for b in ob.data.bones:
        b.name = custom_finger_name(b.name)
    bpy.context.view_layer.objects.active = ob
    assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
    assert {m.part for m in ob.anyfill.joints} == {"body"}
    assert panel_buttons(bpy, ext) == [("anim.anyfill_add_hand_part", "Add Left Hand", {"side": "L"}),
                                       ("anim.anyfill_add_hand_part", "Add Right Hand", {"side": "R"})]
    assert bpy.ops.anim.anyfill_add_hand_part(side="L") == {"FINISHED"}
    rows = [m for m in ob.anyfill.joints if m.part == "hand.L"]
    assert [m.joint for m in rows] == list(ext.rig.HAND_JOINTS)
    assert {m.joint: m.bone for m in rows if m.bone} == {"WRIST": "mixamorig7:LeftHand"}  # the body's hand bone
    assert [m.part for m in ob.anyfill.joints][-len(rows):] == ["hand.L"] * len(rows)
    with pytest.raises(RuntimeError, match="has a hand.L part already"):
        bpy.ops.anim.anyfill_add_hand_part(side="L")
    for m in rows:  # picked by hand, as the panel's bone fields do
        m.bone = auto[m.joint]
    assert not ext.plan.mapped_twice(ob) and not ext.plan.thinly_mapped(ob)
    assert run_fill(bpy, ob) == {"FINISHED"}
    assert finger_keys(ob) == reference
    assert bpy.ops.anim.anyfill_auto_map(keep=True) == {"FINISHED"}  # keeping the choices keeps the hand
    assert {(m.joint, m.bone) for m in ob.anyfill.joints if m.part == "hand.L"} == set(auto.items())
    assert ob.anyfill.skeleton == "body + hand.L"
    assert panel_buttons(bpy, ext) == [("anim.anyfill_remove_part", "Remove Left Hand", {"part": "hand.L"}),
                                       ("anim.anyfill_add_hand_part", "Add Right Hand", {"side": "R"})]
    assert bpy.ops.anim.anyfill_remove_part(part="hand.L") == {"FINISHED"}
    assert {m.part for m in ob.anyfill.joints} == {"body"} and ob.anyfill.skeleton == "body"
    with pytest.raises(RuntimeError, match="has no part 'hand.L' in its mapping; its parts: body"):
        bpy.ops.anim.anyfill_remove_part(part="hand.L")
