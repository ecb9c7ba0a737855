"""Calling the add-on's operators the way Blender's UI does, headless.

The bpy module has one window but no event loop: `bpy.ops.x('INVOKE_DEFAULT')` runs `execute()`
(there is no event to invoke with) and modal handlers never receive events. So each operator is
registered once more under `framesmith_test.<name>` — a twin class with the same bases, methods
and properties, whose `execute()` calls the real `invoke()` on the real operator instance Blender
made and keeps that instance: the test then feeds the real `modal()` the events Blender would
send (a timer tick, Esc). (A twin, not a subclass: unregistering a subclass of a registered
operator unlinks the original's Python class.)
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import bpy

from tests.blender.support import ADDON

TIMER = SimpleNamespace(type="TIMER", value="NOTHING")
ESC = SimpleNamespace(type="ESC", value="PRESS")
MOUSEMOVE = SimpleNamespace(type="MOUSEMOVE", value="NOTHING")


@dataclass
class Invoked:
    """One operator reachable through its invoke() path."""

    call: Any  # bpy.ops.framesmith_test.<name>
    instances: list[Any] = field(default_factory=list)  # operator instances invoke() ran on
    seconds: list[float] = field(default_factory=list)  # how long each invoke() took

    @property
    def last(self) -> Any:
        return self.instances[-1]


class Invoker:
    def __init__(self) -> None:
        self._registered: list[type] = []

    def __call__(self, module: str, class_name: str) -> Invoked:
        base = getattr(sys.modules[f"{ADDON}.operators.{module}"], class_name)
        invoked = Invoked(call=None)

        def execute(self: Any, context: Any) -> set[str]:
            invoked.instances.append(self)
            started = time.perf_counter()
            try:
                return self.invoke(context, None)
            finally:
                invoked.seconds.append(time.perf_counter() - started)

        name = class_name.split("_OT_")[-1]
        namespace = {
            key: value
            for key, value in vars(base).items()
            if key not in ("bl_rna", "__dict__", "__weakref__")
        }
        namespace.update(bl_idname=f"framesmith_test.{name}", execute=execute)
        cls = type(f"FRAMESMITH_TEST_OT_{name}", base.__bases__, namespace)
        bpy.utils.register_class(cls)
        self._registered.append(cls)
        invoked.call = getattr(bpy.ops.framesmith_test, name)
        return invoked

    def close(self) -> None:
        for cls in reversed(self._registered):
            bpy.utils.unregister_class(cls)
        self._registered.clear()
