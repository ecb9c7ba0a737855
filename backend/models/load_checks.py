"""ModelLoadError, and the checks every loader runs right before diffusers sees a path.

The files may have changed since the models folder was scanned: each load looks again (still
there, inside the models folder, safetensors and not a pickle, of the kind asked for).
"""

from __future__ import annotations

from pathlib import Path

from .catalogue import KINDS, ModelKind
from .entries import ModelEntry
from .registry import ModelRegistry
from .safetensors_header import HeaderError, SafetensorsHeader, read_checked_header, sniff_pickle


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says what to do (shown as the job's error)."""


def expect_kind(entry: ModelEntry, kind: ModelKind) -> None:
    if entry.kind != kind:
        raise ModelLoadError(
            f"'{entry.name}' is a {KINDS[entry.kind].label}, not a {KINDS[kind].label}"
        )


def checked_path(entry: ModelEntry, registry: ModelRegistry | None) -> Path:
    """The entry's path once its files pass the checks (inside `registry`'s folder, if given)."""
    path = entry.path
    if not path.exists():
        raise ModelLoadError(
            f"{KINDS[entry.kind].label} '{entry.name}' is no longer at {path}: "
            "it was moved or deleted since the models folder was scanned"
        )
    files = [path] if path.is_file() else sorted(path.rglob("*.safetensors"))
    if registry is not None:
        for item in (path, *files):
            real = item.resolve()
            if not registry.contains(real):
                raise ModelLoadError(
                    f"'{entry.name}': {item.name} resolves outside the models folder"
                )
    for file in files:
        check_safetensors(file, entry)
    return path


def check_safetensors(file: Path, entry: ModelEntry) -> SafetensorsHeader:
    """The header of `file`, which must be safetensors (it may have been replaced since the
    scan, so this looks again)."""
    if sniff_pickle(file):
        raise ModelLoadError(
            f"'{entry.name}': {file.name} is a pickle; Framesmith never loads pickles"
        )
    try:
        return read_checked_header(file)
    except (HeaderError, OSError) as exc:
        raise ModelLoadError(
            f"'{entry.name}': {file.name} is not a valid safetensors file ({exc})"
        ) from None
