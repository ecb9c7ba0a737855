"""What a model declares about itself: framesmith.json sidecars and safetensors metadata.

A diffusers folder may hold `framesmith.json`; a single file `<name>.framesmith.json` next to
it, or the same JSON as text under the "framesmith" key of its safetensors metadata. All are
read defensively: a hostile or broken file reads as "declares nothing".
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .entries import strip_safetensors

SIDECAR_NAME = "framesmith.json"
SIDECAR_SUFFIX = ".framesmith.json"
METADATA_KEY = "framesmith"
MAX_JSON_BYTES = 4 * 1024 * 1024


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from a small file, or None (missing, too large, not an object, hostile)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_JSON_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # hostile JSON: deep nesting, huge numbers
        return None
    return data if isinstance(data, dict) else None


def read_sidecar(path: Path) -> dict[str, Any]:
    return read_json(path) or {}


def single_file_sidecar(path: Path) -> Path:
    """Where the sidecar of the single file `path` (X.safetensors → X.framesmith.json) lives."""
    return path.with_name(strip_safetensors(path.name) + SIDECAR_SUFFIX)


def metadata_declaration(metadata: Mapping[str, str]) -> dict[str, Any]:
    """The sidecar schema ({"controlnet_type": ..., "config": ...}) stored as JSON text in the
    safetensors metadata key "framesmith" (one key: safetensors writes metadata in hash order)."""
    try:
        value = json.loads(metadata.get(METADATA_KEY, "{}"))
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}
