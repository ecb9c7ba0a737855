"""Temporal fusion from Blender: framesmith.stylize renders the Vector and Depth passes of every
frame and the real backend (tiny random models) receives them with `temporal_fusion` on; with
fusion off no motion pass is rendered or sent. A scene with motion blur keeps it in its beauty
render and gets its vectors from a second, cheap Cycles render."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

from client.http import BackendClient
from tests.blender.support import ADDON
from tests.blender.test_ui import Layout

FRAMES = (1, 2, 3)


def stylize(shot: Any, prefs: Any, tiny_backend: dict, fusion: bool) -> tuple[dict, Path, Path]:
    """Run framesmith.stylize (background: to the end) on the first three frames; the backend's
    job, the job's inputs folder on the backend, and the take folder."""
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    props = shot.framesmith
    props.prompt = "a watercolour cube"
    props.steps, props.strength = 2, 1.0
    props.chunk_size, props.overlap = 4, 1
    props.temporal_fusion = fusion
    shot.frame_start, shot.frame_end = FRAMES[0], FRAMES[-1]

    assert bpy.ops.framesmith.stylize() == {"FINISHED"}

    entry = props.jobs[-1]
    assert entry.state == "DONE", entry.message
    job = BackendClient(tiny_backend["connection"]).job(entry.job_id)
    return job, tiny_backend["data"] / "jobs" / entry.job_id / "inputs", Path(entry.folder)


def uploaded(inputs: Path) -> dict[str, list[tuple[int, str]]]:
    """Pass → (frame, file type) of each input the backend holds for it."""
    return {
        p.name: sorted((int(f.stem), f.suffix) for f in p.iterdir())
        for p in sorted(inputs.iterdir())
    }


PNG = [(f, ".png") for f in FRAMES]
EXR = [(f, ".exr") for f in FRAMES]


def outputs(take: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(take.glob("*.png"))}


def test_fusion_sends_vector_and_depth_of_every_frame(
    shot: Any, prefs: Any, tiny_backend: dict
) -> None:
    # A scene that saves RGB images must still give a Vector pass with its W (next-frame) channel
    shot.render.image_settings.color_mode = "RGB"
    on, inputs_on, take_on = stylize(shot, prefs, tiny_backend, fusion=True)
    assert shot.render.image_settings.color_mode == "RGB"
    assert on["params"]["temporal_fusion"] is True
    # depth for occlusion: no depth ControlNet is enabled
    assert uploaded(inputs_on) == {"beauty": PNG, "depth": EXR, "vector": EXR}
    # one render per frame wrote every pass (Cycles without motion blur gives the Vector pass)
    assert sorted(p.name for p in (take_on / "passes").iterdir()) == ["beauty", "depth", "vector"]
    assert not shot.view_layers[0].use_pass_vector and not shot.view_layers[0].use_pass_z

    off, inputs_off, take_off = stylize(shot, prefs, tiny_backend, fusion=False)
    assert off["params"]["temporal_fusion"] is False
    assert uploaded(inputs_off) == {"beauty": PNG}
    assert sorted(p.name for p in (take_off / "passes").iterdir()) == ["beauty"]
    # same seed and frames: only the motion (warped noise, latent fusion) tells the takes apart
    first, rest = FRAMES[0], FRAMES[1:]
    assert outputs(take_on).keys() == outputs(take_off).keys() == {f"{f:04d}.png" for f in FRAMES}
    assert any(
        outputs(take_on)[f"{f:04d}.png"] != outputs(take_off)[f"{f:04d}.png"] for f in rest
    ), f"fusion changed nothing after frame {first}"


def test_motion_blur_stays_in_the_beauty_and_vectors_come_from_a_guide_render(
    shot: Any, prefs: Any, tiny_backend: dict
) -> None:
    shot.render.use_motion_blur = True
    shot.framesmith.controlnet_depth.enabled = True  # depth both drives a net and gives occlusion

    job, inputs, take = stylize(shot, prefs, tiny_backend, fusion=True)

    assert job["params"]["temporal_fusion"] is True
    assert uploaded(inputs) == {"beauty": PNG, "depth": EXR, "vector": EXR}
    assert sorted(p.name for p in (take / "passes").iterdir()) == ["beauty"]
    assert sorted(p.name for p in (take / "motion").iterdir()) == ["depth", "vector"]
    assert shot.render.use_motion_blur and shot.render.engine == "CYCLES"  # put back


@pytest.mark.parametrize(
    ("engine", "blur", "passes", "batches"),
    [
        ("CYCLES", False, ("beauty", "vector", "depth"), [("passes", ("beauty", "vector", "depth"), False)]),
        ("CYCLES", True, ("beauty", "vector", "depth"), [("passes", ("beauty",), False), ("motion", ("vector", "depth"), True)]),
        ("BLENDER_WORKBENCH", False, ("beauty", "normal", "vector"), [("passes", ("beauty", "normal"), False), ("motion", ("vector",), True)]),
        ("CYCLES", True, ("depth", "vector"), [("motion", ("vector", "depth"), True)]),
        ("CYCLES", True, ("beauty", "depth"), [("passes", ("beauty", "depth"), False)]),
    ],
)  # fmt: skip
def test_shot_batches_render_vectors_with_the_beauty_only_where_cycles_can(
    shot: Any, engine: str, blur: bool, passes: tuple[str, ...], batches: list, addon: ModuleType
) -> None:
    import sys

    render = sys.modules[f"{ADDON}.operators.render"]
    shot.render.engine = engine
    shot.render.use_motion_blur = blur
    made = render.shot_batches(shot, FRAMES, passes)
    assert [(b.subdir, b.passes, b.guide) for b in made] == batches
    assert all(b.frames == FRAMES for b in made)


def test_stylize_panel_shows_the_temporal_fusion_checkbox(shot: Any, addon: ModuleType) -> None:
    import sys

    draw = sys.modules[f"{ADDON}.panels.draw"]
    shown: list[str] = []
    draw.stylize(Layout(shown), shot.framesmith)
    assert "prop:temporal_fusion" in shown and "prop:fusion_strength" in shown
    assert shot.framesmith.temporal_fusion  # on by default
    prop = shot.framesmith.bl_rna.properties["temporal_fusion"]
    assert "motion vectors" in prop.description and "steady" in prop.description
