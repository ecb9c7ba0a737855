"""framesmith.stylize in headless Blender: beauty, depth, normal and Freestyle line art rendered
through the compositor, stylized by a real backend on tiny random models, imported as a strip."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

import compat
from client.http import BackendClient
from client.request import StylizeRequest, from_json
from tests.blender.support import ADDON

REQUEST_KEY = "framesmith_request"


def test_stylize_lands_frame_for_frame(shot: Any, prefs: Any, tiny_backend: dict) -> None:
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    props = shot.framesmith
    props.prompt = "a watercolour cube"
    props.steps = 2
    props.strength = 0.8
    props.chunk_size, props.overlap = 4, 1
    props.controlnet_depth.enabled = True
    props.controlnet_normal.enabled = True
    props.controlnet_lineart.enabled = True
    shot.frame_end = 6
    use_nodes_before = shot.use_nodes

    assert bpy.ops.framesmith.stylize() == {"FINISHED"}

    (strip,) = [s for s in shot.sequence_editor.strips_all if REQUEST_KEY in s]
    assert strip.type == "IMAGE" and strip.channel == 1
    assert compat.strip_span(strip) == (1, 7)
    folder = Path(bpy.path.abspath(strip.directory))
    assert [e.filename for e in strip.elements] == [f"{f:04d}.png" for f in range(1, 7)]
    assert all((folder / e.filename).is_file() for e in strip.elements)
    request = from_json(strip[REQUEST_KEY])
    assert isinstance(request, StylizeRequest) and request.prompt == "a watercolour cube"
    assert [c.pass_name for c in request.controlnets] == ["depth", "normal", "lineart"]
    assert request.world_to_camera is not None  # normals go to the backend in camera space
    passes = folder / "passes"
    # video2video with temporal fusion (on by default): the Vector pass goes up with the rest
    assert sorted(p.name for p in passes.iterdir()) == ["beauty", "depth", "lineart", "normal",
                                                        "vector"]  # fmt: skip
    assert (passes / "depth" / "0003.exr").is_file()
    assert (passes / "vector" / "0003.exr").is_file()
    assert request.temporal_fusion and request.uses_fusion
    (job,) = props.jobs
    assert job.state == "DONE" and job.kind == "STYLIZE"

    # the scene is left as it was: no extra compositor nodes, passes and Freestyle off again
    assert shot.use_nodes == use_nodes_before
    assert not shot.render.use_freestyle
    assert not shot.view_layers[0].use_pass_z and shot.render.use_sequencer
    assert not shot.view_layers[0].use_pass_vector


def painted_image(name: str, width: int = 16, height: int = 12) -> Any:
    """An image made in Blender (generated, then painted): no file anywhere."""
    image = bpy.data.images.new(name, width, height, alpha=True)
    pixels = [0.0] * (width * height * 4)
    for i in range(width * height):
        x, y = i % width, i // width
        pixels[i * 4 : i * 4 + 4] = [x / width, y / height, 0.5, 1.0]
    image.pixels.foreach_set(pixels)
    return image


def test_stylize_uploads_the_style_reference_once_and_names_it(
    shot: Any, prefs: Any, tiny_backend: dict
) -> None:
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    props = shot.framesmith
    props.prompt = "a cube in the style of the reference"
    props.steps, props.strength = 2, 0.8
    props.chunk_size, props.overlap = 4, 1
    props.temporal_fusion = False
    shot.frame_end = 3
    image = painted_image("Painted Style")
    props.use_reference, props.reference_image, props.ip_adapter_scale = True, image, 0.9

    assert bpy.ops.framesmith.stylize() == {"FINISHED"}

    (job,) = props.jobs
    assert job.state == "DONE", job.message
    (strip,) = [s for s in shot.sequence_editor.strips_all if REQUEST_KEY in s]
    request = from_json(strip[REQUEST_KEY])
    assert isinstance(request, StylizeRequest) and request.reference is not None
    assert (request.reference.name, request.reference.scale) == ("Painted Style", 0.9)
    digest = request.reference.sha256
    assert len(digest) == 64 and "pixels" not in strip[REQUEST_KEY]
    # the painted image was written once as a PNG named by its hash, and exactly that went up
    local = Path(job.folder).parent / "references" / f"{digest[:16]}.png"
    assert hashlib.sha256(local.read_bytes()).hexdigest() == digest
    inputs = tiny_backend["data"] / "jobs" / job.job_id / "inputs"
    assert [p.name for p in (inputs / "reference").iterdir()] == ["000000.png"]
    assert (inputs / "reference" / "000000.png").read_bytes() == local.read_bytes()
    backend_job = BackendClient(tiny_backend["connection"]).job(job.job_id)
    assert backend_job["params"]["style_reference"] is True
    assert backend_job["params"]["ip_adapter_scale"] == 0.9
    assert backend_job["params"]["ip_adapter"]  # the backend pinned its first IP-Adapter
    # nothing rendered for it, and the user's image is as it was (no file, no extra image)
    assert "reference" not in {p.name for p in (Path(job.folder) / "passes").iterdir()}
    assert (image.source, image.filepath, image.packed_file) == ("GENERATED", "", None)
    stills = [i.name for i in bpy.data.images if i.source in ("FILE", "GENERATED")]
    assert stills == ["Painted Style"]  # its throw-away copy is gone again
    props.use_reference, props.reference_image = False, None


def test_reference_files_as_they_go_up(shot: Any, addon: ModuleType, tmp_path: Path) -> None:
    """An unchanged PNG file goes up as it is; a packed PNG as its bytes; anything else (JPEG,
    painted) as a PNG copy; what cannot be a still image is refused with a sentence."""
    stylize = sys.modules[f"{ADDON}.operators.stylize"]
    common = sys.modules[f"{ADDON}.operators.common"]
    folder = tmp_path / "references"
    painted = painted_image("Ref")
    painted.filepath_raw, painted.file_format = str(tmp_path / "ref.png"), "PNG"
    painted.save()
    on_disk = bpy.data.images.load(str(tmp_path / "ref.png"))
    path, digest = stylize.reference_file(on_disk, folder)
    assert path == tmp_path / "ref.png" and not folder.exists()
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()

    on_disk.pack()
    assert stylize.reference_file(on_disk, folder) == (folder / f"{digest[:16]}.png", digest)

    painted.filepath_raw, painted.file_format = str(tmp_path / "ref.jpg"), "JPEG"
    painted.save()
    jpeg = bpy.data.images.load(str(tmp_path / "ref.jpg"))
    path, digest = stylize.reference_file(jpeg, folder)
    assert path.read_bytes().startswith(b"\x89PNG") and path.parent == folder
    assert (jpeg.file_format, jpeg.filepath) == ("JPEG", str(tmp_path / "ref.jpg"))
    copy = bpy.data.images.load(str(path))
    assert tuple(copy.size) == tuple(jpeg.size)
    assert list(copy.pixels) == list(jpeg.pixels)  # the same 8-bit colours, not re-managed
    bpy.data.images.remove(copy)
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temp file left

    hdr = bpy.data.images.new("HDR", 4, 4, alpha=True, float_buffer=True)
    hdr.generated_color = (0.5, 0.2, 0.05, 1.0)  # shown as this: stored scene-linear
    path, _digest = stylize.reference_file(hdr, folder)
    copy = bpy.data.images.load(str(path))
    assert copy.pixels[:4] == pytest.approx((0.5, 0.2, 0.05, 1.0), abs=1 / 255)
    bpy.data.images.remove(copy)

    missing = bpy.data.images.load(str(tmp_path / "ref.png"), check_existing=False)
    missing.filepath = str(tmp_path / "gone.png")
    with pytest.raises(common.UserError, match="could not be read"):
        stylize.reference_file(missing, folder)
    with pytest.raises(common.UserError, match="choose a style reference image"):
        stylize.reference_file(None, folder)
    for image in (painted, on_disk, jpeg, hdr, missing):
        bpy.data.images.remove(image)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_stylize_renders_and_sends_at_the_working_size_and_the_strip_fills_the_frame(
    shot: Any, prefs: Any, tiny_backend: dict
) -> None:
    """A 64×48 render stylized at a 24 px working size: every pass is rendered and sent at
    32×24, the request says so, the results come back at it and the strip is scaled to fill
    the 64×48 frame; the scene's resolution is untouched. The Viewport look renders the beauty
    with Workbench."""
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    props = shot.framesmith
    props.prompt, props.steps, props.strength = "ink", 1, 1.0
    props.working_size = 24
    props.render_source = "VIEWPORT"
    props.controlnet_lineart.enabled = True
    shot.frame_end = 3

    assert bpy.ops.framesmith.stylize() == {"FINISHED"}

    (strip,) = [s for s in shot.sequence_editor.strips_all if REQUEST_KEY in s]
    request = from_json(strip[REQUEST_KEY])
    assert (request.width, request.height) == (32, 24)
    folder = Path(bpy.path.abspath(strip.directory))
    assert png_size(folder / "passes" / "beauty" / "0002.png") == (32, 24)
    assert png_size(folder / "guides" / "lineart" / "0002.png") == (32, 24)
    assert png_size(folder / strip.elements[0].filename) == (32, 24)
    assert (strip.transform.scale_x, strip.transform.scale_y) == (2.0, 2.0)
    assert (shot.render.resolution_x, shot.render.resolution_y) == (64, 48)
    assert shot.render.engine == "CYCLES"
