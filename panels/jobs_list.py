"""The Jobs list: one row per take, with its state and progress."""

from __future__ import annotations

import bpy

from .draw import STATE_ICONS


class FRAMESMITH_UL_jobs(bpy.types.UIList):
    def draw_item(
        self, context, layout, data, item, icon, active_data, active_propname, index=0
    ) -> None:
        row = layout.row(align=True)
        kind_icon = "BRUSH_DATA" if item.kind == "STYLIZE" else "IPO_EASE_IN_OUT"
        row.label(text=f"{item.kind.title()} {item.take[:6]}", icon=kind_icon)
        if item.state in ("RUNNING", "QUEUED", "AWAITING_INPUTS", "SUBMITTING"):
            row.progress(factor=item.progress, text=item.state.title())
        else:
            row.label(text=item.state.title(), icon=STATE_ICONS.get(item.state, "BLANK1"))


classes = (FRAMESMITH_UL_jobs,)

register, unregister = bpy.utils.register_classes_factory(classes)
