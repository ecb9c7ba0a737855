"""In-between methods by name: one object per method makes the frames of one chunk.

InbetweenPipeline does what every method shares (checking keys and frames, one chunk per key
interval, the worker interface) and hands each chunk to the method the job names. Adding a
method, a learned interpolator say, is a class with the `Method` interface, its name in
InbetweenParams.method and one line in METHODS; the worker and the pipeline stay as they are.

Methods are imported on first use: a method with heavy (torch) or broken dependencies costs the
others nothing, and a job that never names it never imports it.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any, Protocol

from ..jobs import JobSpec
from .base import Chunk, RunContext
from .inbetween_params import InbetweenParams

# method name -> "module:attribute" of a class whose instances run that method.
METHODS: dict[str, str] = {
    "flow": "backend.pipelines.inbetween_image:ImageMethod",
    "crossfade": "backend.pipelines.inbetween_image:ImageMethod",
    "render": "backend.pipelines.inbetween_image:ImageMethod",
    # SparseCtrl or Wan2.1-VACE, by params.diffusion.engine
    "diffusion": "backend.pipelines.inbetween_engines:DiffusionEngines",
}


class Method(Protocol):
    """One way of making in-betweens. `params` is the job's validated InbetweenParams."""

    def check_job(self, job: JobSpec, params: InbetweenParams) -> None:
        """Raise InputError for a job this method cannot run (after the pipeline's checks)."""

    def missing_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> list[str]:
        """Sentences naming what to install, and where; [] when ready (or no models needed)."""

    def pin_models(self, job: JobSpec, params: InbetweenParams, models: Any) -> dict[str, Any]:
        """The job's params with default models replaced by the installed models' names."""

    def run_chunk(self, ctx: RunContext, chunk: Chunk, params: InbetweenParams) -> None:
        """Write every frame in chunk.frames; chunk.context holds the interval's two keys."""


_loaded: dict[str, Method] = {}
_lock = threading.Lock()


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def get(name: str) -> Method:
    """The method called `name` (LookupError naming the known ones for any other name)."""
    with _lock:
        if name not in _loaded:
            if name not in METHODS:
                raise LookupError(
                    f"unknown in-between method {name!r}; known methods: {', '.join(METHODS)}"
                )
            module_name, _, attribute = METHODS[name].partition(":")
            module = importlib.import_module(module_name)
            _loaded[name] = getattr(module, attribute)()
        return _loaded[name]
