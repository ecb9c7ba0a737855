"""framesmith.stylize in headless Blender: beauty, depth, normal and Freestyle line art rendered
through the compositor, stylized by a real backend on tiny random models, imported as a strip."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bpy

import compat
from client.request import StylizeRequest, from_json

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
