"""``anyfill build-addon``: the zip's layout, Blender's own validator, install / enable / disable / remove in
the real ``bpy``, and that the extension imports nothing but ``bpy`` and the standard library."""

from __future__ import annotations

import ast
import sys
import zipfile
from pathlib import Path

import pytest
from blender_support import EXT_MODULE, ROOT, import_bpy

ALLOWED_THIRD_PARTY = {"numpy", "bpy", "bpy_extras", "mathutils", "addon_utils"}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from anyfill.cli import main

    out = tmp_path_factory.mktemp("dist")
    assert main(["build-addon", "--out", str(out), "--no-validate"]) == 0
    (z,) = out.glob("anyfill-*.zip")
    return z


def test_zip_holds_the_manifest_and_the_addon_at_its_root(built: Path) -> None:
    names = zipfile.ZipFile(built).namelist()
    assert "blender_manifest.toml" in names and "__init__.py" in names
    expected = {p.relative_to(ROOT / "addon").as_posix() for p in (ROOT / "addon").rglob("*.py")
                if "__pycache__" not in p.parts}
    assert set(names) == expected | {"blender_manifest.toml"}
    assert built.name == "anyfill-0.1.0.zip"


def test_extension_imports_only_blender_its_numpy_and_the_standard_library() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in (ROOT / "addon").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                mods = [node.module or ""]
            else:
                continue
            for m in mods:
                top = m.split(".")[0]
                assert top in stdlib or top in ALLOWED_THIRD_PARTY, f"{path.name} imports {m}"


@pytest.mark.blender
def test_blenders_validator_accepts_the_zip(built: Path) -> None:
    import_bpy()
    from anyfill.build_addon import validate

    ok, text = validate(built)
    assert ok, text


@pytest.mark.blender
def test_install_enable_disable_remove(built: Path) -> None:
    bpy = import_bpy()
    import addon_utils

    if bpy.context.preferences.addons.get(EXT_MODULE):  # installed by another test module: start clean
        addon_utils.disable(EXT_MODULE, default_set=True)
    assert bpy.ops.extensions.package_install_files(filepath=str(built), repo="user_default",
                                                    enable_on_install=True) == {"FINISHED"}
    assert bpy.context.preferences.addons.get(EXT_MODULE)
    for op in ("fill", "complete_pose", "sample_variations", "step_variation", "keep_variation",
               "show_uncertainty", "start_backend", "auto_map", "add_hand_part", "remove_part"):
        assert hasattr(bpy.types, f"ANIM_OT_anyfill_{op}") or op in dir(bpy.ops.anim), op
        rna = getattr(bpy.ops.anim, f"anyfill_{op}").get_rna_type()
        assert rna.identifier.startswith("ANIM_OT_anyfill_")
    for panel in ("GRAPH_PT_anyfill_backend", "DOPESHEET_PT_anyfill_backend", "VIEW3D_PT_anyfill_backend"):
        assert hasattr(bpy.types, panel), panel
    assert hasattr(bpy.types.Scene, "anyfill") and hasattr(bpy.types.Object, "anyfill")
    addon_utils.disable(EXT_MODULE, default_set=True)
    assert not bpy.context.preferences.addons.get(EXT_MODULE)
    assert not hasattr(bpy.types, "VIEW3D_PT_anyfill_backend") and not hasattr(bpy.types.Scene, "anyfill")
    repo = next(i for i, r in enumerate(bpy.context.preferences.extensions.repos) if r.module == "user_default")
    repo_dir = bpy.context.preferences.extensions.repos[repo].directory
    assert (Path(repo_dir) / "anyfill").is_dir()
    assert bpy.ops.extensions.package_uninstall(repo_directory=repo_dir, repo_index=repo,
                                                pkg_id="anyfill") == {"FINISHED"}
    assert not (Path(repo_dir) / "anyfill").exists()
