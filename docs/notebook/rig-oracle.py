"""Rig invariance, diagnosis: a clip of the training skeleton put on the Mixamo rig (``anyfill bench rig --via``'s
construction) and filled (``bench rig``'s procedure) with the extension's matching pose, with the exact one (an
oracle: each mapped joint's ``M_j`` such that the via rig's first frame reads as the clip's own first frame),
and with the oracle's twist or swing alone. Prints Fill / Bezier for each.

    anyfill build-addon --out /tmp/addon
    python docs/notebook/rig-oracle.py /tmp/addon/anyfill-0.1.0.zip ../shared/data/bandai/dataset-1/CLIP.bvh 5,10,20
"""

import sys
from pathlib import Path

import numpy as np

from training.bench import rig as RB
from training.motion.splits import data_root

MODES = ("extension", "oracle", "twist-only", "swing-only")


def oracle_build(ext, orig, p_via, g_own, mode):
    """``plan.build_retarget`` with the body's match replaced as ``mode`` says."""
    rt = ext.retarget

    def build(obj, model, rig_arrays=None, poses=None, key_frames=None, part=None):
        ret = orig(obj, model, rig_arrays, poses, key_frames, part)
        if model["skeleton"] != "body":
            return ret
        match = ret.match.copy()
        rest = rt.orthonormal(ret.rig.rest[:, :3, :3])
        axes = {n["name"]: np.array(n["axis"]) for n in model["conventions"]["joints"]}
        for j, b in ret.bone_of.items():
            read = ret.to_model @ rt.orthonormal(p_via[0, b, :3, :3]) @ rest[b].T @ ret.from_model
            star = read.T @ g_own[0, j]
            q = rt.matrix_to_quat((ret.match[j].T @ star)[None])[0]
            axis = rt.unit(axes[ret.model.joints[j]])
            twist = rt.axis_rotation(axis, 2 * np.arctan2(np.dot(q[1:], axis), q[0]))
            match[j] = {"oracle": star, "twist-only": ret.match[j] @ twist,
                        "swing-only": ret.match[j] @ (ret.match[j].T @ star) @ twist.T}[mode]
        new = rt.Retarget(ret.model, ret.rig, ret.mapping, ret.to_model, ret.scale, match, ret.rest_mode, ret.mirrored)
        new.lift = rt.ground_lift(new, poses)
        return new

    return build


def main(addon_zip: Path, clip: Path, everies: list[int]) -> None:
    s = RB.start_session(addon_zip, models=("body", "hand"))
    try:
        bpy, ext = s.bpy, s.ext
        gt = RB.put_on_rig(bpy, RB.import_clip(bpy, clip), data_root() / "foreign" / "mixamo_walk-in-circle.bvh")
        assert bpy.ops.import_anim.bvh(filepath=str(clip), update_scene_fps=False, update_scene_duration=False,
                                       rotate_mode="NATIVE") == {"FINISHED"}
        src = bpy.context.view_layer.objects.active
        scene = bpy.context.scene
        frames = list(range(scene.frame_start, scene.frame_end + 1))
        info = ext.client.model_info(ext.client.Client(s.url, ext.client.read_token()), "body")
        own = ext.retarget.build(info, ext.keys.armature_rig(src.data), {j["name"]: j["name"] for j in info["joints"]})
        g_own, _ = own.model_globals(np.linalg.inv(np.array(src.matrix_world)) @ RB.world_poses(bpy, src, frames[:1]))
        bpy.data.objects.remove(src)
        for every in everies:
            ratios = {}
            for mode in MODES:
                ob, kept = RB.keep_every(bpy, ext, gt, every, name=f"Keys {every} {mode}")
                names = [b.name for b in ob.pose.bones]
                truth, bezier = RB.world_poses(bpy, gt, frames), RB.world_poses(bpy, ob, frames)
                for o in bpy.context.view_layer.objects:
                    o.select_set(o == ob)
                bpy.context.view_layer.objects.active = ob
                ob.anyfill.model = ob.anyfill.hand_model = ""
                assert bpy.ops.anim.anyfill_auto_map() == {"FINISHED"}
                scene.anyfill.range_mode, scene.anyfill.bones = "SCENE", "ALL"
                p_via = np.linalg.inv(np.array(ob.matrix_world)) @ RB.world_poses(bpy, ob, frames[:1])
                orig = ext.plan.build_retarget
                if mode != "extension":
                    ext.plan.build_retarget = oracle_build(ext, orig, p_via, g_own, mode)
                try:
                    assert bpy.ops.anim.anyfill_fill() == {"FINISHED"}
                finally:
                    ext.plan.build_retarget = orig
                fill = RB.world_poses(bpy, ob, frames)
                between = np.array([f not in set(kept) for f in frames])
                body = RB.part_bones(ob, names)["body"]

                def error(pose, between=between, body=body, truth=truth):
                    return np.linalg.norm(pose[between][:, body][..., :3, 3] - truth[between][:, body][..., :3, 3],
                                          axis=-1).mean()

                ratios[mode] = error(fill) / error(bezier)
            print(f"{clip.name} every {every}: " + " ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    finally:
        RB.stop_session(s)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), [int(e) for e in sys.argv[3].split(",")])
