"""Stills and render passes through Blender's own renderer (whatever engine the scene uses).

Background runs render every frame in one go; interactive runs render one frame per timer tick
(`FrameRenders.step()`), the scene's settings put back after each frame, so Blender answers the
user between two frames.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import bpy

from .. import compat
from ..client.frames import frame_file


@contextmanager
def _png_output(scene: bpy.types.Scene) -> Iterator[None]:
    """8-bit PNG output (RGBA with a transparent film), the scene's own settings restored after.

    The sequencer is switched off: its strips (our own results among them) would otherwise
    replace the 3D render.
    """
    render = scene.render
    image = render.image_settings
    saved = (
        scene.frame_current,
        render.filepath,
        render.use_file_extension,
        render.use_sequencer,
        image.file_format,
        image.color_mode,
        image.color_depth,
    )
    try:
        render.use_sequencer = False
        image.file_format = "PNG"
        image.color_mode = "RGBA" if render.film_transparent else "RGB"
        image.color_depth = "8"
        render.use_file_extension = True
        yield
    finally:
        frame, render.filepath, render.use_file_extension, render.use_sequencer = saved[:4]
        image.file_format, image.color_mode, image.color_depth = saved[4:]
        scene.frame_set(frame)


def render_stills(scene: bpy.types.Scene, frames: Iterable[int], folder: Path) -> dict[int, Path]:
    """Render each frame to folder/<frame>.png; frame → file."""
    folder.mkdir(parents=True, exist_ok=True)
    with _png_output(scene):
        return {frame: _still(scene, frame, folder) for frame in frames}


def _still(scene: bpy.types.Scene, frame: int, folder: Path) -> Path:
    scene.frame_set(frame)
    path = folder / frame_file(frame)
    scene.render.filepath = str(path)
    bpy.ops.render.render(write_still=True, scene=scene.name)
    if not path.is_file():
        raise RuntimeError(f"Blender did not write the render of frame {frame} to {path}")
    return path


def output_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """The rendered size: resolution scaled by its percentage, as Blender computes it."""
    render = scene.render
    scale = render.resolution_percentage / 100.0
    return int(render.resolution_x * scale), int(render.resolution_y * scale)


# Render pass → (Render Layers socket, file format). Float passes go to EXR: PNG would clip them.
PASS_SOCKETS = {
    "beauty": ("Image", "PNG"),
    "depth": ("Depth", "OPEN_EXR"),
    "normal": ("Normal", "OPEN_EXR"),
    "lineart": ("Freestyle", "PNG"),
}


@contextmanager
def _pass_output(scene: bpy.types.Scene, passes: list[str], folder: Path) -> Iterator[None]:
    """Enable the asked passes and add a File Output node writing folder/<pass>/<frame>.<ext>;
    everything is put back as it was afterwards."""
    render = scene.render
    view_layer = scene.view_layers[0]
    freestyle = view_layer.freestyle_settings
    saved = {
        "frame": scene.frame_current,
        "use_sequencer": render.use_sequencer,
        "use_pass_z": view_layer.use_pass_z,
        "use_pass_normal": view_layer.use_pass_normal,
        "use_freestyle": render.use_freestyle,
        "layer_freestyle": view_layer.use_freestyle,
        "as_render_pass": freestyle.as_render_pass,
    }
    undo: list = []
    nodes: list = []
    tree, compositor_state = compat.compositor_tree(scene)
    try:
        render.use_sequencer = False
        view_layer.use_pass_z = view_layer.use_pass_z or "depth" in passes
        view_layer.use_pass_normal = view_layer.use_pass_normal or "normal" in passes
        if "lineart" in passes:
            render.use_freestyle = True
            view_layer.use_freestyle = True
            freestyle.as_render_pass = True
            undo += _ensure_line_style(freestyle)
        layers = tree.nodes.new("CompositorNodeRLayers")
        nodes.append(layers)
        layers.scene = scene
        layers.layer = view_layer.name
        output = compat.file_output_node(tree, str(folder) + "/", passes)
        nodes.append(output)
        for index, name in enumerate(passes):
            socket, file_format = PASS_SOCKETS[name]
            compat.set_slot_format(output, index, file_format)
            tree.links.new(layers.outputs[socket], output.inputs[index])
        yield
    finally:
        for node in nodes:
            tree.nodes.remove(node)
        compat.restore_compositor(scene, compositor_state)
        for step in reversed(undo):
            step()
        render.use_sequencer = saved["use_sequencer"]
        view_layer.use_pass_z = saved["use_pass_z"]
        view_layer.use_pass_normal = saved["use_pass_normal"]
        render.use_freestyle = saved["use_freestyle"]
        view_layer.use_freestyle = saved["layer_freestyle"]
        freestyle.as_render_pass = saved["as_render_pass"]
        scene.frame_set(saved["frame"])


def _ensure_line_style(freestyle) -> list:
    """A line set with a line style (an empty file has neither); returns undo callables."""
    undo = []
    if not freestyle.linesets:
        lineset = freestyle.linesets.new("Framesmith")
        undo.append(lambda: freestyle.linesets.remove(lineset))
    for lineset in freestyle.linesets:
        if lineset.linestyle is None:
            style = bpy.data.linestyles.new("Framesmith")
            lineset.linestyle = style
            undo.append(lambda style=style: bpy.data.linestyles.remove(style))
    return undo


def render_passes(
    scene: bpy.types.Scene, frames: Iterable[int], passes: list[str], folder: Path
) -> dict[tuple[str, int], Path]:
    """Render each frame once, writing every asked pass; (pass, frame) → file."""
    folder.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, int], Path] = {}
    with _pass_output(scene, passes, folder):
        for frame in frames:
            done.update(_passes(scene, frame, passes, folder))
    return done


def _passes(
    scene: bpy.types.Scene, frame: int, passes: list[str], folder: Path
) -> dict[tuple[str, int], Path]:
    scene.frame_set(frame)
    bpy.ops.render.render(scene=scene.name)
    done = {}
    for name in passes:
        ext = "exr" if PASS_SOCKETS[name][1] == "OPEN_EXR" else "png"
        path = folder / name / f"{frame_file(frame)[:-4]}.{ext}"
        if not path.is_file():
            raise RuntimeError(f"Blender did not write the {name} pass of frame {frame}")
        done[(name, frame)] = path
    return done


@dataclass
class FrameRenders:
    """The renders a job still needs: beauty stills named as `still_pass` inputs (keys), or the
    listed `passes` of each frame. Files land in `folder`; (input pass, frame) → file."""

    frames: tuple[int, ...]
    folder: Path
    passes: tuple[str, ...] = ()
    still_pass: str = "keyframe"
    done: int = 0  # frames rendered so far
    _files: dict[tuple[str, int], Path] = field(default_factory=dict, repr=False)

    @property
    def per_frame(self) -> int:
        """Input files each frame gives."""
        return len(self.passes) or 1

    @property
    def finished(self) -> bool:
        return self.done >= len(self.frames)

    def step(self, scene: bpy.types.Scene) -> dict[tuple[str, int], Path]:
        """Render the next frame alone (settings set up and put back around it); its files."""
        frame = self.frames[self.done]
        self.folder.mkdir(parents=True, exist_ok=True)
        if self.passes:
            with _pass_output(scene, list(self.passes), self.folder):
                files = _passes(scene, frame, list(self.passes), self.folder)
        else:
            with _png_output(scene):
                files = {(self.still_pass, frame): _still(scene, frame, self.folder)}
        self.done += 1
        self._files.update(files)
        return files

    def all(self, scene: bpy.types.Scene) -> dict[tuple[str, int], Path]:
        """Render every remaining frame in one go (background runs); every file so far."""
        rest = self.frames[self.done :]
        if self.passes:
            self._files.update(render_passes(scene, rest, list(self.passes), self.folder))
        else:
            stills = render_stills(scene, rest, self.folder)
            self._files.update({(self.still_pass, f): p for f, p in stills.items()})
        self.done = len(self.frames)
        return dict(self._files)
