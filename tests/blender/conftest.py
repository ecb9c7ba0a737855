"""Headless Blender (the bpy module) with Framesmith loaded as a real extension.

Run with .venv-blender's python. BLENDER_USER_RESOURCES must point at a throw-away folder before
bpy is first imported, so these tests never touch a user's Blender preferences. Everything
registered here is unregistered at teardown: the interpreter hangs at exit otherwise.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.blender.support import ADDON, REPO_MODULE

if find_spec("bpy") is None:
    collect_ignore_glob = ["test_*.py"]  # no bpy module here: nothing in this folder can run
else:
    os.environ.setdefault(
        "BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="framesmith-blender-user-")
    )

W, H = 64, 48


@pytest.fixture(scope="session")
def addon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The source folder, enabled as the extension `framesmith` of a local repository."""
    import addon_utils
    import bpy

    from tests.blender.support import REPO

    repo_dir = tmp_path_factory.mktemp("extensions")
    (repo_dir / "framesmith").symlink_to(REPO, target_is_directory=True)
    repos = bpy.context.preferences.extensions.repos
    repos.new(
        name="Framesmith tests", module=REPO_MODULE, custom_directory=str(repo_dir), source="USER"
    )
    errors: list[BaseException] = []
    module = addon_utils.enable(ADDON, default_set=True, handle_error=errors.append)
    if errors or module is None:
        raise RuntimeError(f"the extension did not register: {errors!r}")
    yield module
    addon_utils.disable(ADDON, default_set=True, handle_error=errors.append)
    # The repository stays: it lives in the throw-away BLENDER_USER_RESOURCES.
    assert not errors, errors


@pytest.fixture(scope="session")
def backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A real backend process (the backend's own .venv), as the add-on's launcher starts it."""
    from client.launcher import LaunchSpec, launch, stop
    from tests.blender.support import BACKEND_PYTHON, REPO

    if not BACKEND_PYTHON.is_file():
        pytest.skip(f"no backend environment at {BACKEND_PYTHON} (run `make setup`)")
    root = tmp_path_factory.mktemp("backend")
    spec = LaunchSpec(
        python=BACKEND_PYTHON,
        root=REPO,
        data_dir=root / "data",
        models_dir=root / "models",
        device="cpu",
    )
    running = launch(spec, timeout=90)
    yield {"data": spec.data_dir, "models": spec.models_dir, "connection": running.connection}
    stop(spec.data_dir)
    os.waitpid(running.pid, 0)


@pytest.fixture(scope="session")
def tiny_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A second backend whose models folder holds the tiny random models (for stylize)."""
    import subprocess

    from client.launcher import LaunchSpec, launch, stop
    from tests.blender.support import BACKEND_PYTHON, REPO

    if not BACKEND_PYTHON.is_file():
        pytest.skip(f"no backend environment at {BACKEND_PYTHON} (run `make setup`)")
    root = tmp_path_factory.mktemp("tiny-backend")
    models = root / "models"
    subprocess.run(
        [str(BACKEND_PYTHON), "-m", "backend", "make-tiny-models", str(models)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    spec = LaunchSpec(BACKEND_PYTHON, REPO, root / "data", models, device="cpu")
    running = launch(spec, timeout=90)
    yield {"data": spec.data_dir, "models": models, "connection": running.connection}
    stop(spec.data_dir)
    os.waitpid(running.pid, 0)


@pytest.fixture
def prefs(addon: ModuleType, backend: dict[str, Any]) -> Iterator[Any]:
    """The add-on's preferences, pointed at the test backend (restored after each test)."""
    import bpy

    from tests.blender.support import BACKEND_PYTHON

    p = bpy.context.preferences.addons[ADDON].preferences
    p.backend_mode = "LOCAL"
    p.python_path = str(BACKEND_PYTHON)
    p.data_dir = str(backend["data"])
    p.models_dir = str(backend["models"])
    p.device = "cpu"
    p.background_render = True
    yield p
    p.backend_mode = "LOCAL"
    p.background_render = True


@pytest.fixture
def in_process_renders(prefs: Any) -> Any:
    """Interactive takes render one frame per tick in this Blender (the preference's fallback)
    instead of in a background render process."""
    prefs.background_render = False
    return prefs


@pytest.fixture
def runtime(addon: ModuleType) -> ModuleType:
    """The add-on's runtime module (watched runners, the timer function)."""
    return sys.modules[f"{ADDON}.operators.runtime"]


@pytest.fixture
def session_state(addon: ModuleType) -> ModuleType:
    """The add-on's session state (model listing, backend status, watched takes)."""
    return sys.modules[f"{ADDON}.state"]


@pytest.fixture
def shot(prefs: Any, tmp_path: Path) -> Any:
    """A fresh file: a glowing cube sliding with keys at 1, 4 and 7; Cycles, 64×48, 1 sample;
    results go to tmp_path. Frame range 1–8, so the last frame holds the last key."""
    import bmesh
    import bpy

    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end = 1, 8

    mesh = bpy.data.meshes.new("Cube")
    bm = bmesh.new()
    bmesh.ops.create_cube(bm, size=1.0)
    bm.to_mesh(mesh)
    bm.free()
    glow = bpy.data.materials.new("Glow")  # emissive: visible without lights, even at 1 sample
    glow.use_nodes = True
    bsdf = glow.node_tree.nodes["Principled BSDF"]
    bsdf.inputs["Emission Color"].default_value = (1.0, 0.6, 0.2, 1.0)
    bsdf.inputs["Emission Strength"].default_value = 2.0
    mesh.materials.append(glow)
    cube = bpy.data.objects.new("Cube", mesh)
    scene.collection.objects.link(cube)
    for frame, x in ((1, -1.5), (4, 0.0), (7, 1.5)):
        cube.location = (x, 0.0, 0.0)
        cube.keyframe_insert("location", frame=frame)
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.location = (0.0, -6.0, 0.0)
    camera.rotation_euler = (math.radians(90), 0.0, 0.0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    bpy.context.view_layer.objects.active = cube
    cube.select_set(True)

    scene.framesmith.output_dir = str(tmp_path / "out") + "/"
    scene.framesmith.working_size = H  # stylize at the render's own size (the engine's: 512)
    scene.framesmith.inbetween_method = "FLOW"
    return scene


@pytest.fixture
def listing_file(addon: ModuleType) -> Iterator[Path]:
    """The listing's file; whatever this test checks is put back afterwards (the panel test
    expects no models)."""
    model_menus = sys.modules[f"{ADDON}.state"]
    path = model_menus.MODELS.path
    assert path is not None, "model_menus.register() did not find the user folder"
    before = path.read_bytes() if path.is_file() else None
    yield path
    if before is None:
        path.unlink(missing_ok=True)
    else:
        path.write_bytes(before)
    model_menus.MODELS.use_folder(path.parent)  # read again on first use
