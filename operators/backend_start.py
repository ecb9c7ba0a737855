"""framesmith.backend_start: start the local backend (or find the one already running)."""

from __future__ import annotations

from typing import ClassVar

import bpy
from bpy.props import EnumProperty

from . import common, runtime


class FRAMESMITH_OT_backend_start(bpy.types.Operator):
    """Start the local backend with the Python chosen in the preferences"""

    bl_idname = "framesmith.backend_start"
    bl_label = "Start Backend"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        return self._act(context, runtime.should_wait(self.wait))

    def invoke(self, context: bpy.types.Context, event: bpy.types.Event | None) -> set[str]:
        return self._act(context, self.wait == "WAIT")

    def _act(self, context: bpy.types.Context, blocking: bool) -> set[str]:
        return common.backend_action(
            self,
            context,
            "Starting the backend",
            common.checking(start=True),
            blocking,
        )


classes = (FRAMESMITH_OT_backend_start,)

register, unregister = bpy.utils.register_classes_factory(classes)
