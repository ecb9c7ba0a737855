"""The model names the backend listed at its last check, kept in a file across restarts.

A check runs on a worker thread and hands its `ModelChoices` to `ModelList.remember()`, which
swaps the in-memory listing and writes it, with the time of the check, as JSON (a temp file
renamed into place: plain file I/O, safe on any thread). The file is read on first use. A
missing or unreadable file gives an empty listing, never an exception. No bpy here: the add-on
tells the list its folder (`state.register()`), tests use a temp folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .backend import STYLIZE_ENGINE, WAN_ENGINE, ModelChoices, engine_working_size

FILE_NAME = "model_list.json"
FORMAT = 1  # bump when the file's meaning changes; a file of another format reads as empty


@dataclass(frozen=True)
class Listing:
    """Installed model names and when the backend gave them (epoch seconds; None: never)."""

    choices: ModelChoices = field(default_factory=ModelChoices)
    checked_at: float | None = None

    def when(self) -> str:
        """The check's local date and time, as the menus show it."""
        if self.checked_at is None:
            return "never"
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(self.checked_at))


class ModelList:
    """The last listing, in memory and in `folder / FILE_NAME` (folder None: memory only)."""

    def __init__(self, folder: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._folder = folder
        self._listing: Listing | None = None  # None: not read from the file yet

    @property
    def path(self) -> Path | None:
        return self._folder / FILE_NAME if self._folder is not None else None

    def use_folder(self, folder: Path | None) -> None:
        """Keep the file in `folder` from now on; the next `get()` reads it (a restart)."""
        with self._lock:
            self._folder, self._listing = folder, None

    def get(self) -> Listing:
        """The last check's listing: from memory, else read from the file once."""
        current = self._listing
        if current is not None:
            return current
        with self._lock:
            if self._listing is None:  # a check may have finished while we waited
                path = self.path
                self._listing = read(path) if path is not None else Listing()
            return self._listing

    def remember(self, found: ModelChoices, now: float | None = None) -> Listing:
        """Keep a check's listing: swap it in, then write the file. Safe on any thread; a file
        that cannot be written leaves this session's menus filled all the same."""
        kept = Listing(found, time.time() if now is None else now)
        with self._lock:
            self._listing = kept
            path = self.path
            if path is not None:
                with contextlib.suppress(OSError):  # the next check writes again
                    write(path, kept)
        return kept


def read(path: Path) -> Listing:
    """A listing written by `write()`; empty when the file is missing or unreadable."""
    try:
        return _from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return Listing()


def write(path: Path, kept: Listing) -> None:
    """Write the listing so that the file is either the old one or the new one, whole."""
    choices = kept.choices
    names = {kind: list(getattr(choices, kind)) for kind in ModelChoices.name_kinds()}
    data = {"format": FORMAT, "checked_at": kept.checked_at, "models": names,
            "working_size": choices.working_size, "wan_working_size": choices.wan_working_size,
            "wan_folder": choices.wan_folder}  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(data, out, indent=1, sort_keys=True)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _from_json(data: Any) -> Listing:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return Listing()
    models = data.get("models")
    if not isinstance(models, dict):
        return Listing()
    values: dict[str, Any] = {}
    for kind in ModelChoices.name_kinds():  # kinds this version does not know are left out
        names = models.get(kind, [])
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return Listing()
        values[kind] = tuple(names)
    sizes = {STYLIZE_ENGINE: data.get("working_size"), WAN_ENGINE: data.get("wan_working_size")}
    engines = {"engines": {e: {"working_size": size} for e, size in sizes.items()}}
    values["working_size"] = engine_working_size(engines, STYLIZE_ENGINE)
    values["wan_working_size"] = engine_working_size(engines, WAN_ENGINE)
    folder = data.get("wan_folder")
    values["wan_folder"] = folder if isinstance(folder, str) else ""
    checked_at = data.get("checked_at")
    if isinstance(checked_at, bool) or not isinstance(checked_at, int | float):
        checked_at = None
    return Listing(ModelChoices(**values), checked_at)
