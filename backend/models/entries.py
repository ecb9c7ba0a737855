"""What a scan of the models folder finds: installed models, refused files, and their names."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .catalogue import ModelKind


class Refused(Exception):
    """A file or folder the scan will not list; the message says why, for the person."""


@dataclass(frozen=True)
class ModelEntry:
    name: str  # path relative to the models folder, posix, without ".safetensors"
    kind: ModelKind
    path: Path  # resolved, inside the models folder
    layout: Literal["diffusers", "single_file"]
    controlnet_type: str | None  # ControlNet / SparseCtrl conditioning ("depth", "rgb", ...)
    size_bytes: int
    variant: str | None = None  # diffusers weight variant ("fp16") when only that one exists
    config: str | None = None  # single files: the shipped config skeleton to load them with

    def to_json(self, root: Path) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind.value,
            "path": relative_path(self.path, root),
            "layout": self.layout,
            "controlnet_type": self.controlnet_type,
            "size_bytes": self.size_bytes,
            "variant": self.variant,
        }

    def short_names(self) -> tuple[str, str]:
        """The names a person may call it by: its relative name and its last part."""
        return self.name, self.name.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class RefusedFile:
    path: Path  # as found under the models folder (not resolved)
    reason: str


@dataclass(frozen=True)
class Inventory:
    """One scan of a models folder: what is installed and what was refused, sorted."""

    root: Path
    entries: tuple[ModelEntry, ...] = ()
    refused: tuple[RefusedFile, ...] = ()

    def of_kind(self, kind: ModelKind) -> list[ModelEntry]:
        return [e for e in self.entries if e.kind == kind]


def strip_safetensors(name: str) -> str:
    return name[: -len(".safetensors")] if name.lower().endswith(".safetensors") else name


def relative_path(path: Path, root: Path) -> str:
    """`path` relative to `root` in posix form, or the whole path when it is not under it."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def fingerprint(entry: ModelEntry) -> tuple[Any, ...]:
    """Changes when the model's files change on disk (replaced, re-downloaded)."""
    files = [entry.path] if entry.path.is_file() else sorted(entry.path.rglob("*.safetensors"))
    stats = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue
        stats.append((str(file), st.st_size, st.st_mtime_ns))
    return (entry.kind.value, str(entry.path), tuple(stats))
