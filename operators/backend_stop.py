"""framesmith.backend_stop: stop the local backend (its jobs resume when it starts again)."""

from __future__ import annotations

from typing import ClassVar

import bpy
from bpy.props import EnumProperty

from ..client.backend import BackendMode, stop_local
from . import common, runtime


class FRAMESMITH_OT_backend_stop(bpy.types.Operator):
    """Stop the local backend; unfinished jobs resume from their last frame when it restarts"""

    bl_idname = "framesmith.backend_stop"
    bl_label = "Stop Backend"
    bl_options: ClassVar[set[str]] = {"REGISTER"}

    wait: EnumProperty(name="Wait", items=common.WAIT_ITEMS, options={"SKIP_SAVE"})

    def execute(self, context: bpy.types.Context) -> set[str]:
        try:
            config = common.backend(context)
        except common.UserError as exc:
            self.report({"ERROR"}, f"Framesmith: {exc}")
            return {"CANCELLED"}
        if config.mode is BackendMode.REMOTE:
            self.report({"ERROR"}, "Framesmith: a remote backend is stopped on its own machine")
            return {"CANCELLED"}

        def stop() -> list[str]:
            stopped = stop_local(config)
            return ["Backend stopped" if stopped else "No local backend was running"]

        ok, lines = runtime.backend_call("Stopping the backend", stop, True)
        self.report({"INFO"} if ok else {"ERROR"}, f"Framesmith: {lines[0]}")
        return {"FINISHED"} if ok else {"CANCELLED"}


classes = (FRAMESMITH_OT_backend_stop,)

register, unregister = bpy.utils.register_classes_factory(classes)
