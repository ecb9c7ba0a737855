"""UI only: sidebar panels in the 3D View and the Sequencer, and the Jobs list."""

from __future__ import annotations

from . import jobs_list, sidebar

_modules = (jobs_list, sidebar)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    for module in reversed(_modules):
        module.unregister()
