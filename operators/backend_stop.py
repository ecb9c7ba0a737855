"""framesmith.backend_stop: stop the local backend (its jobs resume when it starts again)."""

from __future__ import annotations

from typing import ClassVar

import bpy
from bpy.props import EnumProperty

from ..client.backend import BackendConfig, BackendMode, stop_local
from . import common


class FRAMESMITH_OT_backend_stop(bpy.types.Operator):
    """Stop the local backend; unfinished jobs resume from their last frame when it restarts"""

    bl_idname = "framesmith.backend_stop"
    bl_label = "Stop Backend"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        def make_call(config: BackendConfig):
            if config.mode is BackendMode.REMOTE:
                raise common.UserError("a remote backend is stopped on its own machine")

            def stop() -> list[str]:
                stopped = stop_local(config)
                return ["Backend stopped" if stopped else "No local backend was running"]

            return stop

        return common.backend_action(self, context, "Stopping the backend", make_call, True)


classes = (FRAMESMITH_OT_backend_stop,)

register, unregister = bpy.utils.register_classes_factory(classes)
