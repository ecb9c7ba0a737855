"""framesmith.backend_check: version, device and, per pipeline, which models are missing."""

from __future__ import annotations

from typing import ClassVar

import bpy
from bpy.props import EnumProperty

from . import common, runtime


class FRAMESMITH_OT_backend_check(bpy.types.Operator):
    """Ask the backend for its version, device and missing models (does not start it)"""

    bl_idname = "framesmith.backend_check"
    bl_label = "Check Backend"
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
            "Checking the backend",
            common.checking(start=False),
            blocking,
            all_lines=True,
        )


classes = (FRAMESMITH_OT_backend_check,)

register, unregister = bpy.utils.register_classes_factory(classes)
