"""The one small interface between the worker and a pipeline.

A pipeline turns a job's inputs into output frames, one chunk at a time. The worker owns the
queue, persistence, resume and cancel; a pipeline only computes. A chunk is the unit of work
(and, later, of distribution): the worker skips every chunk whose frames are all finished, so
a resumed job continues from its first missing frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from pydantic import BaseModel

from ..jobs import FrameRanges, JobSpec, Pass

# What to do about running out of GPU memory, for a pipeline (or job) without advice of its own.
GENERIC_OOM_ADVICE = (
    "lower the resolution or the number of frames, or close other programs that use the GPU, "
    "and run the job again."
)


class Canceled(Exception):
    """Raised by RunContext.check_cancel() when the job was canceled."""


@dataclass(frozen=True)
class Chunk:
    index: int
    frames: tuple[int, ...]  # frames whose outputs this chunk writes
    context: tuple[int, ...]  # frames it reads (a superset of frames: overlap with neighbours)


class RunContext(Protocol):
    """What a pipeline may use while it runs a chunk."""

    job: JobSpec
    device: str  # "cpu", "cuda", "cuda:1", ...
    # 0 = as asked; the worker raises it after a chunk ran out of GPU memory, up to the
    # pipeline's memory_levels - 1 (see ShrinksOnOutOfMemory), and keeps it for the job's later
    # chunks. Whatever a level switches on in models kept loaded is put back when the chunk
    # ends: the next job starts at level 0.
    memory_level: int

    @property
    def models(self) -> Any:  # backend.models.registry.ModelRegistry
        ...

    def has_input(self, pass_: Pass, frame: int) -> bool: ...

    def input(self, pass_: Pass, frame: int) -> np.ndarray:
        """Decoded input: float32 HxWxC. Colour passes in 0..1 (sRGB as stored), float passes raw."""

    def finished_output(self, frame: int) -> np.ndarray | None:
        """An already written output frame (uint8 HxWxC), e.g. to blend a chunk's overlap."""

    def write_output(self, frame: int, image: np.ndarray) -> None:
        """Persist one output frame atomically: uint8 HxWx3 (RGB) or HxWx4 (RGBA)."""

    def progress(self, stage: str, done: int, total: int) -> None: ...

    def check_cancel(self) -> None:
        """Raise Canceled if the job was canceled. Call at least once per step / frame."""


class Pipeline(Protocol):
    kind: str  # "stylize", "inbetween"

    def params_model(self) -> type[BaseModel]:
        """The pydantic model that validates the job's params (unknown fields refused)."""

    def check_job(self, job: JobSpec) -> None:
        """Raise InputError for a job this pipeline cannot run (wrong frames, sizes, ...)."""

    def required_inputs(self, job: JobSpec) -> dict[Pass, tuple[int, ...] | FrameRanges]:
        """Inputs that must be uploaded before the job may start (FrameRanges where a range of
        frames between keys is meant: never a materialised key-to-key range)."""

    def accepted_inputs(self, job: JobSpec) -> dict[Pass, tuple[int, ...] | FrameRanges]:
        """Every input that may be uploaded (required ones included)."""

    def missing_models(self, job: JobSpec, models: Any) -> list[str]:
        """Human-readable lines naming what must be installed to run this job; [] if ready."""

    def pin_models(self, job: JobSpec, models: Any) -> dict[str, Any]:
        """The job's params with every default model replaced by the installed model's name, so
        the stored request says exactly what ran. Called at start, once missing_models is []."""

    def plan(self, job: JobSpec) -> list[Chunk]:
        """Cut the job into chunks; deterministic for a given job, so resume finds the same cut."""

    def run_chunk(self, ctx: RunContext, chunk: Chunk) -> None:
        """Compute the chunk and write every frame in chunk.frames through ctx.write_output."""


class ExplainsInputs(Protocol):
    """Optional for a Pipeline: why each required input is needed, so that a start refused
    for missing inputs names the setting that would do without them."""

    def input_reasons(self, job: JobSpec) -> dict[Pass, str]:
        """Per required pass (any may be left out), a clause to follow the pass's frames:
        'which temporal_fusion follows (...): upload them, or set temporal_fusion to false'."""


def input_reasons(pipeline: Any, job: JobSpec) -> dict[str, str]:
    """ExplainsInputs.input_reasons by pass name; {} for a pipeline without it."""
    explain = getattr(pipeline, "input_reasons", None)
    return {p.value: why for p, why in explain(job).items()} if explain is not None else {}


class ShrinksOnOutOfMemory(Protocol):
    """Optional for a Pipeline: how it copes with running out of GPU memory.

    The worker runs a chunk that ran out of memory again at the next memory level
    (ctx.memory_level), where the pipeline uses less (smaller batches, slicing, ...); past the
    last level it fails the job with the pipeline's advice. A pipeline without these gets one
    try and a generic message.
    """

    memory_levels: int  # how many levels, the first included (1 = no smaller way to run)

    def out_of_memory_advice(self, job: JobSpec) -> str:
        """What the user can lower, in a sentence: 'lower the resolution (now 512×512), ...'."""


class ShrinksPerJob(Protocol):
    """Optional instead of memory_levels: a pipeline whose jobs differ in their levels (the
    in-between pipeline: only its diffusion method has smaller ways to run)."""

    def memory_levels_for(self, job: JobSpec) -> int: ...

    def out_of_memory_advice(self, job: JobSpec) -> str: ...


class WithScratch(Protocol):
    """Optional for a RunContext: a private folder for the job's temporary files (never beside
    its outputs), removed when the job's run ends. Pipelines fall back to a temporary folder of
    the system's own where a context has none."""

    def scratch_dir(self) -> Path: ...
