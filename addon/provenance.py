"""Which keys Anyfill wrote, so that a pose the animator keys over one of them is the animator's.

Blender keeps a key's type when a key is inserted on its frame (``insert_bezt_fcurve`` replaces the key's value
only), so a pose keyed on a frame a Fill wrote stays typed Generated, and the next Fill or Complete Pose wrote over
it: the animator's correction lost without a word. After each write the Generated keys of every channel written
are recorded (frame and value, as Blender stores them) in the action's custom properties, by slot and channel (the
slot by its handle, which a rename keeps: by its identifier, a slot renamed in the Action Editor lost its record and
the next Fill wrote over the animator's pose);
before a fill, a Generated key its channel's record does not hold, or another key on a frame where it holds one, was
set by the animator, and the bone's pose on that frame becomes the animator's (:func:`adopt`): it conditions the fill
and is never replaced. A channel with no record (keys an older version wrote) is left as it is.
"""

from __future__ import annotations

import hashlib
import re

import bpy
import numpy as np

from . import curves, keys
from .fcurves import bulk_get, enum_value

RECORD = "anyfill_generated"  # the action's custom property: channel -> its Generated keys when last written
_BONE = re.compile(r'^pose\.bones\["((?:[^"\\]|\\.)*)"\]')


def _slot(obj) -> tuple[str, str]:
    """The record's names for the object's slot: by its handle (stable across renames, save and reload, in Blender 4.4
    and 5.0), and by its identifier as records made before were kept (read once, then written by handle)."""
    ad = obj.animation_data
    slot = ad.action_slot if ad is not None else None
    return (f"#{slot.handle}", slot.identifier) if slot is not None else ("", "")


def _name(slot: str, data_path: str, index: int) -> str:
    """The record's key for a channel (custom property names hold at most 63 bytes)."""
    return hashlib.sha1(f"{slot}\0{data_path}\0{index}".encode()).hexdigest()[:32]


def _held(store, slot: tuple[str, str], data_path: str, index: int):
    """A channel's record: by the slot's handle, else as an earlier version kept it (by the slot's identifier)."""
    held = store.get(_name(slot[0], data_path, index))
    return held if held is not None else store.get(_name(slot[1], data_path, index))


def _generated(fc) -> tuple[np.ndarray, np.ndarray]:
    """A curve's key types (n,) and each key's (frame, value) as one int64 of their float32 bits (n,)."""
    kp = fc.keyframe_points
    n = len(kp)
    types = bulk_get(kp, "type", n, 1, np.uint8)
    bits = bulk_get(kp, "co", n, 2).view(np.uint32).astype(np.int64)
    return types, (bits[0::2] << 32) | bits[1::2]


def record(obj, bag, channels) -> None:
    """Record the Generated keys of the channels ``(data_path, index)`` as they are now (after a write)."""
    action = bag.id_data
    store = action.get(RECORD)
    if store is None:
        action[RECORD] = {}
        store = action[RECORD]
    slot, gen = _slot(obj), keys.generated_type_value()
    for path, index in dict.fromkeys(channels):
        fc = bag.fcurves.find(path, index=index)
        if fc is None:
            continue
        types, pairs = _generated(fc)
        held = pairs[types == gen]
        # custom properties hold 32-bit integers: each pair as its two halves, the array taken as a buffer (an array
        # property set from a buffer of another length than it holds corrupts Blender's memory: removed first)
        name, before = _name(slot[0], path, index), _name(slot[1], path, index)
        for gone in (name, before):
            if gone in store:
                del store[gone]
        store[name] = np.stack([held >> 32, held & 0xFFFFFFFF], 1).astype(np.uint32).view(np.int32).ravel()


def saved(action) -> dict[str, np.ndarray] | None:
    """The action's record as it is now, to put back with :func:`restore` (a Fill of several parts that fails after
    one was written takes its keys back, and their record with them)."""
    store = action.get(RECORD)
    if store is None:
        return None
    return {name: np.frombuffer(memoryview(held), dtype=np.int32).copy() for name, held in store.items()}


