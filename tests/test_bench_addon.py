"""``anyfill bench addon`` in real Blender with the test backend: a Mixamo shot played forward and back, Blender's
side of Fill timed with a key on every frame and with editable curves, the editable curves measured with
Blender's own ``fcurve.evaluate`` against the dense fill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.blender, pytest.mark.data, pytest.mark.slow]

MIXAMO = "foreign/mixamo_walk-in-circle.bvh"


def test_a_long_shot_has_no_seam(data_root):
    from training.bench import addon
    from training.motion import bvh

    src = bvh.read(data_root / MIXAMO)
    shot = bvh.read(addon.long_shot(data_root / MIXAMO, 2 * src.n_frames))
    assert shot.n_frames == 2 * src.n_frames
    steps = np.abs(np.diff(shot.motion, axis=0)).max(axis=1)
    own = np.abs(np.diff(src.motion, axis=0)).max(axis=1)
    assert np.allclose(shot.motion[: src.n_frames], src.motion, atol=1e-4)
    assert steps.max() <= own.max() + 1e-4  # played back, not jumped back


def test_the_bench_times_both_outputs_and_measures_the_editable_curves(bpy, ext, prefs, data_root):
    from training.bench import addon, rig

    session = rig.Session(bpy, ext, prefs.backend_url, None, None)
    r = addon.run(session, data_root / MIXAMO, frames=121, every=10, repeats=1, part="body",
                  rotation_tolerance=1.0, location_tolerance_cm=1.0, unit_scale=0.01)
    d, e = r["dense"], r["editable"]
    assert r["bones"] > 10 and d["keys"] == d["dense_keys"] == e["dense_keys"] > 0
    assert 0 < e["keys"] < d["keys"]
    assert e["measured_rotation_deg"] <= 1.0 + 1e-3 and e["measured_location_cm"] <= 1.0 + 1e-3
    assert e["reported_rotation_deg"] == pytest.approx(e["measured_rotation_deg"], abs=1e-3)
    assert e["reported_location_cm"] == pytest.approx(e["measured_location_cm"], abs=1e-3)
    assert d["animator_keys_identical"] and e["animator_keys_identical"]
    assert all(d[k] > 0 for k in ("read_s", "write_s", "cpu_read_s"))
    assert "| editable |" in addon.format_table(r)
    bpy.context.scene.anyfill.keys_output = "DENSE"
    bpy.context.scene.unit_settings.scale_length = 1.0


def test_the_bench_times_a_baseline_interleaved_and_compares_its_keys(bpy, ext, prefs, data_root, tmp_path):
    """``--baseline``: another copy of the extension's modules (here this one's own) is timed beside it and
    writes the same keys."""
    import shutil

    from training.bench import addon, rig

    shutil.copytree(Path(ext.__file__).parent, tmp_path / "addon",
                    ignore=shutil.ignore_patterns("__pycache__"))
    session = rig.Session(bpy, ext, prefs.backend_url, None, None)
    r = addon.run(session, data_root / MIXAMO, frames=61, every=10, repeats=2, part="body",
                  rotation_tolerance=1.0, location_tolerance_cm=1.0, unit_scale=0.01, baseline=tmp_path / "addon")
    for output in ("dense", "editable"):
        row = r[output]
        assert row["same_keys_as_baseline"] and row["animator_keys_identical"]
        assert row["baseline"]["read_s"] > 0 and row["baseline"]["cpu_write_s"] > 0
    assert "| every frame, baseline |" in addon.format_table(r)
    bpy.context.scene.anyfill.keys_output = "DENSE"
    bpy.context.scene.unit_settings.scale_length = 1.0
