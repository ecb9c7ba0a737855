"""Stills and render passes through Blender's own renderer (whatever engine the scene uses;
guide passes through Cycles at one sample).

Background runs render every frame in one go; interactive runs render one frame per timer tick
(`FrameRenders.step()`), the scene's settings put back after each frame, so Blender answers the
user between two frames.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
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


# Called after each rendered frame with that frame's files, (input pass, frame) → file.
OnFrame = Callable[[dict[tuple[str, int], Path]], None]


def render_stills(
    scene: bpy.types.Scene,
    frames: Iterable[int],
    folder: Path,
    on_frame: Callable[[int, Path], None] | None = None,
    look: str = "FINAL",
    size: Size = None,
) -> dict[int, Path]:
    """Render each frame to folder/<frame>.png (`look`: FINAL or VIEWPORT, at `size`);
    frame → file."""
    folder.mkdir(parents=True, exist_ok=True)
    done: dict[int, Path] = {}
    with _png_output(scene), _framing(scene, look, size):
        for frame in frames:
            done[frame] = _still(scene, frame, folder)
            if on_frame is not None:
                on_frame(frame, done[frame])
    return done


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
    "vector": ("Vector", "OPEN_EXR"),
    "lineart": ("Freestyle", "PNG"),
}
GUIDE_ENGINE = "CYCLES"  # its Vector pass convention is the verified one (test_vector_pass.py)
# Cycles settings for guide passes: depth and motion come from the camera rays' first hits, so
# one sample without bounces or denoising gives them as well as a full render would.
GUIDE_CYCLES = {"samples": 1, "use_denoising": False, "use_adaptive_sampling": False,
                "max_bounces": 0}  # fmt: skip


@contextmanager
def _guide_settings(scene: bpy.types.Scene) -> Iterator[None]:
    """Cheap settings for guide passes (vector, depth), the scene's own put back afterwards."""
    render = scene.render
    cycles = getattr(scene, "cycles", None)
    if cycles is None:
        raise RuntimeError("guide passes are rendered with Cycles: enable the Cycles add-on")
    saved_engine = render.engine
    saved = {name: getattr(cycles, name) for name in GUIDE_CYCLES}
    try:
        render.engine = GUIDE_ENGINE
        for name, value in GUIDE_CYCLES.items():
            setattr(cycles, name, value)
        yield
    finally:
        for name, value in saved.items():
            setattr(cycles, name, value)
        render.engine = saved_engine


WORKBENCH = "BLENDER_WORKBENCH"


Size = tuple[int, int] | None  # pixels to render at; None: the scene's output size


@contextmanager
def _framing(scene: bpy.types.Scene, look: str, size: Size) -> Iterator[None]:
    """`look` VIEWPORT: the Workbench look (Render Properties > Workbench shading: the animatic
    case, a fraction of a second a frame), FINAL: the scene's own engine; `size`: the resolution
    to render at (the engine's working size). Both put back afterwards."""
    render = scene.render
    saved = (render.engine, render.resolution_x, render.resolution_y,
             render.resolution_percentage)  # fmt: skip
    try:
        if look == "VIEWPORT":
            render.engine = WORKBENCH
        if size is not None:
            render.resolution_x, render.resolution_y = size
            render.resolution_percentage = 100
        yield
    finally:
        (render.engine, render.resolution_x, render.resolution_y,
         render.resolution_percentage) = saved  # fmt: skip


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
        "use_motion_blur": render.use_motion_blur,
        "use_pass_z": view_layer.use_pass_z,
        "use_pass_normal": view_layer.use_pass_normal,
        "use_pass_vector": view_layer.use_pass_vector,
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
        if "vector" in passes:
            render.use_motion_blur = False  # Cycles writes no Vector pass with motion blur on
            view_layer.use_pass_vector = True
        if "lineart" in passes:
            render.use_freestyle = True
            view_layer.use_freestyle = True
            freestyle.as_render_pass = True
            undo += _ensure_line_style(freestyle)
        layers = tree.nodes.new("CompositorNodeRLayers")
        nodes.append(layers)
        layers.scene = scene
        layers.layer = view_layer.name
        for name in passes:
            socket, file_format = PASS_SOCKETS[name]
            output, output_input = compat.file_output(tree, f"{folder}/{name}/", file_format)
            nodes.append(output)
            tree.links.new(layers.outputs[socket], output_input)
        yield
    finally:
        for node in nodes:
            tree.nodes.remove(node)
        compat.restore_compositor(scene, compositor_state)
        for step in reversed(undo):
            step()
        render.use_sequencer = saved["use_sequencer"]
        render.use_motion_blur = saved["use_motion_blur"]
        view_layer.use_pass_z = saved["use_pass_z"]
        view_layer.use_pass_normal = saved["use_pass_normal"]
        view_layer.use_pass_vector = saved["use_pass_vector"]
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
    scene: bpy.types.Scene,
    frames: Iterable[int],
    passes: list[str],
    folder: Path,
    guide: bool = False,
    on_frame: OnFrame | None = None,
    look: str = "FINAL",
    size: Size = None,
) -> dict[tuple[str, int], Path]:
    """Render each frame once, writing every asked pass (`guide`: with the cheap guide
    settings, else in the `look`; at `size`); (pass, frame) → file."""
    folder.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, int], Path] = {}
    framing = _framing(scene, "FINAL" if guide else look, size)
    guiding = _guide_settings(scene) if guide else nullcontext()
    with framing, guiding, _pass_output(scene, passes, folder):
        for frame in frames:
            files = _passes(scene, frame, passes, folder)
            done.update(files)
            if on_frame is not None:
                on_frame(files)
    return done


