"""The one small interface between the worker and a pipeline.

A pipeline turns a job's inputs into output frames, one chunk at a time. The worker owns the
queue, persistence, resume and cancel; a pipeline only computes. A chunk is the unit of work
(and, later, of distribution): the worker skips every chunk whose frames are all finished, so
a resumed job continues from its first missing frame.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError


class Pass(enum.StrEnum):
    BEAUTY = "beauty"
    DEPTH = "depth"
    NORMAL = "normal"
    VECTOR = "vector"
    LINEART = "lineart"
    KEYFRAME = "keyframe"
    REFERENCE = "reference"  # a style reference image: one per job, at REFERENCE_FRAME


# Blender's own frame range (MINAFRAME .. MAXFRAME): no scene has a frame outside it, so neither
# does a job, an upload or an output.
MAX_FRAME = 1_048_574


def frame_range_error(frame: int, what: str = "frame") -> str | None:
    """None for a frame number Blender can have; otherwise why not, in a sentence."""
    if -MAX_FRAME <= frame <= MAX_FRAME:
        return None
    # str() of a huge int is refused past 4300 digits: describe it by its size instead
    shown = str(frame) if abs(frame) < 10**12 else f"of about {frame.bit_length() * 3 // 10} digits"
    return (
        f"{what} {shown} is outside Blender's frame range ({-MAX_FRAME} to {MAX_FRAME});"
        " use frame numbers of the scene"
    )


@dataclass(frozen=True)
class FrameRanges:
    """A set of frame numbers kept as sorted, disjoint, inclusive (first, last) spans: the
    frames from one key to a key a million frames later cost two numbers, not a million.
    Iterating yields the frames one by one, so it stands in for a tuple of frames."""

    spans: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, frames: Iterable[int] | FrameRanges) -> FrameRanges:
        """From frame numbers (materialised already, so bounded by their caller)."""
        if isinstance(frames, FrameRanges):
            return frames
        return cls.from_spans((f, f) for f in frames)

    @classmethod
    def from_spans(cls, spans: Iterable[tuple[int, int]]) -> FrameRanges:
        merged: list[tuple[int, int]] = []
        for first, last in sorted(s for s in spans if s[0] <= s[1]):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return cls(tuple(merged))

    def __contains__(self, frame: object) -> bool:
        if not isinstance(frame, int):
            return False
        i = bisect.bisect_right(self.spans, (frame, float("inf"))) - 1
        return i >= 0 and self.spans[i][0] <= frame <= self.spans[i][1]

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self.spans)

    def __iter__(self) -> Iterator[int]:
        for first, last in self.spans:
            yield from range(first, last + 1)

    def __bool__(self) -> bool:
        return bool(self.spans)

    def union(self, other: Iterable[int] | FrameRanges) -> FrameRanges:
        return FrameRanges.from_spans((*self.spans, *FrameRanges.of(other).spans))

    def without(self, frames: Iterable[int]) -> FrameRanges:
        """These frames less `frames` (a materialised collection, e.g. the uploaded ones)."""
        holes = sorted({f for f in frames if f in self})
        out: list[tuple[int, int]] = []
        h = 0
        for first, last in self.spans:
            start = first
            while h < len(holes) and holes[h] <= last:
                if holes[h] > start:
                    out.append((start, holes[h] - 1))
                start = holes[h] + 1
                h += 1
            if start <= last:
                out.append((start, last))
        return FrameRanges(tuple(out))


# A job's reference image is not a frame of the shot: it is uploaded as this frame number, and
# may have any size (the other passes must have the job's).
REFERENCE_FRAME = 0
ANY_SIZE_PASSES = frozenset({Pass.REFERENCE})


class Canceled(Exception):
    """Raised by RunContext.check_cancel() when the job was canceled."""


class PipelineError(Exception):
    """A job failure whose message a user can act on (shown as the job's error)."""


class InputError(ValueError):
    """A request or input that cannot be run; becomes a 4xx with this message."""


P = TypeVar("P", bound=BaseModel)


def validation_text(exc: ValidationError) -> str:
    """A pydantic error as one line naming each field: 'steps: Input should be ...; ...'."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}" for err in exc.errors()
    )


def parse_params(model: type[P], raw: Mapping[str, Any], what: str) -> P:
    """Validate a job's params; a bad value becomes an InputError naming the field."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise InputError(f"Invalid {what} parameters: {validation_text(exc)}.") from exc


LATENT_MULTIPLE = 8  # the SD VAE downsamples by 8: diffusion sizes are multiples of it


def latent_size_error(width: int, height: int) -> str | None:
    """None for a size the VAE takes; otherwise the sizes to use instead, in words."""
    if width % LATENT_MULTIPLE == 0 and height % LATENT_MULTIPLE == 0:
        return None

    def near(v: int) -> str:
        low = max(LATENT_MULTIPLE, v - v % LATENT_MULTIPLE)
        return f"{low} or {low + LATENT_MULTIPLE}" if low != v else str(v)

    return (
        f"{width}×{height} is not a multiple of {LATENT_MULTIPLE} (use a width of {near(width)}"
        f" and a height of {near(height)})"
    )


@dataclass(frozen=True)
class JobSpec:
    id: str
    kind: str
    width: int
    height: int
    frames: tuple[int, ...]  # output frames, ascending, unique
    keyframes: tuple[int, ...]  # key frames (in-between), ascending, unique; () otherwise
    params: Mapping[str, Any]  # already validated by the pipeline's Params model (as a dict)


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
    # pipeline's memory_levels - 1 (see ShrinksOnOutOfMemory), and keeps it for later chunks.
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
