"""What travels between the head and a worker. Plain dataclasses: Ray pickles them."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jobs import JobSpec
from ..pipelines.base import Chunk


@dataclass(frozen=True)
class WorkerSetup:
    """How the head asks a worker to start."""

    slot: str  # "w0", "w1", ...: the head's name for the worker
    device: str  # "auto", "cpu", "cuda", ...: resolved by the worker on its own machine
    threads: int  # CPU threads it may use (torch, OpenCV)
    models_dir: Path  # the models folder, at the same path on every machine
    extra_models: tuple[Path, ...]  # --extra-models folders, read-only, the same way
    reader: Any  # the InputReader actor on the head's node: uploaded inputs come from there


@dataclass(frozen=True)
class WorkerInfo:
    """What a started worker says about itself (GET /v1/health names it)."""

    pid: int
    node: str  # the node's IP address
    device: str  # described: "cpu", "cuda:0 (NVIDIA H100, 80 GiB)"


@dataclass(frozen=True)
class PieceOrder:
    """One piece of one job. inputs: (pass, frame) to the uploaded file, relative to the head's
    jobs folder (the worker fetches only what the pipeline reads, through the InputReader);
    finished: PNG bytes of the frames already written that the piece may read (its own, on a
    retry, and the earlier frames its context holds)."""

    job: JobSpec
    chunk: Chunk
    inputs: dict[tuple[str, int], str]
    finished: dict[int, bytes] = field(default_factory=dict)
    memory_level: int = 0


@dataclass(frozen=True)
class FrameDone:
    frame: int
    png: bytes


@dataclass(frozen=True)
class ProgressNote:
    stage: str
    done: int
    total: int


class Outcome(enum.Enum):
    DONE = "done"
    CANCELED = "canceled"
    FAILED = "failed"  # the job fails with `error`, a sentence for the user (PipelineError, ...)
    ERROR = "error"  # an unexpected exception: the job fails; `error` holds the traceback


@dataclass(frozen=True)
class PieceEnd:
    outcome: Outcome
    error: str | None = None
    memory_level: int = 0  # the level the piece ended at: later pieces of the job start there


Message = FrameDone | ProgressNote | PieceEnd
