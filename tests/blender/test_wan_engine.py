"""The Wan2.1-VACE engine in the add-on, in headless Blender against a real backend on the tiny
models (make-tiny-models writes a tiny Wan2.1-VACE in the real diffusers layout): the Engine
menus in Stylize and in the diffusion in-between options, the model menu and the hint naming the
folder when none is installed, the working size per engine, and whole takes (a stylize from the
depth pass, an in-between held on its keys and following cheap depth guides).

The shot (conftest.py): a glowing cube sliding left to right, keys at 1, 4 and 7, 64×48.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import numpy as np

import compat
from client.http import BackendClient
from client.request import InbetweenRequest, StylizeRequest, from_job, from_json
from tests.blender.support import ADDON
from tests.blender.test_inbetween_methods import BETWEEN, KEYS, framesmith_strip, rgba
from tests.blender.test_ui import Layout

WAN_MODEL = "wan/tiny-wan2.1-vace"


def drawn(props: Any, panel: str) -> list[str]:
    draw = sys.modules[f"{ADDON}.panels.draw"]
    shown: list[str] = []
    getattr(draw, panel)(Layout(shown), props)
    return shown


def test_the_engine_menus_show_each_engines_options_and_where_wan_goes(
    shot: Any, prefs: Any, backend: dict[str, Any], listing_file: Path
) -> None:
    props = shot.framesmith
    shown = drawn(props, "stylize")
    assert "prop:stylize_engine" in shown
    assert {"prop:stylize_mode", "prop:checkpoint_menu"} <= set(shown)
    assert not {"prop:vace_control", "prop:wan_vace_menu"} & set(shown)
    props.stylize_engine = "WAN_VACE"
    shown = drawn(props, "stylize")
    assert {"prop:vace_control", "prop:vace_conditioning_scale", "prop:wan_vace_menu"} <= set(shown)
    assert not {"prop:stylize_mode", "prop:checkpoint_menu", "prop:ip_adapter_scale",
                "prop:temporal_fusion"} & set(shown)  # fmt: skip

    # the backend of this test has no models: the hint names its folder for Wan models
    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    hint = " ".join(shown for shown in drawn(props, "stylize") if shown.startswith("label:"))
    assert "No Wan2.1-VACE model installed" in hint
    assert f"{Path(backend['models']).resolve()}/wan/" in hint, hint

    props.inbetween_method = "DIFFUSION"
    shown = drawn(props, "inbetween")
    assert "prop:inbetween_engine" in shown and "prop:sparsectrl_menu" in shown
    assert "prop:inbetween_control" not in shown
    props.inbetween_engine = "WAN_VACE"
    shown = drawn(props, "inbetween")
    assert {"prop:inbetween_control", "prop:vace_conditioning_scale", "prop:wan_vace_menu"} <= set(
        shown
    )
    assert "prop:sparsectrl_menu" not in shown and "label:Needs a Wan2.1-VACE model" in shown


def test_each_engine_renders_at_its_own_working_size(
    shot: Any, addon: ModuleType, session_state: ModuleType, listing_file: Path
) -> None:
    stylize = sys.modules[f"{ADDON}.operators.stylize"]
    choices = type(session_state.model_choices())(working_size=512, wan_working_size=480)
    session_state.remember_models(choices)
    props = shot.framesmith
    props.working_size = 0  # the engine's own
    assert stylize.stylize_size(shot) == (680, 512)  # 64×48 at AnimateDiff's 512
    props.stylize_engine = "WAN_VACE"
    assert stylize.stylize_size(shot) == (640, 480)  # at Wan2.1-VACE's 480
    props.working_size = 24  # the user's word wins over both
    assert stylize.stylize_size(shot) == (32, 24)


def test_stylize_on_wan_picked_in_the_menu(
    shot: Any, prefs: Any, tiny_backend: dict[str, Any], session_state: ModuleType,
    listing_file: Path,
) -> None:  # fmt: skip
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    assert session_state.model_choices().wan_vaces == (WAN_MODEL,)
    props = shot.framesmith
    props.stylize_engine = "WAN_VACE"
    props.wan_vace_menu = WAN_MODEL
    assert props.wan_vace == WAN_MODEL  # stored by name, as the other model menus
    assert not any(s.startswith("label:No Wan") for s in drawn(props, "stylize"))
    props.vace_control, props.vace_conditioning_scale = "DEPTH", 0.7
    props.prompt, props.steps, props.seed = "a watercolour cube", 2, 3
    shot.frame_end = 6

    assert bpy.ops.framesmith.stylize() == {"FINISHED"}

    (job,) = props.jobs
    assert job.state == "DONE", job.message
    strip = framesmith_strip(shot)
    assert compat.strip_span(strip) == (1, 7)
    folder = Path(bpy.path.abspath(strip.directory))
    assert all(rgba(folder / e.filename).shape == (48, 64, 4) for e in strip.elements)
    assert sorted(p.name for p in (folder / "passes").iterdir()) == ["depth"]  # the control only
    request = from_json(strip["framesmith_request"])
    assert isinstance(request, StylizeRequest) and request.uses_wan
    assert request.vace is not None
    assert (request.vace.control, request.vace.conditioning_scale) == ("depth", 0.7)
    backend_job = BackendClient(tiny_backend["connection"]).job(job.job_id)
    assert backend_job["params"]["engine"] == "wan_vace"
    assert backend_job["params"]["vace"]["model"] == WAN_MODEL
    assert backend_job["params"]["vace"]["run_size"] == [32, 32]  # the tiny model's area
    again = from_job(backend_job)
    assert isinstance(again, StylizeRequest) and again.params() == request.params()


def test_a_wan_in_between_keeps_the_keys_and_follows_depth_guides(
    shot: Any, prefs: Any, tiny_backend: dict[str, Any], listing_file: Path
) -> None:
    prefs.data_dir = str(tiny_backend["data"])
    prefs.models_dir = str(tiny_backend["models"])
    props = shot.framesmith
    props.inbetween_method = "DIFFUSION"
    props.inbetween_engine = "WAN_VACE"
    props.inbetween_control = "DEPTH"
    props.prompt, props.steps, props.seed = "a glowing cube", 2, 3

    assert bpy.ops.framesmith.inbetween() == {"FINISHED"}

    (job,) = props.jobs
    assert job.state == "DONE", job.message
    strip = framesmith_strip(shot)
    assert compat.strip_span(strip) == (1, 9)
    folder = Path(bpy.path.abspath(strip.directory))
    for key in KEYS:  # keys untouched, in-betweens generated
        assert np.array_equal(
            rgba(folder / f"{key:04d}.png"), rgba(folder / "keys" / f"{key:04d}.png")
        )
    for frame in BETWEEN:
        made = rgba(folder / f"{frame:04d}.png")
        assert made.shape == (48, 64, 4) and not np.array_equal(made, rgba(folder / "0001.png"))
    # the cheap depth guide of every frame from the first key to the last went up
    assert sorted(p.name for p in (folder / "guides" / "depth").iterdir()) == [
        f"{f:04d}.exr" for f in range(1, 8)
    ]
    request = from_json(strip["framesmith_request"])
    assert isinstance(request, InbetweenRequest) and request.diffusion is not None
    assert (request.diffusion.engine, request.diffusion.control) == ("wan_vace", "depth")
    stored = from_job(BackendClient(tiny_backend["connection"]).job(job.job_id))
    assert isinstance(stored, InbetweenRequest) and stored.diffusion is not None
    assert stored.diffusion.wan_vace == WAN_MODEL and stored.inputs() == request.inputs()
