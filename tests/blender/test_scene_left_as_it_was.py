"""A pass render puts the user's scene back exactly as it was, on every Blender version tested:
compositor (4.x node tree, 5.0–5.2 node group, 5.3 compositor effects), output settings,
passes, Freestyle, engine and frame; and it writes one file per pass and frame under our own
names whatever Blender's defaults (5.x: multilayer EXR, `####` numbering)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import bpy
import pytest

from tests.blender.support import ADDON, scene_snapshot

PASSES = ["beauty", "depth", "normal", "vector", "lineart"]


@pytest.fixture
def render(addon: ModuleType) -> ModuleType:
    return sys.modules[f"{ADDON}.operators.render"]


def user_compositor(scene: Any) -> None:
    """A compositor of the user's own: a node group with a Blur between render and output."""
    if hasattr(scene, "compositor_effects"):  # 5.3+
        group = bpy.data.node_groups.new("User Comp", "CompositorNodeTree")
        effect = scene.compositor_effects.new("User Effect")
        effect.node_group = group
    elif hasattr(scene, "compositing_node_group"):  # 5.0–5.2
        group = bpy.data.node_groups.new("User Comp", "CompositorNodeTree")
        scene.compositing_node_group = group
    else:
        scene.use_nodes = True
        group = scene.node_tree
    group.nodes.new("CompositorNodeBlur")


@pytest.mark.parametrize("with_user_compositor", [False, True])
def test_pass_render_leaves_the_scene_as_it_was(
    shot: Any, render: ModuleType, tmp_path: Path, with_user_compositor: bool
) -> None:
    if with_user_compositor:
        user_compositor(shot)
    shot.frame_set(5)
    before = scene_snapshot(shot)
    files = render.render_passes(shot, [2, 3], PASSES, tmp_path / "p")
    assert scene_snapshot(shot) == before
    assert sorted(files) == sorted((p, f) for p in PASSES for f in (2, 3))
    for (name, frame), path in files.items():
        ext = "exr" if name in ("depth", "normal", "vector") else "png"
        assert path == tmp_path / "p" / name / f"{frame:04d}.{ext}" and path.stat().st_size > 0
    # one file per pass and frame, no multilayer leftovers
    assert sorted(p.name for p in (tmp_path / "p").rglob("*") if p.is_file()) == sorted(
        p.name for p in files.values()
    )


def test_guide_render_and_stills_leave_the_scene_as_it_was(
    shot: Any, render: ModuleType, tmp_path: Path
) -> None:
    shot.render.engine = "BLENDER_WORKBENCH"
    shot.render.use_motion_blur = True
    before = scene_snapshot(shot)
    render.render_passes(shot, [1], ["vector", "depth"], tmp_path / "g", guide=True)
    render.render_stills(shot, [1, 2], tmp_path / "s")
    assert scene_snapshot(shot) == before


def test_a_pass_file_under_another_padding_is_found_and_renamed(
    render: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "-002.exr").write_bytes(b"x")
    found = render.pass_file(tmp_path, -2, "depth")
    assert found == tmp_path / "-0002.exr" and found.read_bytes() == b"x"
    with pytest.raises(RuntimeError, match="did not write the depth pass of frame 7"):
        render.pass_file(tmp_path, 7, "depth")


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def test_viewport_look_at_a_working_size_renders_workbench_beauty_and_cycles_data(
    shot: Any, render: ModuleType, tmp_path: Path, renders_seen: list[str]
) -> None:
    """VIEWPORT: the beauty through Workbench, every data pass from the Cycles guide render,
    all at the asked size; the scene's engine and resolution come back."""
    passes = ("beauty", "depth", "lineart", "vector")
    batches = render.shot_batches(shot, (1, 2), passes, look="VIEWPORT", size=(96, 72))
    before = scene_snapshot(shot)
    files = {}
    for batch in batches:
        files.update(batch.render(shot, batch.frames, tmp_path))
    assert scene_snapshot(shot) == before
    assert sorted(files) == sorted((p, f) for p in passes for f in (1, 2))
    assert png_size(files[("beauty", 1)]) == png_size(files[("lineart", 2)]) == (96, 72)
    assert renders_seen == ["BLENDER_WORKBENCH"] * 2 + ["CYCLES"] * 2


@pytest.fixture
def renders_seen() -> Any:
    """The engine of each render this Blender runs."""
    seen: list[str] = []

    def heard(scene: Any, *_: Any) -> None:
        seen.append(scene.render.engine)

    bpy.app.handlers.render_pre.append(heard)
    yield seen
    bpy.app.handlers.render_pre.remove(heard)
