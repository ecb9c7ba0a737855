"""Blender's Vector pass, rendered by Cycles, read by the backend: the sign, axis and unit
convention that backend.vision.passes.vector_to_flow assumes.

An orthographic camera 6.4 units wide over 64 pixels makes one unit exactly 10 pixels, so an
emissive square moved by 0.3 then 0.5 units moves by 3 pixels right, then 5 pixels up.
The EXR files are decoded by the backend itself (its own Python, as the service decodes
uploads): Blender's image loader drops the vector's fourth channel.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import bpy
import pytest

import compat
from tests.blender.support import BACKEND_PYTHON, REPO

W, H = 64, 48
# frame → the square's centre in scene units (x right, y up in the camera's view)
PLACES = {1: (0.0, 0.0), 2: (0.3, 0.0), 3: (0.3, 0.5)}

# Run by the backend's Python: per frame, the flows on the square and off it, and where it is.
READER = """
import json, sys
import numpy as np
from backend.jobs import Pass
from backend.vision.imageio import decode
from backend.vision.passes import vector_to_flow
folder, frames = sys.argv[1], json.loads(sys.argv[2])
out = {}
for f in frames:
    read = lambda p: decode(open(f"{folder}/{p.value}/{f:04d}.exr", "rb").read(),
                            max_pixels=10**7, expect_size=None, pass_=p)
    back, fwd = vector_to_flow(read(Pass.VECTOR))
    square = read(Pass.DEPTH)[..., 0] < 1e9
    ys, xs = np.nonzero(square)
    out[f] = {
        "backward": np.median(back[square], axis=0).tolist(),
        "forward": np.median(fwd[square], axis=0).tolist(),
        "spread": float(max(np.ptp(back[square], axis=0).max(), np.ptp(fwd[square], axis=0).max())),
        "background": float(max(np.abs(back[~square]).max(), np.abs(fwd[~square]).max())),
        "box": [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())],
    }
print(json.dumps(out))
"""


def render_moving_square(folder: Path) -> None:
    bpy.ops.wm.read_homefile(use_empty=True)
    scene = bpy.context.scene
    scene.render.engine = "CYCLES"
    scene.cycles.device = "CPU"
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.resolution_x, scene.render.resolution_y = W, H
    scene.render.resolution_percentage = 100
    scene.render.use_motion_blur = False
    scene.frame_start, scene.frame_end = 1, 3

    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    camera.data.type = "ORTHO"
    camera.data.ortho_scale = 6.4  # the wider side: 64 px over 6.4 units
    camera.location = (0.0, 0.0, 10.0)  # looking down -Z: x right, y up in the picture
    scene.collection.objects.link(camera)
    scene.camera = camera

    bpy.ops.mesh.primitive_plane_add(size=1.0)
    square = bpy.context.active_object
    for frame, (x, y) in PLACES.items():  # a key on every frame: no interpolation involved
        square.location = (x, y, 0.0)
        square.keyframe_insert("location", frame=frame)

    view_layer = scene.view_layers[0]
    view_layer.use_pass_vector = True
    view_layer.use_pass_z = True
    tree, _ = compat.compositor_tree(scene)
    layers = tree.nodes.new("CompositorNodeRLayers")
    layers.scene = scene
    layers.layer = view_layer.name
    for name, socket in (("vector", "Vector"), ("depth", "Depth")):
        _, node_input = compat.file_output(tree, f"{folder}/{name}/", "OPEN_EXR")
        tree.links.new(layers.outputs[socket], node_input)
    for frame in PLACES:
        scene.frame_set(frame)
        bpy.ops.render.render(scene=scene.name)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> dict[int, dict[str, Any]]:
    if not BACKEND_PYTHON.is_file():
        pytest.skip(f"no backend environment at {BACKEND_PYTHON} (run `make setup`)")
    folder = tmp_path_factory.mktemp("vector-pass")
    render_moving_square(folder)
    done = subprocess.run(
        [str(BACKEND_PYTHON), "-c", READER, str(folder), json.dumps(list(PLACES))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {int(f): v for f, v in json.loads(done.stdout).items()}


def test_square_moves_as_placed(measured: dict[int, dict[str, Any]]) -> None:
    x0, y0, x1, y1 = measured[1]["box"]
    assert (x1 - x0 + 1, y1 - y0 + 1) == (10, 10)  # 10 px per unit: the camera is as intended
    assert measured[2]["box"] == [x0 + 3, y0, x1 + 3, y1]  # 3 px right
    assert measured[3]["box"] == [x0 + 3, y0 - 5, x1 + 3, y1 - 5]  # then 5 px up (y down)


def test_vector_pass_convention(measured: dict[int, dict[str, Any]]) -> None:
    """backward = where the surface was a frame ago, forward = where it will be, in pixels,
    x right and y down, relative to this frame's pixel: what the pixel boxes show."""
    expected = {
        1: {"backward": [0, 0], "forward": [3, 0]},
        2: {"backward": [-3, 0], "forward": [0, -5]},
        3: {"backward": [0, 5], "forward": [0, 0]},
    }
    for frame, flows in expected.items():
        got = measured[frame]
        for name, value in flows.items():
            assert got[name] == pytest.approx(value, abs=1e-3), (frame, name, got)
        assert got["spread"] < 1e-3  # one rigid motion over the whole square
        assert got["background"] == 0.0  # nothing moves where there is no surface
