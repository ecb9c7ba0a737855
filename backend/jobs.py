"""The backend's shared vocabulary: what a job is made of and how it fails.

The passes a job reads, the frame numbers it may name, the job itself, the two errors a user
sees and how their messages name fields and lists. Everything else in the backend (vision,
models, the store, the pipelines, the API) builds on this module, which imports nothing of the
backend.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

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


class PipelineError(Exception):
    """A job failure whose message a user can act on (shown as the job's error)."""


class InputError(ValueError):
    """A request or input that cannot be run; becomes a 4xx with this message."""


def shortened_list(items: Sequence[object], limit: int = 10) -> str:
    """The first `limit` items for a message, and how many more: "3, 4, 5 and 7 more"."""
    shown = ", ".join(str(item) for item in items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def validation_text(exc: ValidationError) -> str:
    """A pydantic error as one line naming each field: 'steps: Input should be ...; ...'."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}" for err in exc.errors()
    )


Params = TypeVar("Params", bound=BaseModel)


def validate_params(model: type[Params], raw: Mapping[str, Any], what: str) -> Params:
    """A job's params as `model`; a bad value becomes an InputError naming the field."""
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise InputError(f"Invalid {what} parameters: {validation_text(exc)}.") from exc


@dataclass(frozen=True)
class JobSpec:
    id: str
    kind: str
    width: int
    height: int
    frames: tuple[int, ...]  # output frames, ascending, unique
    keyframes: tuple[int, ...]  # key frames (in-between), ascending, unique; () otherwise
    params: Mapping[str, Any]  # already validated by the pipeline's Params model (as a dict)