def restore(action, record: dict[str, np.ndarray] | None) -> None:
    """Put back a record :func:`saved` took (made anew: an array property set from a buffer of another length than
    it holds corrupts Blender's memory)."""
    if RECORD in action:
        del action[RECORD]
    if record is not None:
        action[RECORD] = {}
        store = action[RECORD]
        for name, held in record.items():
            store[name] = held


def adopt(obj, change: bool = True) -> list[tuple[str, float]]:
    """Make the poses the animator keyed over Anyfill's keys the animator's (see the module docstring); returns the
    (bone, frame) of each pose adopted, in order. ``change=False``: only say which.

    A key set over one of Anyfill's on one channel alone (a key moved or retimed in the Graph Editor, one channel
    keyed, one key's type changed) adopts the bone's whole pose on that frame, as keying the pose does: its Generated
    keys there become the animator's, and each channel Anyfill writes on the bone that has no key there gets one
    (type Keyframe) holding what its curve showed, the pose the animator saw. Otherwise the next fill read the
    bone's other channels there from the animator's keys alone and wrote round the one kept (a 9.7-degree kink)."""
    bag = keys.channelbag(obj)
    store = bag.id_data.get(RECORD) if bag is not None else None
    if store is None:
        return []
    slot, gen = _slot(obj), keys.generated_type_value()
    by_bone: dict[str, list] = {}
    changed: dict[str, set[float]] = {}
    for fc in bag.fcurves:
        m = _BONE.match(fc.data_path)
        if m is None:
            continue
        bone = bpy.utils.unescape_identifier(m.group(1))  # the name as the animator typed it, for the report
        types, pairs = _generated(fc)
        held = _held(store, slot, fc.data_path, fc.array_index)
        by_bone.setdefault(bone, []).append((fc, types, pairs, held is not None))
        if held is None:
            continue
        halves = np.frombuffer(memoryview(held), dtype=np.int32).view(np.uint32)
        recorded = (halves[0::2].astype(np.int64) << 32) | halves[1::2].astype(np.int64)
        # a Generated key not as written, or another key on a frame where Anyfill wrote one
        generated = types == gen
        set_over = (generated & ~np.isin(pairs, recorded)) | (~generated & np.isin(_frames(pairs), _frames(recorded)))
        if set_over.any():
            changed.setdefault(bone, set()).update(float(f) for f in _frames(pairs[set_over]))
    own = enum_value("type", "KEYFRAME")
    adopted = []
    for bone, frames in changed.items():
        at = np.array(sorted(frames), dtype=np.float32)
        taken = np.zeros(len(at), dtype=bool)
        for fc, types, pairs, written in by_bone[bone]:
            on = (types == gen) & np.isin(_frames(pairs), at)
            taken |= np.isin(at, _frames(pairs[on]))
            if on.any() and change:
                fc.keyframe_points.foreach_set("type", np.where(on, own, types).astype(np.int32))
            if written and not fc.mute and not _locked(fc):
                lack = ~curves.near(at, np.sort(_frames(pairs).astype(np.float64)))
                taken |= lack
                if lack.any() and change:
                    missing = at[lack].astype(np.float64)
                    values = [fc.evaluate(f) for f in missing]  # the curve as the animator saw it
                    curves.write_keys(bag, fc.data_path, fc.array_index, fc.group.name if fc.group else "", missing,
                                      values, key_type="KEYFRAME")
        adopted += [(bone, float(f)) for f in at[taken]]
    return sorted(adopted, key=lambda bf: (bf[1], bf[0]))


def _frames(pairs: np.ndarray) -> np.ndarray:
    """The frames (float32) of keys packed as :func:`_generated` packs them."""
    return (pairs >> 32).astype(np.uint32).view(np.float32)


def _locked(fc) -> bool:
    """Whether Blender's keying refuses the channel (its curve or its group locked): no key is added there."""
    return bool(fc.lock or (fc.group is not None and fc.group.lock))
