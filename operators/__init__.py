"""Operators: one module per user action. bpy work on the main thread; the network on a runner's
thread (see runtime)."""

from __future__ import annotations

from . import (
    backend_check,
    backend_start,
    backend_stop,
    cancel,
    downloads,
    inbetween,
    install_backend,
    open_folder,
    reattach,
    reimport,
    runtime,
    stylize,
)

_modules = (
    runtime,
    stylize,
    inbetween,
    cancel,
    reimport,
    backend_start,
    backend_stop,
    backend_check,
    open_folder,
    reattach,
    install_backend,
    downloads,
)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
