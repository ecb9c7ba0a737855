"""Sidebar panels (Stylize, In-between, Jobs, Backend) in the 3D View and in the Sequencer."""

from __future__ import annotations

import bpy

from . import draw

CATEGORY = "Framesmith"


class _Sidebar:
    bl_region_type = "UI"
    bl_category = CATEGORY

    @classmethod
    def poll(cls, context: bpy.types.Context) -> bool:
        return context.scene is not None


class _Stylize(_Sidebar):
    bl_label = "Stylize"

    def draw(self, context: bpy.types.Context) -> None:
        draw.stylize(self.layout, context.scene.framesmith)


class _Inbetween(_Sidebar):
    bl_label = "In-between"

    def draw(self, context: bpy.types.Context) -> None:
        draw.inbetween(self.layout, context.scene.framesmith)


class _Jobs(_Sidebar):
    bl_label = "Jobs"

    def draw(self, context: bpy.types.Context) -> None:
        draw.jobs(self.layout, context.scene.framesmith)


class _Backend(_Sidebar):
    bl_label = "Backend"

    def draw(self, context: bpy.types.Context) -> None:
        draw.backend(self.layout, context)


class FRAMESMITH_PT_view3d_stylize(_Stylize, bpy.types.Panel):
    bl_space_type = "VIEW_3D"


class FRAMESMITH_PT_view3d_inbetween(_Inbetween, bpy.types.Panel):
    bl_space_type = "VIEW_3D"


class FRAMESMITH_PT_view3d_jobs(_Jobs, bpy.types.Panel):
    bl_space_type = "VIEW_3D"


class FRAMESMITH_PT_view3d_backend(_Backend, bpy.types.Panel):
    bl_space_type = "VIEW_3D"


class FRAMESMITH_PT_sequencer_stylize(_Stylize, bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"


class FRAMESMITH_PT_sequencer_inbetween(_Inbetween, bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"


class FRAMESMITH_PT_sequencer_jobs(_Jobs, bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"


class FRAMESMITH_PT_sequencer_backend(_Backend, bpy.types.Panel):
    bl_space_type = "SEQUENCE_EDITOR"


classes = (
    FRAMESMITH_PT_view3d_stylize,
    FRAMESMITH_PT_view3d_inbetween,
    FRAMESMITH_PT_view3d_jobs,
    FRAMESMITH_PT_view3d_backend,
    FRAMESMITH_PT_sequencer_stylize,
    FRAMESMITH_PT_sequencer_inbetween,
    FRAMESMITH_PT_sequencer_jobs,
    FRAMESMITH_PT_sequencer_backend,
)

register, unregister = bpy.utils.register_classes_factory(classes)
