"""Where downloads live on disk: staging in the data folder, verified files moved into the
models folder, and the record of what each catalogue entry installed.

    <data>/downloads/staging/<name>/    the download child's partial and verified files
    <data>/downloads/installed/<name>.json   what an entry put in the models folder
    <models>/.incoming-<name>/          an entry's files being moved in (hidden: the models
                                        scan skips names that start with a dot)

An entry whose destination folder does not exist yet appears in one rename, so the registry never
sees half a model; over an existing folder, each file is replaced atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .files import atomic_write
from .models.catalogue import CatalogueEntry
from .models.sidecars import SIDECAR_NAME, single_file_sidecar


@dataclass(frozen=True)
class StagedFile:
    path: str  # in the repo and under the entry's folder (checked by the catalogue)
    digest: str  # names the verified file in staging


@dataclass(frozen=True)
class Layout:
    models: Path
    data: Path

    @property
    def downloads(self) -> Path:
        return self.data / "downloads"

    def staging(self, name: str) -> Path:
        return self.downloads / "staging" / name

    def record(self, name: str) -> Path:
        return self.downloads / "installed" / f"{name}.json"

    def log(self, name: str) -> Path:
        return self.downloads / "logs" / f"{name}.log"

    def incoming(self, name: str) -> Path:
        return self.models / f".incoming-{name}"


def destination(layout: Layout, entry: CatalogueEntry) -> Path:
    return layout.models / entry.destination


def is_installed(layout: Layout, entry: CatalogueEntry) -> bool:
    """Whether the entry's files are in the models folder: as its record lists them (pattern
    entries), else every file the entry names."""
    record = read_record(layout, entry)
    if record is not None:
        return all((layout.models / p).is_file() for p in record)
    paths = [f.path for f in entry.files]
    if any(p is None for p in paths):
        return False  # a pattern entry installed by hand: its files are unknown
    return all((destination(layout, entry) / str(p)).is_file() for p in paths)


def read_record(layout: Layout, entry: CatalogueEntry) -> list[str] | None:
    """The files the entry installed, if its record is there and was written for this entry
    (a catalogue that changed the entry since makes it stale)."""
    try:
        data = json.loads(layout.record(entry.name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("entry") != entry.to_json():
        return None
    files = data.get("files")
    return [str(f) for f in files] if isinstance(files, list) else None


def install(layout: Layout, entry: CatalogueEntry, staged: list[StagedFile]) -> list[str]:
    """Move the verified files into the models folder; their paths relative to it."""
    staging = layout.staging(entry.name) / "verified"
    incoming = layout.incoming(entry.name)
    shutil.rmtree(incoming, ignore_errors=True)
    uses = Counter(f.digest for f in staged)
    for item in staged:
        target = incoming / item.path
        target.parent.mkdir(parents=True, exist_ok=True)
        uses[item.digest] -= 1
        if uses[item.digest]:  # the same bytes under another name too: keep the source
            shutil.copyfile(staging / item.digest, target)
        else:
            shutil.move(staging / item.digest, target)
    write_sidecars(entry, incoming, [f.path for f in staged])
    dest = destination(layout, entry)
    moved = sorted(p.relative_to(incoming).as_posix() for p in incoming.rglob("*") if p.is_file())
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.replace(incoming, dest)
    else:
        for rel in moved:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(incoming / rel, dest / rel)
        shutil.rmtree(incoming, ignore_errors=True)
    installed = [f"{entry.destination}/{rel}" for rel in moved]
    write_record(layout, entry, installed)
    return installed


def write_sidecars(entry: CatalogueEntry, folder: Path, paths: list[str]) -> None:
    """The catalogue knows a ControlNet's type: say it in a sidecar, so the scan need not guess
    from the name (a diffusers folder's framesmith.json, or X.framesmith.json next to X)."""
    if not entry.conditioning:
        return
    declared = json.dumps({"controlnet_type": entry.conditioning}, indent=2).encode()
    if "config.json" in paths:
        atomic_write(folder / SIDECAR_NAME, declared)
        return
    for path in paths:
        if path.lower().endswith(".safetensors"):
            atomic_write(single_file_sidecar(folder / path), declared)


def write_record(layout: Layout, entry: CatalogueEntry, installed: list[str]) -> None:
    record: dict[str, Any] = {"entry": entry.to_json(), "files": installed}
    path = layout.record(entry.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(record, indent=2).encode())


def discard(layout: Layout, name: str) -> None:
    """Forget a download's staged bytes and anything half moved in (cancel, or after install)."""
    shutil.rmtree(layout.staging(name), ignore_errors=True)
    shutil.rmtree(layout.incoming(name), ignore_errors=True)
