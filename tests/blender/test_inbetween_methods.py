"""framesmith.inbetween with the methods that need more than the keys, in headless Blender
against a real backend: render-assisted (cheap Vector and Depth passes of every frame rendered
and uploaded with the keys) and diffusion (SparseCtrl in AnimateDiff, on the tiny models).

The shot (conftest.py): a glowing cube sliding left to right, keys at 1, 4 and 7 with Blender's
default easing, frames 1–8, 64×48.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import numpy as np
import pytest

import compat
from client.http import BackendClient
from client.request import InbetweenRequest, from_job, from_json
from tests.blender.invoking import TIMER, Invoker
from tests.blender.support import ADDON
from tests.blender.test_ui import Layout

REQUEST_KEY = "framesmith_request"
KEYS = (1, 4, 7)
BETWEEN = (2, 3, 5, 6)


def framesmith_strip(scene: Any) -> Any:
    (strip,) = [s for s in scene.sequence_editor.strips_all if REQUEST_KEY in s]
    return strip


def rgba(path: Path) -> np.ndarray:
    """An image file as HxWx4 floats, top row first."""
    image = bpy.data.images.load(str(path), check_existing=False)
    try:
        w, h = image.size
        return np.array(image.pixels[:], dtype=np.float32).reshape(h, w, 4)[::-1]
    finally:
        bpy.data.images.remove(image)


def cube_x(path: Path) -> float:
    """Horizontal centre (pixels) of the glowing cube: the mean column of its bright pixels."""
    bright = rgba(path)[..., :3].max(axis=2) > 0.5
    assert bright.sum() > 20, f"no cube in {path}"
    return float(np.nonzero(bright)[1].mean())


def true_renders(scene: Any, frames: tuple[int, ...], folder: Path) -> dict[int, Path]:
    """What Blender renders at each frame (the scene's own settings), to compare with."""
    folder.mkdir(parents=True)
    render, out = scene.render, {}
    for frame in frames:
        scene.frame_set(frame)
        render.filepath = str(folder / f"{frame:04d}.png")
        bpy.ops.render.render(write_still=True)
        out[frame] = folder / f"{frame:04d}.png"
    scene.frame_set(1)
    return out


def backend_input(data: Path, job_id: str, pass_name: str, frame: int) -> Path:
    """The file the backend keeps for an uploaded input (in its job folder)."""
    (path,) = [p for p in data.glob(f"**/{job_id}/inputs/{pass_name}/*") if int(p.stem) == frame]
    return path


def test_render_assisted_uploads_guide_passes_and_follows_the_shots_timing(
    shot: Any, backend: dict[str, Any], tmp_path: Path
) -> None:
    props = shot.framesmith
    props.inbetween_method = "RENDER"
    shot.render.use_motion_blur = True  # must be off for the guide passes, and come back on
    engine, samples = shot.render.engine, shot.cycles.samples
    shot.cycles.samples = 3

    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}

    strip = framesmith_strip(shot)
    assert compat.strip_span(strip) == (1, 9)
    folder = Path(bpy.path.abspath(strip.directory))
    names = [e.filename for e in strip.elements]
    assert names == [f"{f:04d}.png" for f in range(1, 9)]
    assert all((folder / n).is_file() for n in names)
    request = from_json(strip[REQUEST_KEY])
    assert isinstance(request, InbetweenRequest) and request.method == "render"

    # every frame from the first key to the last, both passes, rendered and uploaded as is
    guides = folder / "guides"
    for pass_name in ("vector", "depth"):
        files = sorted(p.name for p in (guides / pass_name).iterdir())
        assert files == [f"{f:04d}.exr" for f in range(1, 8)]
        (job,) = props.jobs
        for frame in (1, 5, 7):
            sent = backend_input(backend["data"], job.job_id, pass_name, frame)
            assert sent.read_bytes() == (guides / pass_name / f"{frame:04d}.exr").read_bytes()
    assert job.state == "DONE"

    # the scene's own settings are back
    assert shot.render.use_motion_blur and shot.render.engine == engine
    assert shot.cycles.samples == 3 and not shot.view_layers[0].use_pass_vector
    shot.cycles.samples = samples
    shot.render.use_motion_blur = False

    # keys pass through; the in-betweens put the cube where Blender would render it, following
    # the eased timing of the keys (linear timing between the keys would miss by 3–4 pixels)
    truth = true_renders(shot, BETWEEN, tmp_path / "truth")
    for key in KEYS:
        assert np.array_equal(
            rgba(folder / f"{key:04d}.png"), rgba(folder / "keys" / f"{key:04d}.png")
        )
    for frame in BETWEEN:
        assert cube_x(folder / f"{frame:04d}.png") == pytest.approx(cube_x(truth[frame]), abs=0.25)


def test_render_assisted_with_drawn_keys_of_another_size_says_what_to_change(
    shot: Any, tmp_path: Path
) -> None:
    """Guide passes come from the render: keys at another size cannot use them."""
    drawings = tmp_path / "drawings"
    drawings.mkdir()
    editor = shot.sequence_editor_create()
    shot.render.resolution_x, shot.render.resolution_y = 40, 32
    for frame in (2, 6):
        shot.frame_set(frame)
        shot.render.filepath = str(drawings / f"pose_{frame}.png")
        bpy.ops.render.render(write_still=True)
        editor.strips.new_image(
            f"pose {frame}", str(drawings / f"pose_{frame}.png"), channel=1, frame_start=frame
        ).select = True
    shot.render.resolution_x, shot.render.resolution_y = 64, 48
    shot.framesmith.inbetween_source = "SELECTED_STRIPS"
    shot.framesmith.inbetween_method = "RENDER"
    with pytest.raises(RuntimeError, match=r"render size 64×48 .* keys are 40×32"):
        bpy.ops.framesmith.inbetween()
    assert len(shot.framesmith.jobs) == 0


