"""Framesmith: stylize renders and in-between keyframes with an out-of-process backend.

Only register() and unregister() live here. The submodules are imported inside them, not at
import time: test runners import this file as a plain package outside Blender, where bpy is
missing.
"""

from __future__ import annotations


def _modules() -> tuple:
    from . import operators, panels, preferences, properties, state

    # Registration order: the session state, preferences and properties before the operators
    # and panels using them.
    return (state, preferences, properties, operators, panels)


def register() -> None:
    for module in _modules():
        module.register()


def unregister() -> None:
    for module in reversed(_modules()):
        module.unregister()
