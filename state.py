"""Session state: what this Blender session knows besides the .blend, shared by the properties,
preferences, panels and operators. Drawing reads it here and never waits on the network.

- the backend's status, as the last Start, Stop or Check left it;
- the backend's model listing, kept in a file in the extension's user folder so the model menus
  have it after a restart (`register()` finds the folder on the main thread; the file is read
  on first use);
- the takes watched now (their runners and renders are operators/runtime.py's);
- the backend install running now, if any (operators/install_backend.py runs it);
- the backend's model catalogue and the downloads followed now (operators/downloads.py).

It sits below everything that uses it and imports only the client package.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import bpy

from .client.backend import ModelChoices
from .client.downloads import CatalogueItem, DownloadRunner, DownloadStatus
from .client.installer import Installer
from .client.installer import Message as InstallMessage
from .client.model_list import Listing, ModelList


@dataclass
class BackendStatus:
    busy: bool = False
    ok: bool | None = None  # None: not checked yet
    lines: list[str] = field(default_factory=lambda: ["Not checked yet"])

    def begin(self, title: str) -> None:
        """A call to the backend started; its answer comes later."""
        self.busy = True
        self.lines = [f"{title}..."]

    def end(self, ok: bool, lines: list[str]) -> None:
        self.busy = False
        self.ok = ok
        self.lines = lines or ["(no answer)"]


@dataclass
class InstallRun:
    installer: Installer | None = None  # the install running now
    last: InstallMessage | None = None  # the final message of the last install

    @property
    def running(self) -> bool:
        return self.installer is not None


@dataclass
class Downloads:
    catalogue: tuple[CatalogueItem, ...] = ()  # as the last Check or download left it
    runners: dict[str, DownloadRunner] = field(default_factory=dict)  # followed now, by model
    status: dict[str, DownloadStatus] = field(default_factory=dict)  # the last word, by model

    def running(self, name: str) -> bool:
        return name in self.runners

    def item(self, name: str) -> CatalogueItem | None:
        return next((i for i in self.catalogue if i.name == name), None)


MODELS = ModelList()  # the folder is set by register()
_backend = BackendStatus()
_install = InstallRun()
_downloads = Downloads()
_watched_takes: set[str] = set()


def backend_status() -> BackendStatus:
    return _backend


def listing() -> Listing:
    return MODELS.get()


def model_choices() -> ModelChoices:
    return listing().choices


def remember_models(choices: ModelChoices) -> None:
    """Called from a backend call's thread: swaps the listing in and writes its file (no bpy)."""
    MODELS.remember(choices)


def install() -> InstallRun:
    return _install


def downloads() -> Downloads:
    return _downloads


def remember_catalogue(items: tuple[CatalogueItem, ...] | None) -> None:
    """Called from a backend call's thread: swaps the catalogue in (None: keep the last one)."""
    if items is not None:
        _downloads.catalogue = items


def watching(take: str) -> bool:
    """Whether a runner follows the take in this session."""
    return take in _watched_takes


def set_watched(take: str, watched: bool) -> None:
    """Only the runtime calls this, as it starts and stops following a take."""
    if watched:
        _watched_takes.add(take)
    else:
        _watched_takes.discard(take)


def register() -> None:
    """On the main thread: where the listing's file lives (it is read on first use)."""
    try:
        folder = Path(bpy.utils.extension_path_user(__package__, create=True))
    except (ValueError, OSError):  # not loaded as an extension, or no user folder: memory only
        folder = None
    MODELS.use_folder(folder)


def unregister() -> None:
    """Forget the in-memory listing; the file stays for the next session."""
    MODELS.use_folder(None)
