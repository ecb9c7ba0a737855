"""The manifest passes Blender's own extension validator, and the built zip holds no tests."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.blender.support import REPO, bpy_scripts_dir


def blender_ext(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cli = bpy_scripts_dir() / "addons_core" / "bl_pkg" / "cli" / "blender_ext.py"
    return subprocess.run(
        [sys.executable, str(cli), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def blender_tags() -> dict[str, list[str]]:
    """Blender's own tag lists, read from the module that defines them (without importing bpy)."""
    source = bpy_scripts_dir() / "modules" / "_bpy_internal" / "extensions" / "tags.py"
    tree = ast.parse(source.read_text())
    tags = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            tags[node.targets[0].id] = sorted(ast.literal_eval(node.value))
    return {"add-on": tags["addons"], "theme": tags["themes"]}


def test_manifest_passes_blenders_validator_with_blenders_tags(tmp_path: Path) -> None:
    tags = tmp_path / "tags.json"
    tags.write_text(json.dumps(blender_tags()))
    result = blender_ext("validate", "--valid-tags", tags, REPO)
    assert result.returncode == 0, result.stdout + result.stderr


def test_built_zip_is_the_extension_without_tests_or_environments(tmp_path: Path) -> None:
    result = blender_ext("build", "--source-dir", REPO, "--output-dir", tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (archive,) = tmp_path.glob("framesmith-*.zip")
    names = zipfile.ZipFile(archive).namelist()
    tops = {name.split("/", 1)[0] for name in names}
    assert {"blender_manifest.toml", "__init__.py", "client", "backend"} <= tops
    for unwanted in ("tests", "demo", "demo-output", ".venv", ".venv-blender", ".ci", "build"):
        assert unwanted not in tops, f"{unwanted}/ is in the zip"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
