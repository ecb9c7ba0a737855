"""Pipelines by job kind. Each is imported lazily: a broken optional dependency of one pipeline
must not take the server down, it only makes that pipeline unavailable (and says why)."""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass

from .base import Pipeline

log = logging.getLogger("framesmith.pipelines")

_MODULES: dict[str, tuple[str, str]] = {
    "inbetween": ("backend.pipelines.inbetween", "InbetweenPipeline"),
    "stylize": ("backend.pipelines.stylize", "StylizePipeline"),
}


@dataclass(frozen=True)
class Loaded:
    pipeline: Pipeline | None
    error: str | None


_cache: dict[str, Loaded] = {}


def kinds() -> tuple[str, ...]:
    return tuple(_MODULES)


def load(kind: str) -> Loaded:
    if kind not in _MODULES:
        return Loaded(None, f"unknown job kind {kind!r}; known kinds: {', '.join(_MODULES)}")
    if kind not in _cache:
        module_name, class_name = _MODULES[kind]
        try:
            module = importlib.import_module(module_name)
            _cache[kind] = Loaded(getattr(module, class_name)(), None)
        except Exception as exc:  # an unavailable pipeline is reported, not fatal
            log.warning("pipeline %s is unavailable: %s", kind, exc)
            _cache[kind] = Loaded(None, f"the {kind} pipeline could not be loaded: {exc}")
    return _cache[kind]


def get(kind: str) -> Pipeline:
    loaded = load(kind)
    if loaded.pipeline is None:
        raise LookupError(loaded.error)
    return loaded.pipeline
