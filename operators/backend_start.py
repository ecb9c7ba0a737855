"""framesmith.backend_start: start the local backend (or find the one already running)."""

from __future__ import annotations

from typing import ClassVar

import bpy
from bpy.props import EnumProperty

from ..client.backend import check, connect
from . import common, runtime


class FRAMESMITH_OT_backend_start(bpy.types.Operator):
    """Start the local backend with the Python chosen in the preferences"""

    bl_idname = "framesmith.backend_start"
    bl_label = "Start Backend"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        return common.backend_action(
            self,
            context,
            "Starting the backend",
            lambda config: lambda: check(connect(config, start=True)),
            runtime.should_wait(self.wait),
        )


classes = (FRAMESMITH_OT_backend_start,)

register, unregister = bpy.utils.register_classes_factory(classes)
