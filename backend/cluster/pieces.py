"""A job's plan cut into pieces for the cluster, and which piece waits for which.

A piece is a chunk of the pipeline's plan, or one frame of a per_frame stylize chunk (those
frames share one seed and never read each other, so where they are cut changes no pixel).
Pieces that read no frame another piece writes run in parallel: in-between key intervals
(each reads its two keys, which are inputs), per_frame frames, and stylize chunks without
overlap. A stylize chunk that blends into the frames its predecessor wrote (AnimateDiff and
Wan windows holding their seam) waits for that predecessor.

The rules sit here, beside the worker, because the pipelines do not say which of their chunks
depend on each other; a pipeline-level hook would be the better home for them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..jobs import JobSpec
from ..pipelines.base import Chunk


class Dependence(enum.Enum):
    INDEPENDENT = "independent"  # every chunk on its own
    SINGLE_FRAMES = "single_frames"  # every frame on its own: chunks are cut into frames
    SEAMED = "seamed"  # a chunk whose context reaches into earlier frames waits for them
    SERIAL = "serial"  # a kind these rules do not know: one chunk after another, as ever


@dataclass(frozen=True)
class Piece:
    index: int  # position in the job's list of pieces
    chunk: Chunk
    after: int | None  # the piece that must have finished before this one starts


def dependence(job: JobSpec) -> Dependence:
    if job.kind == "inbetween":
        return Dependence.INDEPENDENT
    if job.kind == "stylize":
        # the params were validated when the job was made; parsing them is cheap (no torch)
        from ..pipelines.stylize_params import parse_params

        params = parse_params(job.params)
        if params.engine == "animatediff" and not params.uses_motion:
            return Dependence.SINGLE_FRAMES
        return Dependence.SEAMED
    return Dependence.SERIAL


def plan_pieces(job: JobSpec, chunks: list[Chunk]) -> list[Piece]:
    rule = dependence(job)
    if rule is Dependence.SINGLE_FRAMES:
        single = [Chunk(c.index, (f,), (f,)) for c in chunks for f in c.frames]
        return [Piece(i, chunk, None) for i, chunk in enumerate(single)]
    pieces: list[Piece] = []
    for i, chunk in enumerate(chunks):
        waits = i > 0 and (
            rule is Dependence.SERIAL
            or (rule is Dependence.SEAMED and _reads_earlier_frames(chunk))
        )
        pieces.append(Piece(i, chunk, i - 1 if waits else None))
    return pieces


def _reads_earlier_frames(chunk: Chunk) -> bool:
    """Its context holds frames before the ones it writes: those its predecessor wrote."""
    return bool(chunk.frames) and any(f < chunk.frames[0] for f in chunk.context)