def test_diffusion_on_the_tiny_models_with_the_chosen_sparsectrl(
    shot: Any,
    prefs: Any,
    tiny_backend: dict[str, Any],
    session_state: ModuleType,
    listing_file: Path,  # the check below changes the model list; put back afterwards
) -> None:
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    (sparsectrl,) = session_state.model_choices().sparsectrls
    props = shot.framesmith
    props.inbetween_method = "DIFFUSION"
    props.sparsectrl_menu = sparsectrl
    assert props.sparsectrl == sparsectrl  # stored by name, as the other model menus
    props.prompt, props.steps, props.seed, props.key_strength = "a glowing cube", 1, 3, 0.5

    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}

    strip = framesmith_strip(shot)
    assert compat.strip_span(strip) == (1, 9)
    folder = Path(bpy.path.abspath(strip.directory))
    assert [e.filename for e in strip.elements] == [f"{f:04d}.png" for f in range(1, 9)]
    for key in KEYS:  # keys untouched, in-betweens generated
        assert np.array_equal(
            rgba(folder / f"{key:04d}.png"), rgba(folder / "keys" / f"{key:04d}.png")
        )
    for frame in BETWEEN:
        made = rgba(folder / f"{frame:04d}.png")
        assert made.shape == (48, 64, 4) and not np.array_equal(made, rgba(folder / "0001.png"))
    assert not (folder / "guides").exists()  # diffusion needs the keys alone

    request = from_json(strip[REQUEST_KEY])
    assert isinstance(request, InbetweenRequest) and request.diffusion is not None
    assert (request.diffusion.prompt, request.diffusion.steps) == ("a glowing cube", 1)
    assert (request.diffusion.sparsectrl, request.diffusion.conditioning_scale) == (sparsectrl, 0.5)

    # the job as the backend keeps it: its own model choices pinned, the take reproducible
    (job,) = props.jobs
    stored = from_job(BackendClient(tiny_backend["connection"]).job(job.job_id))
    assert isinstance(stored, InbetweenRequest) and stored.diffusion is not None
    assert stored.diffusion.checkpoint and stored.diffusion.motion_adapter
    assert stored.diffusion.sparsectrl == sparsectrl
    assert stored.params()["diffusion"] | {"checkpoint": "", "motion_adapter": ""} == (
        request.params()["diffusion"] | {"checkpoint": "", "motion_adapter": ""}
    )


@pytest.fixture
def invoker(addon: ModuleType) -> Iterator[Invoker]:
    made = Invoker()
    yield made
    made.close()


def exr_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.usefixtures("in_process_renders")
def test_interactive_render_assisted_renders_one_frame_per_tick(
    shot: Any, runtime: ModuleType, invoker: Invoker
) -> None:
    """invoke() renders nothing; each tick of the modal handler renders one key (beauty) or one
    frame's guide passes, the scene's settings put back between two ticks; then the strip."""
    shot.framesmith.inbetween_method = "RENDER"
    shot.frame_end = 4  # keys 1 and 4: frames 1–4 need guide passes
    shot.cycles.samples = 2  # the guide passes are rendered at 1, then it is 2 again
    inbetween = invoker("inbetween", "FRAMESMITH_OT_inbetween")
    assert inbetween.call() == {"RUNNING_MODAL"}
    (job,) = shot.framesmith.jobs
    guides = Path(job.folder) / "guides"
    op = inbetween.last
    assert runtime.runner(job.take).ready.wait(30)
    for _ in (1, 4):  # the two keys first
        assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
    assert exr_names(guides / "vector") == []
    for frame in (1, 2, 3, 4):
        assert op.modal(bpy.context, TIMER) == {"PASS_THROUGH"}
        done = [f"{f:04d}.exr" for f in range(1, frame + 1)]
        assert exr_names(guides / "vector") == done == exr_names(guides / "depth")
        assert shot.cycles.samples == 2 and not shot.view_layers[0].use_pass_vector
    assert not runtime.rendering(job.take)
    deadline = time.monotonic() + 60
    while (result := op.modal(bpy.context, TIMER)) == {"PASS_THROUGH"}:
        assert time.monotonic() < deadline, "the modal handler did not end"
        time.sleep(0.02)  # the worker thread's HTTP round trips, with a deadline
    assert result == {"FINISHED"} and job.state == "DONE"
    strip = framesmith_strip(shot)
    assert compat.strip_span(strip) == (1, 5)


def test_in_between_panel_says_what_each_method_needs(shot: Any) -> None:
    draw = sys.modules[f"{ADDON}.panels.draw"]
    props = shot.framesmith
    hints = {
        "FLOW": "from the keys alone",
        "CROSSFADE": "no motion",
        "RENDER": "guide passes for every frame",
        "DIFFUSION": "SparseCtrl, motion module, checkpoint",
    }
    icons = bpy.types.UILayout.bl_rna.functions["label"].parameters["icon"].enum_items.keys()
    assert {icon for _, icon in draw.METHOD_HINTS.values()} <= set(icons)
    for method, words in hints.items():
        props.inbetween_method = method
        shown: list[str] = []
        draw.inbetween(Layout(shown), props)
        assert "prop:inbetween_method" in shown
        assert any(s.startswith("label:") and words in s for s in shown), (method, shown)
        diffusion_settings = {"prop:prompt", "prop:sparsectrl_menu", "prop:key_strength"}
        assert (
            diffusion_settings <= set(shown)
            if method == "DIFFUSION"
            else not (diffusion_settings & set(shown))
        )
