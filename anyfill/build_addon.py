"""``anyfill build-addon``: the Blender extension zip, ``dist/anyfill-<version>.zip``.

The zip holds ``blender_manifest.toml`` and the contents of ``addon/`` at its root (what Blender's
``extension build`` makes), without caches. It uses only the standard library: no training packages needed.
:func:`validate` runs Blender's own extension validator (``blender_ext.py validate``, shipped inside the
``bpy`` wheel and inside Blender) when it can be found.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXCLUDE_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
EXCLUDE_SUFFIXES = {".pyc", ".pyo", ".orig", ".rej"}
FIXED_TIME = (2020, 1, 1, 0, 0, 0)  # reproducible archives


def manifest_field(manifest: str, key: str) -> str:
    m = re.search(rf'^{key}\s*=\s*"([^"]*)"', manifest, re.M)
    if not m:
        raise ValueError(f"blender_manifest.toml has no {key!r}")
    return m.group(1)


def addon_files(addon_dir: Path) -> list[Path]:
    files = []
    for p in sorted(addon_dir.rglob("*")):
        rel = p.relative_to(addon_dir)
        if p.is_dir() or any(part in EXCLUDE_DIRS or part.startswith(".") for part in rel.parts):
            continue
        if p.suffix in EXCLUDE_SUFFIXES:
            continue
        files.append(p)
    return files


def build(root: Path = ROOT, out_dir: Path | None = None) -> Path:
    """Write ``<out_dir>/<id>-<version>.zip`` (default ``dist/``) and return its path."""
    manifest_path, addon_dir = root / "blender_manifest.toml", root / "addon"
    manifest = manifest_path.read_text()
    ext_id, version = manifest_field(manifest, "id"), manifest_field(manifest, "version")
    if not (addon_dir / "__init__.py").is_file():
        raise FileNotFoundError(f"{addon_dir / '__init__.py'} is missing")
    out_dir = out_dir or root / "dist"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"{ext_id}-{version}.zip"
    tmp = target.with_suffix(".zip.tmp")
    with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        entries = [(manifest_path, "blender_manifest.toml")]
        entries += [(p, p.relative_to(addon_dir).as_posix()) for p in addon_files(addon_dir)]
        for src, name in entries:
            info = zipfile.ZipInfo(name, FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, src.read_bytes())
    tmp.replace(target)
    return target


def validator_script() -> Path | None:
    """Blender's ``blender_ext.py`` from the installed ``bpy`` wheel, if any."""
    import importlib.util

    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        found = sorted(Path(base).glob("*/scripts/addons_core/bl_pkg/cli/blender_ext.py"))
        if found:
            return found[-1]
    return None


def validate(zip_path: Path, python: str = sys.executable) -> tuple[bool, str]:
    """Run Blender's extension validator on the zip: (passed, its output)."""
    script = validator_script()
    if script is None:
        return False, "Blender's validator (bpy wheel: bl_pkg/cli/blender_ext.py) is not installed"
    r = subprocess.run([python, str(script), "validate", str(zip_path)], capture_output=True, text=True,
                       timeout=120)
    return r.returncode == 0, (r.stdout + r.stderr).strip()


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``build-addon`` to ``anyfill``."""
    p = sub.add_parser("build-addon", help="build the Blender extension zip into dist/",
                       description="Build the Blender extension zip.")
    p.add_argument("--out", type=Path, default=None, help="output folder (default dist/)")
    p.add_argument("--no-validate", action="store_true", help="skip Blender's extension validator")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """``anyfill build-addon``."""
    path = build(out_dir=args.out)
    print(f"wrote {path}")
    if not args.no_validate:
        ok, text = validate(path)
        print(text)
        if not ok:
            print("anyfill build-addon: the extension did not validate", file=sys.stderr)
            return 1
    return 0

