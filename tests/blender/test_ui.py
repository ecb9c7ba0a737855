"""Panels and preferences draw from properties and runtime state alone (no network), in both
sidebars; the backend buttons start, check and stop a local backend."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

from client.launcher import read_ready
from tests.blender.support import ADDON


class Layout:
    """Stands in for bpy.types.UILayout (headless, there is no region to draw in): records
    what would be shown."""

    def __init__(self, shown: list[str]) -> None:
        self.shown = shown
        self.use_property_split = False
        self.enabled = self.active = True

    def _child(self, *_args: object, **_kw: object) -> Layout:
        return Layout(self.shown)

    row = column = box = split = _child

    def prop(self, data: Any, name: str, **_kw: object) -> None:
        assert hasattr(data, name), f"{data} has no property {name!r}"
        self.shown.append(f"prop:{name}")

    def label(self, text: str = "", **_kw: object) -> None:
        self.shown.append(f"label:{text}")

    def operator(self, idname: str, **_kw: object) -> Any:
        category, name = idname.split(".")
        assert hasattr(getattr(bpy.ops, category), name), idname
        self.shown.append(f"op:{idname}")
        return type("OperatorProperties", (), {})()

    def progress(self, factor: float = 0.0, text: str = "", **_kw: object) -> None:
        self.shown.append(f"progress:{factor:.2f}:{text}")

    def template_list(self, list_type: str, *_args: object, **_kw: object) -> None:
        assert hasattr(bpy.types, list_type), list_type
        self.shown.append(f"list:{list_type}")

    def template_ID(self, data: Any, name: str, new: str = "", open: str = "", **_kw: object):
        assert hasattr(data, name), f"{data} has no property {name!r}"
        for idname in filter(None, (new, open)):
            category, op = idname.split(".")
            assert hasattr(getattr(bpy.ops, category), op), idname
        self.shown.append(f"id:{name}")


def test_panels_in_both_sidebars(addon: ModuleType) -> None:
    for space in ("view3d", "sequencer"):
        for panel in ("stylize", "inbetween", "jobs", "backend"):
            cls = getattr(bpy.types, f"FRAMESMITH_PT_{space}_{panel}")
            assert cls.bl_region_type == "UI" and cls.bl_category == "Framesmith"


@pytest.fixture
def no_listing(addon: ModuleType, tmp_path: Path) -> Iterator[None]:
    """No model listing (as before the first check ever): the listing is read from an empty
    folder, whatever earlier tests checked; the session's own folder is used again after."""
    models = sys.modules[f"{ADDON}.state"].MODELS
    folder = models.path.parent if models.path is not None else None
    models.use_folder(tmp_path / "no-listing")
    yield
    models.use_folder(folder)


def test_panels_draw_settings_jobs_and_status(
    shot: Any, addon: ModuleType, no_listing: None
) -> None:
    draw = sys.modules[f"{ADDON}.panels.draw"]
    props = shot.framesmith
    job = props.jobs.add()
    job.take, job.kind, job.state, job.progress, job.stage = (
        "abc",
        "INBETWEEN",
        "RUNNING",
        0.25,
        "x",
    )
    shown: list[str] = []
    draw.stylize(Layout(shown), props)
    draw.inbetween(Layout(shown), props)
    draw.jobs(Layout(shown), props)
    draw.backend(Layout(shown), bpy.context)
    for expected in (
        "op:framesmith.stylize",
        "op:framesmith.inbetween",
        "prop:prompt",
        "prop:checkpoint_menu",
        "label:Check the backend to list its models",
        "prop:inbetween_source",
        "list:FRAMESMITH_UL_jobs",
        "progress:0.25:Running x",
        "op:framesmith.cancel",
        "op:framesmith.backend_check",
    ):
        assert expected in shown, (expected, shown)


def test_preferences_draw(prefs: Any) -> None:
    shown: list[str] = []

    class Drawn:
        layout = Layout(shown)

        def __getattr__(self, name: str) -> Any:
            return getattr(prefs, name)

    for mode in ("LOCAL", "REMOTE"):
        prefs.backend_mode = mode
        type(prefs).draw(Drawn(), bpy.context)
    assert "prop:python_path" in shown and "prop:token" in shown


def test_backend_buttons_start_check_and_stop(prefs: Any, tmp_path: Path) -> None:
    session_state = sys.modules[f"{ADDON}.state"]
    prefs.data_dir = str(tmp_path / "data")
    assert bpy.ops.framesmith.backend_start() == {"FINISHED"}
    ready = read_ready(tmp_path / "data")
    assert ready is not None
    lines = session_state.backend_status().lines
    assert lines[0].startswith("Backend ") and "inbetween: ready for flow" in " ".join(lines)

    assert bpy.ops.framesmith.backend_check() == {"FINISHED"}
    assert session_state.backend_status().ok is True

    assert bpy.ops.framesmith.backend_stop() == {"FINISHED"}
    os.waitpid(int(ready["pid"]), 0)
    assert session_state.backend_status().lines == ["Backend stopped"]
    try:
        bpy.ops.framesmith.backend_check()
    except RuntimeError as exc:
        assert "no local backend is running" in str(exc)
    else:
        raise AssertionError("checking a stopped backend must fail")
    assert session_state.backend_status().ok is False


def test_stylize_panel_offers_a_style_reference_image(shot: Any, addon: ModuleType) -> None:
    draw = sys.modules[f"{ADDON}.panels.draw"]
    props = shot.framesmith
    shown: list[str] = []
    draw.stylize(Layout(shown), props)
    assert {"prop:use_reference", "id:reference_image", "prop:ip_adapter_scale"} <= set(shown)
    assert "prop:ip_adapter_menu" not in shown  # its models only once it is used
    props.use_reference = True
    shown.clear()
    draw.stylize(Layout(shown), props)
    assert {"prop:ip_adapter_menu", "prop:image_encoder_menu"} <= set(shown)
    props.use_reference = False