def _passes(
    scene: bpy.types.Scene, frame: int, passes: list[str], folder: Path
) -> dict[tuple[str, int], Path]:
    scene.frame_set(frame)
    bpy.ops.render.render(scene=scene.name)
    return {(name, frame): pass_file(folder / name, frame, name) for name in passes}


def pass_file(folder: Path, frame: int, name: str) -> Path:
    """The file Blender wrote for one pass of `frame`, under our own name `<frame>.<ext>`.

    Blender pads frame numbers its own way (`-002` or `-0002`, by version); any file whose stem is
    this frame's number is taken and renamed.
    """
    ext = "exr" if PASS_SOCKETS[name][1] == "OPEN_EXR" else "png"
    path = folder / f"{frame_file(frame)[:-4]}.{ext}"
    if path.is_file():
        return path
    written = sorted(folder.glob(f"*.{ext}")) if folder.is_dir() else []
    for candidate in written:
        try:
            number = int(candidate.stem)
        except ValueError:
            continue
        if number == frame:
            return candidate.replace(path)
    seen = ", ".join(p.name for p in written[:5]) or "nothing"
    raise RuntimeError(
        f"Blender did not write the {name} pass of frame {frame} (found {seen} in {folder})"
    )


@dataclass(frozen=True)
class RenderBatch:
    """Frames to render into one sub-folder of the take: beauty stills, uploaded as input
    `still_pass` (keys), or else the listed passes of each frame; `guide`: passes that need no
    shading (vector, depth), rendered with the cheap guide settings; `look`: FINAL (the scene's
    engine) or VIEWPORT (Workbench) for shaded renders; `size`: the resolution rendered at
    (None: the scene's)."""

    frames: tuple[int, ...]
    subdir: str
    passes: tuple[str, ...] = ()
    still_pass: str = "keyframe"
    guide: bool = False
    look: str = "FINAL"
    size: Size = None

    @property
    def per_frame(self) -> int:
        """Input files each frame gives."""
        return len(self.passes) or 1

    def render(
        self,
        scene: bpy.types.Scene,
        frames: Iterable[int],
        folder: Path,
        on_frame: OnFrame | None = None,
    ) -> dict[tuple[str, int], Path]:
        """Render `frames` (of this batch) into folder/subdir; (input pass, frame) → file.
        `on_frame` hears each frame's files as soon as they are written."""
        where = folder / self.subdir
        if self.passes:
            passes = list(self.passes)
            return render_passes(
                scene, frames, passes, where, self.guide, on_frame, self.look, self.size
            )
        still = None if on_frame is None else (lambda f, p: on_frame({(self.still_pass, f): p}))
        stills = render_stills(scene, frames, where, still, self.look, self.size)
        return {(self.still_pass, f): p for f, p in stills.items()}

    def to_json(self) -> dict:
        return {"frames": list(self.frames), "subdir": self.subdir, "passes": list(self.passes),
                "still_pass": self.still_pass, "guide": self.guide, "look": self.look,
                "size": list(self.size) if self.size else None}  # fmt: skip

    @classmethod
    def from_json(cls, data: dict) -> RenderBatch:
        return cls(tuple(int(f) for f in data["frames"]), str(data["subdir"]),
                   tuple(data["passes"]), str(data["still_pass"]), bool(data["guide"]),
                   str(data.get("look", "FINAL")),
                   tuple(data["size"]) if data.get("size") else None)  # fmt: skip


