"""Helpers shared by the headless Blender tests (importable without bpy)."""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BACKEND_PYTHON = REPO / ".venv" / "bin" / "python"
REPO_MODULE = "framesmith_tests"  # the local extension repository's module name
ADDON = f"bl_ext.{REPO_MODULE}.framesmith"


def bpy_scripts_dir() -> Path:
    """The `4.x/scripts` folder inside the installed bpy module (found without importing it)."""
    spec = find_spec("bpy")
    assert spec is not None and spec.origin is not None
    found = sorted(Path(spec.origin).parent.glob("[0-9]*.[0-9]*/scripts"))
    assert found, f"no scripts folder next to {spec.origin}"
    return found[-1]
