"""The config skeletons shipped in backend/models/configs/: the architectures single files load with.

A single safetensors file holds weights only; diffusers needs the model's configs beside it, and
would fetch them from the hub without `config=`. These folders are those configs, shipped.
"""

from __future__ import annotations

from pathlib import Path

from .catalogue import ModelKind
from .classify import folder_kind
from .entries import Refused
from .load_checks import ModelLoadError
from .sidecars import read_json

SKELETONS_DIR = Path(__file__).resolve().parent / "configs"


def available_skeletons(kind: ModelKind | None = None) -> list[str]:
    """Names of the config skeletons shipped in backend/models/configs/ (of one kind)."""
    if not SKELETONS_DIR.is_dir():
        return []
    names = []
    for folder in sorted(p for p in SKELETONS_DIR.iterdir() if p.is_dir()):
        if kind is None or _skeleton_kind(folder) == kind:
            names.append(folder.name)
    return names


def skeleton_dir(name: str) -> Path:
    """A config skeleton shipped in backend/models/configs/ (never a path from outside it)."""
    path = (SKELETONS_DIR / name).resolve()
    if "/" in name or "\\" in name or path.parent != SKELETONS_DIR or not path.is_dir():
        shipped = ", ".join(available_skeletons())
        raise ModelLoadError(f"unknown config skeleton {name!r} (shipped: {shipped})")
    return path


def _skeleton_kind(folder: Path) -> ModelKind | None:
    if (folder / "model_index.json").is_file():
        return ModelKind.CHECKPOINT
    try:
        return folder_kind(read_json(folder / "config.json") or {})
    except Refused:
        return None