def scene_gives_vectors(scene: bpy.types.Scene) -> bool:
    """Whether the scene's own render can write the Vector pass as it is: Cycles (the verified
    convention) without motion blur (Cycles writes no Vector pass with motion blur on)."""
    return scene.render.engine == GUIDE_ENGINE and not scene.render.use_motion_blur


def shot_batches(
    scene: bpy.types.Scene,
    frames: tuple[int, ...],
    passes: tuple[str, ...],
    look: str = "FINAL",
    size: Size = None,
) -> tuple[RenderBatch, ...]:
    """The renders that give `passes` of every frame: one render per frame where the scene's own
    render gives the Vector pass too; otherwise the shaded passes in the scene's render (its
    motion blur kept) and Vector with Depth (exact, and matching each other for occlusion) in a
    second, cheap Cycles guide render. VIEWPORT: the beauty in the Workbench look, every data
    pass (depth, normal, vector, line art) from the cheap Cycles guide render."""
    if look == "VIEWPORT":
        data = tuple(p for p in passes if p != "beauty")
        batches = []
        if "beauty" in passes:
            batches.append(RenderBatch(frames, "passes", ("beauty",), look=look, size=size))
        if data:
            batches.append(RenderBatch(frames, "guides", data, guide=True, size=size))
        return tuple(batches)
    if "vector" not in passes or scene_gives_vectors(scene):
        return (RenderBatch(frames, "passes", passes, size=size),)
    motion = ("vector", "depth") if "depth" in passes else ("vector",)
    shaded = tuple(p for p in passes if p not in motion)
    batches = [RenderBatch(frames, "passes", shaded, size=size)] if shaded else []
    batches.append(RenderBatch(frames, "motion", motion, guide=True, size=size))
    return tuple(batches)


@dataclass
class FrameRenders:
    """The renders a job still needs, batch after batch, into the take `folder`."""

    batches: tuple[RenderBatch, ...]
    folder: Path
    done: int = 0  # frames rendered so far, over all batches
    _files: dict[tuple[str, int], Path] = field(default_factory=dict, repr=False)

    @property
    def total(self) -> int:
        """Frames to render (a frame in two batches counts twice)."""
        return sum(len(b.frames) for b in self.batches)

    @property
    def files_expected(self) -> int:
        """Input files all the renders give."""
        return sum(len(b.frames) * b.per_frame for b in self.batches)

    @property
    def finished(self) -> bool:
        return self.done >= self.total

    def _at(self, index: int) -> tuple[RenderBatch, int]:
        """The batch and frame of the `index`-th render."""
        for batch in self.batches:
            if index < len(batch.frames):
                return batch, batch.frames[index]
            index -= len(batch.frames)
        raise IndexError("no render left")

    @property
    def current_frame(self) -> int:
        """The frame the next step() renders."""
        return self._at(self.done)[1]

    def step(self, scene: bpy.types.Scene) -> dict[tuple[str, int], Path]:
        """Render the next frame alone (settings set up and put back around it); its files."""
        batch, frame = self._at(self.done)
        files = batch.render(scene, (frame,), self.folder)
        self.done += 1
        self._files.update(files)
        return files

    def stop(self) -> None:
        """Nothing runs between two steps in this Blender (ProcessRenders ends its process)."""

    def all(self, scene: bpy.types.Scene) -> dict[tuple[str, int], Path]:
        """Render every remaining frame in one go (background runs); every file so far."""
        skip = self.done
        for batch in self.batches:
            rest = batch.frames[skip:]
            skip = max(0, skip - len(batch.frames))
            if rest:
                self._files.update(batch.render(scene, rest, self.folder))
        self.done = self.total
        return dict(self._files)
