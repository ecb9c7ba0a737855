"""The request and answer bodies of the job routes, and the limits they are held to."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..store import JobState

MAX_FRAMES = 100_000
MAX_SIDE = 8192
# A job lists at most this many missing frames per pass by number (missing_inputs); all of them
# as ranges (missing_input_ranges, up to MAX_LISTED_RANGES) and their count.
MAX_LISTED_MISSING = 1000
MAX_LISTED_RANGES = 1000


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="stylize or inbetween")
    frames: list[int] = Field(min_length=1, max_length=MAX_FRAMES, description="output frames")
    width: int = Field(ge=8, le=MAX_SIDE)
    height: int = Field(ge=8, le=MAX_SIDE)
    params: dict[str, Any] = Field(default_factory=dict)
    keyframes: list[int] = Field(default_factory=list, max_length=MAX_FRAMES)


class JobCheck(BaseModel):
    ok: bool = Field(description="true when a job created with this body could start")
    problems: list[str] = Field(description="one sentence per reason it could not, for a person")


class ProgressOut(BaseModel):
    stage: str
    done: int
    total: int
    chunk: int
    chunks: int
    fraction: float


class JobOut(BaseModel):
    id: str
    kind: str
    state: JobState
    progress: ProgressOut
    error: str | None
    finished_frames: list[int]
    frames: list[int]
    keyframes: list[int]
    width: int
    height: int
    params: dict[str, Any]
    missing_inputs: dict[str, list[int]] = Field(
        description=f"per pass, the first {MAX_LISTED_MISSING} frames still to upload"
    )
    missing_input_ranges: dict[str, list[tuple[int, int]]] = Field(
        default_factory=dict,
        description="per pass, the frames still to upload as inclusive [first, last] ranges"
        f" (the first {MAX_LISTED_RANGES} ranges)",
    )
    missing_input_counts: dict[str, int] = Field(
        default_factory=dict, description="per pass, how many frames are still to upload"
    )
    cancel_requested: bool
    created_at: float
    updated_at: float
